"""How far does math-tiny on a CPU predict the published GPU benchmark? Spearman rank correlation between
math-tiny test accuracy and the published GSM8K test accuracy, over every PEFT-suite MetaMathQA config that
fits the tiny model.

    .venv/bin/python benchmarks/rank_correlation.py [--steps 120] [--test-size 300] [--results results/rankcorr]

For each folder of ../shared/peft-method-comparison/MetaMathQA/experiments/<method>/<name>/:
1. fit check: its peft config must wrap the shipped tiny model and run one forward/backward pass
   (configs written for Llama-3.2-3B's sizes or token ids may not fit: the reason is printed);
2. a shortened math-tiny run (`--steps` steps, `--test-size` test items) in a child process, the folder
   unchanged except: max_steps/eval_steps shortened (AdaLoRA's tinit/tfinal/total_step scaled with them),
   model_id and batch_size set to math-tiny's, and the learning rate mapped by the ratio of the two
   tasks' default rates (math-tiny 2e-3 / PEFT suite 1e-4 = 20x), which keeps each config's rate relative
   to the suite's default. `--lr-mapping keep` uses the published rates as they are instead;
3. Spearman's rho (scipy.stats.spearmanr) between the math-tiny scores and the published ones, over the
   configs that finished, and over all fitting configs counting a diverged run as 0.

Result files are kept in --results, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUITE = REPO.parent / "shared" / "peft-method-comparison" / "MetaMathQA"
PUBLISHED_DEFAULT_LR = 1e-4  # MetaMathQA/default_training_params.json
PUBLISHED_STEPS = 5000  # idem, max_steps
SCHEDULE_KEYS = ("tinit", "tfinal", "total_step")  # AdaLoRA's rank-pruning schedule, in steps


def with_scaled_schedule(folder: Path, steps: int, scratch: Path) -> Path:
    """The folder itself, or, for configs with a step schedule (AdaLoRA), a copy in `scratch` whose
    schedule is scaled from the published 5000 steps to `steps` (same <method>/<name>, so the same result name)."""
    import shutil

    config = json.loads((folder / "adapter_config.json").read_text()) if (folder / "adapter_config.json").exists() else {}
    if not any(config.get(key) for key in SCHEDULE_KEYS):
        return folder
    copy_dir = scratch / folder.parent.name / folder.name
    shutil.rmtree(copy_dir, ignore_errors=True)
    shutil.copytree(folder, copy_dir)
    for key in SCHEDULE_KEYS:
        if config.get(key):
            config[key] = max(1, round(config[key] * steps / PUBLISHED_STEPS))
    (copy_dir / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return copy_dir


def published_accuracy(method: str, name: str) -> float | None:
    path = SUITE / "results" / f"{method}--{name}.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    if data.get("train_info", {}).get("status") != "success":
        return None
    return data["train_info"]["metrics"][-1].get("test accuracy")


def fit_problem(folder: Path, base_model, tokenizer) -> str | None:
    """None when the config wraps the tiny model and trains one step, else the reason it does not fit."""
    import torch
    from peft import get_peft_model

    from peftbench.experiments import build_peft_config, load_experiment

    try:
        peft_config = build_peft_config(load_experiment(folder))
        if peft_config is None:
            return None
        model = get_peft_model(copy.deepcopy(base_model), peft_config)
        batch = tokenizer(["Question: 2 + 3? Answer: 5"], return_tensors="pt")
        model(**batch, labels=batch["input_ids"]).loss.backward()
        if not any(p.requires_grad for p in model.parameters()):
            return "no trainable parameters"
    except Exception as error:  # noqa: BLE001 - any failure means "does not fit"; the reason is reported
        return f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"
    finally:
        torch.manual_seed(0)
    return None


def mapped_lr(folder: Path, mapping: str, default_lr: float) -> dict:
    params_file = folder / "training_params.json"
    params = json.loads(params_file.read_text()) if params_file.exists() else {}
    lr = params.get("optimizer_kwargs", {}).get("lr", PUBLISHED_DEFAULT_LR)
    if mapping == "keep":
        return {"optimizer_kwargs": {"lr": lr}}
    return {"optimizer_kwargs": {"lr": lr * default_lr / PUBLISHED_DEFAULT_LR}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", type=Path, default=SUITE / "experiments")
    parser.add_argument("--results", type=Path, default=REPO / "results" / "rankcorr")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--test-size", type=int, default=300)
    parser.add_argument("--lr-mapping", choices=("scale", "keep"), default="scale")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default=None,
                        help="only folders whose '<method>/<name>' contains one of these comma-separated strings")
    parser.add_argument("--shard", default="0/1", help="i/n: run every n-th config from the i-th (parallel runs)")
    parser.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                        help="a training parameter for every run, e.g. --set loss_on=sequence (repeatable)")
    args = parser.parse_args()

    import torch

    from peftbench.runners.isolated import run_request
    from peftbench.runners.request import RunRequest
    from peftbench.tasks import get_task

    torch.set_num_threads(args.threads)
    task = get_task("math-tiny")
    from peftbench.config import build_train_config, parse_set_options

    common = parse_set_options(args.assignments)
    config = build_train_config(task.default_params(), overrides=common)
    tokenizer = task.load_processor(config)
    base_model = task.load_model(config, "cpu")
    folders = sorted(p.parent for p in args.experiments.glob("*/*/adapter_config.json"))
    folders += sorted(p.parent for p in args.experiments.glob("*/*/training_params.json") if not (p.parent / "adapter_config.json").exists())
    if args.only:
        wanted = args.only.split(",")
        folders = [f for f in folders if any(part in f"{f.parent.name}/{f.name}" for part in wanted)]
    shard, shards = (int(part) for part in args.shard.split("/"))
    folders = folders[shard::shards]

    for folder in folders:
        method, name = folder.parent.name, folder.name
        published = published_accuracy(method, name)
        if published is None:
            print(f"skip {method}/{name}: no successful published result")
            continue
        problem = fit_problem(folder, base_model, tokenizer)
        if problem:
            print(f"skip {method}/{name}: does not fit the tiny model ({problem})")
            continue
        overrides = {
            # a folder may pin the published model and batch (ADAMSS does): the tiny task's own apply
            "model_id": config.model_id, "batch_size": config.batch_size,
            "max_steps": args.steps, "eval_steps": args.steps, "test_size": args.test_size,
            "valid_size": 0, "forgetting_size": 0, **common,
            **mapped_lr(folder, args.lr_mapping, config.optimizer_kwargs["lr"]),
        }
        path, status, _ = run_request(RunRequest(
            task="math-tiny", results_dir=str(args.results.resolve()),
            experiment_dir=str(with_scaled_schedule(folder, args.steps, args.results / "_scaled")),
            overrides=overrides, save_checkpoint=False, num_threads=args.threads, show_progress=False,
        ))
        score = json.loads(Path(path).read_text())["peftbench"].get("test_score") if path else None
        print(f"{method}/{name}: {status}, math-tiny {score}, published GSM8K {published:.3f}", flush=True)
    summarize(args.results)


def summarize(results: Path) -> None:
    """Table and Spearman's rho over every result file in `results` (all shards, earlier runs too)."""
    from scipy.stats import spearmanr

    rows = []
    for path in sorted(results.glob("*.json")):
        record = json.loads(path.read_text()).get("peftbench") or {}
        published = published_accuracy(record.get("method", ""), record.get("name", ""))
        if published is not None:
            rows.append((f"{record['method']}/{record['name']}", record["status"], record.get("test_score"), published))
    print("\n| config | status | math-tiny test acc | published GSM8K test acc |\n|---|---|---|---|")
    for name, status, score, published in sorted(rows, key=lambda r: -r[3]):
        print(f"| {name} | {status} | {'-' if score is None else f'{score:.3f}'} | {published:.3f} |")
    finished = [(s, p) for _, status, s, p in rows if status == "success" and s is not None]
    all_fitting = [(s if s is not None else 0.0, p) for _, _, s, p in rows]
    for label, pairs in (("finished runs", finished), ("all fitting configs (no score = 0)", all_fitting)):
        if len(pairs) >= 3:
            rho, p_value = spearmanr([s for s, _ in pairs], [p for _, p in pairs])
            print(f"Spearman rho over {len(pairs)} {label}: {rho:.3f} (p = {p_value:.3g})")


if __name__ == "__main__":
    main()
