"""PEFT's own MetaMathQA `run.py` against peftbench's `math` task, on the same model, data and settings.

    .venv/bin/python benchmarks/bench_peft_side_by_side.py --peft-dir ../peft-ref/MetaMathQA [--models own-pad ...]

PEFT's scripts (method_comparison/MetaMathQA: run.py, data.py, utils.py, default_training_params.json) are
not part of this repository; --peft-dir names a folder holding them (see benchmarks/math-faithful.md for the
versions used). Both sides train the PEFT suite's `lora/llama-3.2-3B-rank32` adapter config on each of six
tiny models made from the shipped one (--models; they differ in what PEFT's scripts depend on: pad token, BOS and
EOS, padding side, chat template, generation_config):
- own-pad: the shipped tiny model (its tokenizer declares its own <pad>, adds BOS, has no chat template);
- no-pad: a copy whose tokenizer declares no pad token (as Llama-3.2's);
- chat-sampling: a copy with a chat template, a post-processor that adds BOS and appends EOS, left padding as the
  tokenizer's default side, its own <pad>, and a generation_config.json that asks for sampling (do_sample,
  temperature 0.6, top_p 0.9, as Meta's Llama 3 files do);
- sampling: chat-sampling without the appended EOS (BOS only, as the shipped tokenizer);
- cold-sampling, near-greedy-sampling: the shipped model with a generation_config that samples at temperature
  0.2 or 0.01 (top_p 0.9).
with the math-tiny rows exported to the suite's schemas:
- MetaMathQA (`query`, `response`, `type`, `original_question`): the first --train-rows math-tiny train rows;
- GSM8K (`question`, `answer`): math-tiny valid rows as the "train" split (the valid sample is drawn from it,
  as the suite does) and the first --test-rows math-tiny test rows as "test";
- finewiki (`text`): the first 100 math-tiny forgetting texts.

PEFT's run.py only knows hub ids and CUDA/XPU. `peft-shim` runs it unchanged, in this process, after these
patches (nothing in its training, evaluation or timing code is touched):
1. `data.load_dataset` maps the three hub ids to the exported local files (same splits, same columns);
2. `peft.utils.infer_device` answers "cuda" while utils.py is imported (its import-time CUDA check), and
   utils.device is "cpu" afterwards; torch.cpu gets zero-returning stand-ins for the memory counters the
   script reads (memory_allocated, memory_reserved, max_memory_reserved, reset_peak_memory_stats,
   empty_cache, manual_seed_all, get_device_name): memory is not compared here;
3. `bitsandbytes` (imported for its version string only) is a stub module when not installed;
4. `get_peft_branch` answers "side-by-side" (peft is installed from a wheel, not a git checkout): results
   go to the suite's temporary_results/ folder; the hub look-ups (model and dataset info) return None;
5. the stored run.py calls utils.get_model without `use_gc`, which the stored utils.py requires: the shim
   passes the config's value (false);
6. `utils.get_tokenizer` is PEFT @5d602fd's (PEFT_5D602FD_GET_TOKENIZER below): the stored utils.py predates it
   and sets the pad token only when the tokenizer has none, where 5d602fd always pads with EOS on the right.

Each repeat starts PEFT's and peftbench's process at the same time (so both see the same load), each with
--threads threads, and times each whole process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# the suite's adapter config, from the folder of PEFT's published MetaMathQA results shared beside the repository
SUITE_EXPERIMENT = Path("peft-method-comparison") / "MetaMathQA" / "experiments" / "lora" / "llama-3.2-3B-rank32"
EXPERIMENT = ("lora", "rank32-tiny")
PEFT_SCRIPTS = ("run.py", "data.py", "utils.py", "default_training_params.json")
HUB_IDS = {"meta-math/MetaMathQA": "metamath", "openai/gsm8k": "gsm8k", "HuggingFaceFW/finewiki": "finewiki"}


def shared_params(model_id: str, max_steps: int, seed: int) -> dict:
    """The training parameters both sides get (the suite's keys; the rest stay at the suite's defaults)."""
    return {
        "model_id": model_id, "seed": seed, "dtype": "float32", "max_seq_length": 256, "batch_size": 16, "batch_size_eval": 100,
        "max_steps": max_steps, "eval_steps": max_steps, "optimizer_kwargs": {"lr": 2e-3, "weight_decay": 0.1},
        "generation_kwargs": {"max_length": 256, "max_new_tokens": 100},
    }


def export_data(data_dir: Path, train_rows: int, test_rows: int) -> None:
    from peftbench.tasks import math_tiny_data
    from peftbench.tasks.math_tiny import DATA_SEED

    def write(path: Path, rows: list[dict]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")

    train = math_tiny_data.generate_rows("train", train_rows, seed=DATA_SEED)
    write(data_dir / "metamath" / "train.jsonl", [
        {"query": r["query"], "response": r["response"], "type": "math-tiny", "original_question": r["query"]}
        for r in train
    ])
    valid = math_tiny_data.generate_rows("valid", 500, seed=DATA_SEED)
    test = math_tiny_data.generate_rows("test", test_rows, seed=DATA_SEED)
    write(data_dir / "gsm8k" / "train.jsonl", [{"question": r["query"], "answer": r["response"]} for r in valid])
    write(data_dir / "gsm8k" / "test.jsonl", [{"question": r["query"], "answer": r["response"]} for r in test])
    write(data_dir / "finewiki" / "train.jsonl", [{"text": t} for t in math_tiny_data.forgetting_texts(100, seed=DATA_SEED)])


def edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data, indent=2))


def no_pad(folder: Path) -> None:
    """No pad token declared, as Llama-3.2's tokenizer."""
    edit_json(folder / "tokenizer_config.json", lambda config: config.pop("pad_token", None))


# A Llama-3-like template; neither program applies it (PEFT's run.py never calls apply_chat_template), but its
# presence must change nothing either.
CHAT_TEMPLATE = ("{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}"
                 "{{ eos_token }}{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def chat_template_left_padding(folder: Path) -> None:
    """A chat template, and left padding as the tokenizer's default side (the shipped <pad> kept)."""
    edit_json(folder / "tokenizer_config.json", lambda config: config.update(chat_template=CHAT_TEMPLATE, padding_side="left"))


def eos_appended(folder: Path) -> None:
    """BOS added and EOS appended by the post-processor: every training row and every prompt ends with EOS."""
    def post_processor(tokenizer: dict) -> None:
        special = {token: {"id": token, "ids": [tokenizer["model"]["vocab"][token]], "tokens": [token]}
                   for token in ("<s>", "</s>")}
        bos, eos = ({"SpecialToken": {"id": token, "type_id": 0}} for token in ("<s>", "</s>"))
        tokenizer["post_processor"] = {
            "type": "TemplateProcessing", "special_tokens": special,
            "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}, eos],
            "pair": [bos, {"Sequence": {"id": "A", "type_id": 0}}, eos, bos, {"Sequence": {"id": "B", "type_id": 0}}, eos],
        }

    edit_json(folder / "tokenizer.json", post_processor)


def sampling(folder: Path) -> None:
    """generation_config.json asks for sampling, as Meta's Llama 3 files do."""
    edit_json(folder / "generation_config.json", lambda config: config.update(do_sample=True, temperature=0.6, top_p=0.9))


def sampling_at(temperature: float):
    """Sampling at a low temperature, so that a score above 0 can show whether both programs sample alike."""
    def edit(folder: Path) -> None:
        edit_json(folder / "generation_config.json",
                  lambda config: config.update(do_sample=True, temperature=temperature, top_p=0.9))
    return edit


# name -> the edits that make the copy from the shipped tiny model (none: the shipped model itself)
MODELS = {
    "own-pad": (),
    "no-pad": (no_pad,),
    "chat-sampling": (chat_template_left_padding, eos_appended, sampling),
    "sampling": (chat_template_left_padding, sampling),
    "cold-sampling": (sampling_at(0.2),),
    # the tiny model's token after the line break before "####" is nearly uniform: only a near-greedy sample answers
    "near-greedy-sampling": (sampling_at(0.01),),
}


def model_copy(name: str, work: Path) -> Path:
    """The folder of tiny model `name` (MODELS), made once under `work`."""
    from peftbench.tasks.math_tiny import shipped_model_path

    if not MODELS[name]:
        return shipped_model_path()
    target = (work / f"tiny-model-{name}").resolve()
    if target.exists():  # never rewrite it: the other side may be reading (mmapping) it right now
        return target
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(shipped_model_path(), partial)
    for edit in MODELS[name]:
        edit(partial)
    partial.rename(target)
    return target


def prepare_experiment(root: Path, params: dict, shared: Path) -> Path:
    """<root>/experiments/lora/rank32-tiny: the suite's adapter config (from the `shared` folder) and the shared
    training params."""
    folder = root / "experiments" / EXPERIMENT[0] / EXPERIMENT[1]
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(shared / SUITE_EXPERIMENT / "adapter_config.json", folder / "adapter_config.json")
    (folder / "training_params.json").write_text(json.dumps(params, indent=2))
    return folder


# ---------------------------------------------------------------- PEFT's run.py, patched only where documented
def peft_5d602fd_get_tokenizer(*, model_id: str, max_seq_length: int):
    """PEFT @5d602fd's utils.get_tokenizer (method_comparison/MetaMathQA/utils.py, lines 204-215 there), which the
    stored utils.py predates: EOS is always the pad token, on the right, whatever the tokenizer declares ("we also
    assume the padding token to be the EOS token. We'll use this in the label creation so that we always have an
    EOS token at the end")."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_id)
    tokenizer.model_max_length = max_seq_length
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def peft_shim(peft_dir: Path, data_dir: Path, threads: int) -> None:
    import runpy

    import torch

    torch.set_num_threads(threads)
    sys.path.insert(0, str(peft_dir))
    import peft.utils

    import importlib.util

    stub_bnb = importlib.util.find_spec("bitsandbytes") is None
    if stub_bnb:  # only while utils.py imports it: peft itself must go on seeing no bitsandbytes
        sys.modules["bitsandbytes"] = types.SimpleNamespace(__version__="not installed", __path__=["site-packages"])
    real_infer_device = peft.utils.infer_device
    peft.utils.infer_device = lambda: "cuda"
    import utils

    if stub_bnb:
        del sys.modules["bitsandbytes"]
    peft.utils.infer_device = real_infer_device
    utils.infer_device = real_infer_device
    utils.device = "cpu"
    for name, value in {
        "memory_allocated": 0, "memory_reserved": 0, "max_memory_reserved": 0, "reset_peak_memory_stats": None,
        "empty_cache": None, "manual_seed_all": None, "get_device_name": "cpu",
    }.items():
        if not hasattr(torch.cpu, name):
            setattr(torch.cpu, name, lambda *args, _value=value, **kwargs: _value)
    utils.get_peft_branch = lambda: "side-by-side"
    utils.get_base_model_info = lambda model_id: None
    utils.get_dataset_info = lambda dataset_id: None
    real_get_model = utils.get_model
    utils.get_model = lambda **kwargs: real_get_model(**{"use_gc": False, **kwargs})
    utils.get_tokenizer = peft_5d602fd_get_tokenizer

    import data
    import datasets

    def local_load_dataset(path, name=None, **kwargs):
        folder = data_dir / HUB_IDS[path]
        files = {split.stem: str(split) for split in sorted(folder.glob("*.jsonl"))}
        return datasets.load_dataset("json", data_files=files, **kwargs)

    data.load_dataset = local_load_dataset
    (peft_dir / "temporary_results").mkdir(exist_ok=True)
    os.chdir(peft_dir)
    sys.argv = ["run.py", "-v", os.path.join("experiments", *EXPERIMENT)]
    runpy.run_path(str(peft_dir / "run.py"), run_name="__main__")


# ---------------------------------------------------------------- the comparison
def run_timed(command: list[str], env: dict, cwd: Path) -> float:
    """Wall seconds of the whole process; its CPU seconds (user + system, children included) are printed,
    since on a loaded machine they compare the two sides better than wall time."""
    tic = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    process = subprocess.run(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - tic
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if process.returncode != 0:
        raise SystemExit(f"{command[:4]} failed ({process.returncode}):\n{process.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(f"{command[1] if len(command) > 1 else command[0]}: wall {elapsed:.1f} s, CPU {cpu:.1f} s", flush=True)
    return elapsed


def newest(folder: Path, pattern: str) -> dict:
    return json.loads(max(folder.glob(pattern), key=lambda p: p.stat().st_mtime).read_text())


def data_assignments(data_dir: Path) -> list[str]:
    """peftbench's --set options for the exported files."""
    files = {"train_data": ("metamath", "train"), "valid_data": ("gsm8k", "train"), "test_data": ("gsm8k", "test"),
             "forgetting_data": ("finewiki", "train")}
    return [option for key, (folder, split) in files.items()
            for option in ("--set", f"{key}={data_dir / folder / f'{split}.jsonl'}")]


def compare_batch(args, lrs: list[float], model_path: str, data_dir: Path, env: dict) -> None:
    """A learning-rate batch: one `peftbench sweep` over the rates with --sweep-workers workers (the cores split
    evenly between a phase's trials at once), then PEFT's script once per trial the sweep ran (the rates, and the
    chosen rate's extra seed), one after another: it has no batch mode. Every trial is the same 200 steps,
    whatever its rate. With --halving the sweep stops hopeless rates at rungs (its defaults: the validation loss
    at 1/8, 1/4 and 1/2 of the steps); PEFT's script still runs every one of those configs to its end, as it
    would be used."""
    base = shared_params(model_path, args.steps, args.seeds[0])
    experiment = prepare_experiment(args.work / "peftbench-sweep", base, args.shared)
    results = args.work / "peftbench-sweep" / "results"
    shutil.rmtree(results, ignore_errors=True)
    command = [sys.executable, "-c", "from peftbench.cli import main; main()", "sweep", str(experiment), "--task",
               "math", "--lrs", ",".join(f"{lr:g}" for lr in lrs), "--seeds", "1",
               "--workers", str(args.sweep_workers),
               "--results", str(results), *data_assignments(data_dir), *sum((["--set", a] for a in args.assignments), []),
               *(["--halving", *args.halving_options.split()] if args.halving else [])]
    sweep_wall = run_timed(command, env, REPO)
    trial_lrs = []
    for path in sorted(results.glob("*.json")):
        result = json.loads(path.read_text())
        if "peftbench" in result:
            trial_lrs.append(result["run_info"]["train_config"]["optimizer_kwargs"]["lr"])
            own = result["peftbench"]
            score = f"test accuracy {own['test_score']:.3f}" if own["test_score"] is not None else own["status"]
            print(f"peftbench {path.stem}: {score} after {own['steps']} steps, child {own['total_time_s']:.1f} s")
    peft_dir = args.peft_dir.resolve()
    peft_walls = []
    for lr in trial_lrs:
        prepare_experiment(peft_dir, {**base, "optimizer_kwargs": {**base["optimizer_kwargs"], "lr": lr}}, args.shared)
        peft_walls.append(run_timed([sys.executable, __file__, "--shim", "--peft-dir", str(peft_dir), "--work",
                                     str(args.work.resolve()), "--threads", str(args.threads)], env, REPO))
        final = newest(peft_dir / "temporary_results", f"{EXPERIMENT[0]}--{EXPERIMENT[1]}--*.json")["train_info"]
        print(f"PEFT run.py lr {lr:g}: test accuracy {final['metrics'][-1]['test accuracy']:.3f}", flush=True)
    print(f"peftbench sweep, {len(trial_lrs)} trials, {args.sweep_workers} worker(s): {sweep_wall:.1f} s")
    print(f"PEFT run.py, the same {len(trial_lrs)} trials one after another, {args.threads} threads: "
          f"{sum(peft_walls):.1f} s ({sum(peft_walls) / sweep_wall:.2f}x peftbench's time)")


def run_together(commands: dict[str, list[str]], env: dict, cwd: Path, logs: Path) -> dict[str, tuple[float, float]]:
    """Start every command at once (so that all see the same load) and wait for all: wall and CPU seconds (user +
    system) of each whole process. Each one's stderr goes to logs/<name>.log."""
    import threading

    logs.mkdir(parents=True, exist_ok=True)
    times: dict[str, tuple[float, float]] = {}
    failed: list[str] = []

    def run(name: str, command: list[str]) -> None:
        with open(logs / f"{name}.log", "w") as log:
            tic = time.perf_counter()
            process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=log)
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
        times[name] = (time.perf_counter() - tic, usage.ru_utime + usage.ru_stime)
        if process.returncode != 0:
            failed.append(f"{name} failed ({process.returncode}), see {logs / f'{name}.log'}")

    threads = [threading.Thread(target=run, args=item) for item in commands.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failed:
        raise SystemExit("\n".join(failed))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peft-dir", type=Path, help="folder with PEFT's run.py, data.py, utils.py, default_training_params.json")
    parser.add_argument("--work", type=Path, default=REPO / "results" / "side-by-side")
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared",
                        help=f"the folder holding {SUITE_EXPERIMENT} (the suite's adapter config)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--train-rows", type=int, default=3200)
    parser.add_argument("--test-rows", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1, help="threads of each process (the two run at once)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (both sides), run in turn")
    parser.add_argument("--models", nargs="+", choices=tuple(MODELS), default=list(MODELS),
                        help="the tiny models to compare on (default: all; see above)")
    parser.add_argument("--only", choices=("peft", "peftbench"), default=None)
    parser.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra peftbench training parameter (e.g. cpu_matmul=torch)")
    parser.add_argument("--lrs", default=None, metavar="LR,LR,...",
                        help="compare a batch instead of one experiment: one `peftbench sweep --lrs ... --seeds 1 "
                             "--workers W` against PEFT's script once per trial of that sweep, one after another "
                             "(on the first of --models)")
    parser.add_argument("--sweep-workers", type=int, default=2,
                        help="with --lrs: the sweep's trials at once (the cores split between them; 1: each trial "
                             "on all cores, one after another as PEFT's script)")
    parser.add_argument("--halving", action="store_true",
                        help="with --lrs: the sweep with successive halving (`peftbench sweep --halving`)")
    parser.add_argument("--halving-options", default="", metavar="'OPTIONS'",
                        help="with --halving: the sweep's --halving-* options, e.g. '--halving-signal score-then-loss "
                             "--halving-reduction-factor 3' (with --set eval_steps=N for a score signal)")
    parser.add_argument("--shim", action="store_true", help=argparse.SUPPRESS)  # internal: run PEFT's script here
    args = parser.parse_args()
    data_dir = args.work / "data"
    if args.shim:
        peft_shim(args.peft_dir.resolve(), data_dir.resolve(), args.threads)
        return

    from peftbench.hardware import detect_hardware  # the CPU, named beside every timing
    from peftbench.run.request import result_stem

    needs_peft = args.only != "peftbench" or args.lrs
    if needs_peft:  # before anything is written into it
        missing = [name for name in PEFT_SCRIPTS if args.peft_dir is None or not (args.peft_dir / name).is_file()]
        if missing:
            raise SystemExit(f"--peft-dir {args.peft_dir}: no {', '.join(missing)} there (PEFT's "
                             "method_comparison/MetaMathQA folder is needed, or --only peftbench)")
    cpu = detect_hardware("cpu")
    print(f"CPU {cpu.name} ({' '.join(cpu.flags)}; torch kernels {cpu.torch_cpu_capability}), {args.threads} thread(s) "
          "per process", flush=True)
    export_data(data_dir, args.train_rows, args.test_rows)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if args.lrs:
        model_path = model_copy(args.models[0], args.work)
        compare_batch(args, [float(lr) for lr in args.lrs.split(",")], str(model_path), data_dir, env)
        return
    kept = args.work / "kept"  # every result file, by model, seed and side
    kept.mkdir(parents=True, exist_ok=True)
    rows = []
    for model, seed in [(model, seed) for model in args.models for seed in args.seeds]:
        params = shared_params(str(model_copy(model, args.work)), args.steps, seed)
        commands: dict[str, list[str]] = {}
        if args.only != "peftbench":
            peft_dir = args.peft_dir.resolve()
            prepare_experiment(peft_dir, params, args.shared)
            peft_results = peft_dir / "temporary_results"
            before = set(peft_results.glob("*.json"))
            commands["PEFT run.py"] = [sys.executable, __file__, "--shim", "--peft-dir", str(peft_dir), "--work",
                                       str(args.work.resolve()), "--threads", str(args.threads)]
        if args.only != "peft":
            root = args.work / "peftbench" / model / str(seed)
            experiment = prepare_experiment(root, params, args.shared)
            results = root / "results"
            commands["peftbench math"] = [
                sys.executable, "-c", "from peftbench.cli import main; main()", "run", str(experiment), "--task", "math",
                "--results", str(results), "--force", "--no-save", *data_assignments(data_dir),
                "--set", f"num_threads={args.threads}", *sum((["--set", a] for a in args.assignments), []),
            ]
        load_before = os.getloadavg()[0]
        times = run_together(commands, env, REPO, args.work / "logs" / model / str(seed))
        load = f"{load_before:.1f}-{os.getloadavg()[0]:.1f}"
        for side, (wall, cpu_s) in times.items():
            if side == "PEFT run.py":
                (path,) = set(peft_results.glob("*.json")) - before
                shutil.copy(path, kept / f"{model}-{seed}-peft.json")
                result = json.loads(path.read_text())
                test_score, warnings = result["train_info"]["metrics"][-1]["test accuracy"], ""
            else:
                path = results / f"{result_stem(*EXPERIMENT)}.json"
                shutil.copy(path, kept / f"{model}-{seed}-peftbench.json")
                result = json.loads(path.read_text())
                own = result["peftbench"]
                test_score, warnings = own["test_score"], "; ".join(map(str, own.get("run_warnings") or []))
            final = result["train_info"]["metrics"][-1]
            rows.append((model, side, seed, wall, cpu_s, load, test_score, final["forgetting"], final["train loss"],
                         result["train_info"]["train_time"], warnings))
            print("| {} | {} | {} | {:.1f} | {:.1f} | {} | {:.3f} | {!r} | {!r} | {:.1f} | {} |".format(*rows[-1]),
                  flush=True)

    print("\n| model | side | seed | process wall (s) | CPU (s) | load avg | test accuracy | forgetting | train loss "
          "| train_info.train_time (s) | run_warnings |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print("| {} | {} | {} | {:.1f} | {:.1f} | {} | {:.3f} | {!r} | {!r} | {:.1f} | {} |".format(*row))
    for model in args.models:
        walls = {side: [row[3] for row in rows if row[0] == model and row[1] == side] for side in ("PEFT run.py", "peftbench math")}
        if all(walls.values()):
            print(f"{model}: wall PEFT / peftbench {statistics.median(walls['PEFT run.py']) / statistics.median(walls['peftbench math']):.3f} "
                  f"(medians over {len(walls['PEFT run.py'])} pair(s))")


if __name__ == "__main__":
    main()
