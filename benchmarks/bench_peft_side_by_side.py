"""PEFT's own MetaMathQA `run.py` against peftbench's `math` task, on the same model, data and settings.

    .venv/bin/python benchmarks/bench_peft_side_by_side.py --peft-dir ../peft-ref/MetaMathQA [--repeats 2]

PEFT's scripts (method_comparison/MetaMathQA: run.py, data.py, utils.py, default_training_params.json) are
not part of this repository; --peft-dir names a folder holding them (see benchmarks/math-faithful.md for the
versions used). Both sides train the PEFT suite's `lora/llama-3.2-3B-rank32` adapter config on the shipped
tiny model, with the math-tiny rows exported to the suite's schemas:
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
   passes the config's value (false).

Each repeat runs PEFT, then peftbench, each in a fresh process with 2 threads, and times the whole process.
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
SUITE_EXPERIMENT = REPO.parent / "shared" / "peft-method-comparison" / "MetaMathQA" / "experiments" / "lora" / "llama-3.2-3B-rank32"
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


def padless_model_copy(source: Path, target: Path) -> Path:
    """The tiny model with no pad token declared, as Llama-3.2's tokenizer has none.

    Both scripts then pad with EOS (PEFT's utils.get_tokenizer and peftbench's math task set pad = eos when the
    tokenizer has no pad token), so the one padding position PEFT keeps in the labels teaches the model to stop.
    With the shipped tokenizer's own `<pad>`, PEFT's labels teach `<pad>` instead, generation never meets EOS,
    and both sides score 0%."""
    if target.exists():  # never rewrite it: the other side may be reading (mmapping) it right now
        return target
    shutil.copytree(source, target)
    tokenizer_config = json.loads((target / "tokenizer_config.json").read_text())
    tokenizer_config.pop("pad_token", None)
    (target / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    return target


def prepare_experiment(root: Path, params: dict) -> Path:
    """<root>/experiments/lora/rank32-tiny: the suite's adapter config and the shared training params."""
    folder = root / "experiments" / EXPERIMENT[0] / EXPERIMENT[1]
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(SUITE_EXPERIMENT / "adapter_config.json", folder / "adapter_config.json")
    (folder / "training_params.json").write_text(json.dumps(params, indent=2))
    return folder


# ---------------------------------------------------------------- PEFT's run.py, patched only where documented
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
    """A learning-rate batch: one `peftbench sweep` over the rates with two workers (the cores split between
    them, its default), then PEFT's script once per trial the sweep ran (the rates, and the chosen rate's extra
    seed), one after another: it has no batch mode. Every trial is the same 200 steps, whatever its rate."""
    base = shared_params(model_path, args.steps, args.seeds[0])
    experiment = prepare_experiment(args.work / "peftbench-sweep", base)
    results = args.work / "peftbench-sweep" / "results"
    shutil.rmtree(results, ignore_errors=True)
    command = [sys.executable, "-c", "from peftbench.cli import main; main()", "sweep", str(experiment), "--task",
               "math", "--lrs", ",".join(f"{lr:g}" for lr in lrs), "--seeds", "1", "--workers", "2",
               "--results", str(results), *data_assignments(data_dir), *sum((["--set", a] for a in args.assignments), [])]
    sweep_wall = run_timed(command, env, REPO)
    trial_lrs = []
    for path in sorted(results.glob("*.json")):
        result = json.loads(path.read_text())
        if "peftbench" in result:
            trial_lrs.append(result["run_info"]["train_config"]["optimizer_kwargs"]["lr"])
            print(f"peftbench {path.stem}: test accuracy {result['peftbench']['test_score']:.3f}, "
                  f"child {result['peftbench']['total_time_s']:.1f} s")
    peft_dir = args.peft_dir.resolve()
    peft_walls = []
    for lr in trial_lrs:
        prepare_experiment(peft_dir, {**base, "optimizer_kwargs": {**base["optimizer_kwargs"], "lr": lr}})
        peft_walls.append(run_timed([sys.executable, __file__, "--shim", "--peft-dir", str(peft_dir), "--work",
                                     str(args.work.resolve()), "--threads", str(args.threads)], env, REPO))
        final = newest(peft_dir / "temporary_results", f"{EXPERIMENT[0]}--{EXPERIMENT[1]}--*.json")["train_info"]
        print(f"PEFT run.py lr {lr:g}: test accuracy {final['metrics'][-1]['test accuracy']:.3f}", flush=True)
    print(f"peftbench sweep, {len(trial_lrs)} trials, 2 workers: {sweep_wall:.1f} s")
    print(f"PEFT run.py, the same {len(trial_lrs)} trials one after another, {args.threads} threads: "
          f"{sum(peft_walls):.1f} s ({sum(peft_walls) / sweep_wall:.2f}x peftbench's time)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peft-dir", type=Path, help="folder with PEFT's run.py, data.py, utils.py, default_training_params.json")
    parser.add_argument("--work", type=Path, default=REPO / "results" / "side-by-side")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--train-rows", type=int, default=3200)
    parser.add_argument("--test-rows", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (both sides), run in turn")
    parser.add_argument("--tokenizer-pad", choices=("eos", "shipped"), default="eos",
                        help="eos: a copy of the tiny model whose tokenizer declares no pad token (as Llama-3.2's); "
                             "shipped: the tiny model as shipped, with its own <pad> token")
    parser.add_argument("--only", choices=("peft", "peftbench"), default=None)
    parser.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra peftbench training parameter (e.g. loss_on=completion)")
    parser.add_argument("--lrs", default=None, metavar="LR,LR,...",
                        help="compare a batch instead of one experiment: one `peftbench sweep --lrs ... --seeds 1 "
                             "--workers 2` against PEFT's script once per trial of that sweep, one after another")
    parser.add_argument("--shim", action="store_true", help=argparse.SUPPRESS)  # internal: run PEFT's script here
    args = parser.parse_args()
    data_dir = args.work / "data"
    if args.shim:
        peft_shim(args.peft_dir.resolve(), data_dir.resolve(), args.threads)
        return

    from peftbench.runners.request import result_stem
    from peftbench.tasks.math_tiny import shipped_model_path

    from peftbench.hardware import detect_hardware  # the CPU, named beside every timing

    needs_peft = args.only != "peftbench" or args.lrs
    if needs_peft:  # before anything is written into it
        missing = [name for name in PEFT_SCRIPTS if args.peft_dir is None or not (args.peft_dir / name).is_file()]
        if missing:
            raise SystemExit(f"--peft-dir {args.peft_dir}: no {', '.join(missing)} there (PEFT's "
                             "method_comparison/MetaMathQA folder is needed, or --only peftbench)")
    cpu = detect_hardware("cpu")
    print(f"CPU {cpu.name} ({' '.join(cpu.flags)}; torch kernels {cpu.torch_cpu_capability}), {args.threads} thread(s)",
          flush=True)
    export_data(data_dir, args.train_rows, args.test_rows)
    model_path = shipped_model_path()
    if args.tokenizer_pad == "eos":
        model_path = padless_model_copy(model_path, (args.work / "tiny-model-pad-eos").resolve())
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if args.lrs:
        compare_batch(args, [float(lr) for lr in args.lrs.split(",")], str(model_path), data_dir, env)
        return
    rows = []
    for seed, repeat in [(seed, repeat) for seed in args.seeds for repeat in range(args.repeats)]:
        params = shared_params(str(model_path), args.steps, seed)
        if args.only != "peftbench":
            peft_dir = args.peft_dir.resolve()
            prepare_experiment(peft_dir, params)
            wall = run_timed([sys.executable, __file__, "--shim", "--peft-dir", str(peft_dir), "--work", str(args.work.resolve()),
                              "--threads", str(args.threads)], env, REPO)
            result = newest(peft_dir / "temporary_results", f"{EXPERIMENT[0]}--{EXPERIMENT[1]}--*.json")
            final = result["train_info"]["metrics"][-1]
            rows.append(("PEFT run.py", seed, wall, final["test accuracy"], final["forgetting"],
                         result["train_info"]["train_time"], final["step"]))
        if args.only != "peft":
            experiment = prepare_experiment(args.work / "peftbench", params)
            results = args.work / "peftbench" / "results"
            command = [sys.executable, "-c", "from peftbench.cli import main; main()", "run", str(experiment),
                       "--task", "math", "--results", str(results), "--force", "--no-save",
                       "--set", f"train_data={data_dir / 'metamath' / 'train.jsonl'}",
                       "--set", f"valid_data={data_dir / 'gsm8k' / 'train.jsonl'}",
                       "--set", f"test_data={data_dir / 'gsm8k' / 'test.jsonl'}",
                       "--set", f"forgetting_data={data_dir / 'finewiki' / 'train.jsonl'}",
                       "--set", f"num_threads={args.threads}"]
            for assignment in args.assignments:
                command += ["--set", assignment]
            wall = run_timed(command, env, REPO)
            result = json.loads((results / f"{result_stem(*EXPERIMENT)}.json").read_text())
            own = result["peftbench"]
            rows.append(("peftbench math", seed, wall, own["test_score"], own["forgetting"],
                         result["train_info"]["train_time"], own["steps"]))
            print(json.dumps({**{k: own[k] for k in ("train_time_s", "eval_time_s", "total_time_s", "valid_score")},
                              "cpu_matmul": result["run_info"]["train_config"].get("cpu_matmul"),
                              "decided_by": own["hardware"].get("cpu_matmul_decided_by")}))
        for row in rows[-2:]:
            print("| {} | {} | {:.1f} | {:.3f} | {:.4f} | {:.1f} | {} |".format(*row), flush=True)

    print("\n| side | seed | process wall (s) | test accuracy | forgetting | train_info.train_time (s) | steps |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print("| {} | {} | {:.1f} | {:.3f} | {:.4f} | {:.1f} | {} |".format(*row))
    for side in sorted({row[0] for row in rows}):
        walls = [row[2] for row in rows if row[0] == side]
        print(f"{side}: median wall {statistics.median(walls):.1f} s over {len(walls)}")


if __name__ == "__main__":
    main()
