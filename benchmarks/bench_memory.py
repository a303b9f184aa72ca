"""Tensor-level memory measurements for benchmarks/memory.md; each part prints a markdown table.

    .venv/bin/python benchmarks/bench_memory.py overhead [--reps 8]     # tracker cost per training step
    .venv/bin/python benchmarks/bench_memory.py suite RESULTS_DIR       # quick-suite runs by tracked peak
    .venv/bin/python benchmarks/bench_memory.py estimate CONFIG_DIR EXP_DIR...  # peftbench memory, GiB table
    .venv/bin/python benchmarks/bench_memory.py compare RESULTS_DIR SUITE_DIR   # estimate vs measured runs

`overhead` times the same math-tiny training step (the task's first batch, its default settings) with and
without the tracker, alternating, after two warm-up steps; the ratio of medians is the cost of a tracked step.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

GIB = 2**30
MIB = 2**20
CATEGORIES = ("parameters", "gradients", "optimizer_state", "activations", "temporaries")


def overhead(reps: int) -> None:
    import torch
    from peft import LoraConfig, get_peft_model

    from peftbench.hardware import resolve_use_amp
    from peftbench.tasks import get_task
    from peftbench.training.tensor_memory import TensorMemoryTracker
    from peftbench.training.train import autocast_context

    task = get_task("math-tiny")
    config = task.build_config({}, "defaults", {"train_size": 400}, "--set")
    config = replace(config, use_amp=resolve_use_amp(config.use_amp, config.device)[0])  # as a run decides it
    torch.set_num_threads(config.num_threads)
    data, tokenizer = task.load_data(config), task.load_processor(config)
    batch = next(task.train_batches(data.train, tokenizer, config, seed=0))
    print(f"batch {tuple(batch.inputs['input_ids'].shape)}, use_amp {config.use_amp}, {torch.get_num_threads()} thread(s)\n")
    print("| method | plain step (median s) | tracked step (median s) | tracked / plain | tracked peak |")
    print("|---|---|---|---|---|")
    for method in ("LoRA r16 (all linear)", "full fine-tuning"):
        model = task.load_model(config, "cpu")
        if method.startswith("LoRA"):
            model = get_peft_model(model, LoraConfig(r=16, target_modules="all-linear"))
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        tracker = TensorMemoryTracker()

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            with autocast_context(config, torch.device("cpu")):
                loss = task.compute_loss(model, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            optimizer.step()

        step(), step()
        times: dict[str, list[float]] = {"plain": [], "tracked": []}
        for rep in range(reps):
            for mode in ("plain", "tracked") if rep % 2 == 0 else ("tracked", "plain"):
                tic = time.perf_counter()
                if mode == "tracked":
                    tracker.register(model, optimizer, batch.inputs)
                    with tracker:
                        step()
                else:
                    step()
                times[mode].append(time.perf_counter() - tic)
        plain, tracked = statistics.median(times["plain"]), statistics.median(times["tracked"])
        print(f"| {method} | {plain:.3f} | {tracked:.3f} | {tracked / plain:.3f} | {tracker.peak_total / MIB:.1f} MiB |")


def suite(results_dir: str) -> None:
    rows = []
    for path in sorted(Path(results_dir).glob("*.json")):
        data = json.loads(path.read_text())
        pb = data.get("peftbench") or {}
        if pb.get("status") != "success":
            continue
        rows.append(pb)
    rows.sort(key=lambda pb: pb["peak_memory_train_allocated_bytes"])
    print("| experiment | tracked peak (MiB) | " + " | ".join(CATEGORIES) + " | peak RSS train (MiB) | tracked steps |")
    print("|---|---|" + "---|" * len(CATEGORIES) + "---|---|")
    for pb in rows:
        breakdown = pb["peak_memory_train_breakdown"]
        print(f"| {pb['method']}/{pb['name']} | {pb['peak_memory_train_allocated_bytes'] / MIB:.1f} | "
              + " | ".join(f"{breakdown.get(c, 0) / MIB:.1f}" for c in CATEGORIES)
              + f" | {pb['peak_memory_train_bytes'] / MIB:.0f} | {', '.join(map(str, pb['peak_memory_tracked_steps']))} |")


def estimate(config_dir: str, experiments: list[str], extra: list[str]) -> None:
    command = [sys.executable, "-c", "from peftbench.cli import main; main()", "memory", *experiments,
               "--task", "math", "--set", f"model_id={config_dir}", *extra, "--json"]
    tic = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - tic
    print(done.stderr.strip().splitlines()[-1])
    print(f"({len(experiments)} experiments in {seconds:.0f} s)\n")
    print("| experiment | estimated peak (GiB) | " + " | ".join(CATEGORIES) + " | trainable params |")
    print("|---|---|" + "---|" * len(CATEGORIES) + "---|")
    for row in sorted(json.loads(done.stdout), key=lambda row: row["peak_bytes"]):
        print(f"| {row['experiment_name']} | {row['peak_bytes'] / GIB:.2f} | "
              + " | ".join(f"{row['breakdown'].get(c, 0) / GIB:.2f}" for c in CATEGORIES)
              + f" | {row['trainable_params']:,} |")


def compare(results_dir: str, suite_dir: str) -> None:
    """The estimator, counting as a CPU run does, against measured runs with the same training config."""
    import warnings

    from peftbench.run.plan import plan_run
    from peftbench.run.request import RunRequest
    from peftbench.training.memory_estimate import batch_shapes, estimate_training_memory, load_tokenizer_if_any

    print("| experiment | measured peak (MiB) | estimated (MiB) | estimated - measured (bytes) | estimate's optimizer state (MiB) |")
    print("|---|---|---|---|---|")
    for path in sorted(Path(results_dir).glob("*.json")):
        data = json.loads(path.read_text())
        pb = data.get("peftbench") or {}
        if pb.get("status") != "success":
            continue
        run = plan_run(RunRequest(task=pb["task"], results_dir=".", experiment_dir=str(Path(suite_dir) / pb["method"] / pb["name"]),
                                 overrides=data["run_info"]["train_config"]))
        tokenizer = load_tokenizer_if_any(run.task, run.config)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            estimate = estimate_training_memory(run.spec, run.task, run.config, batch_shapes(run.task, run.config, tokenizer),
                                                tokenizer, device_type="cpu")
        measured = pb["peak_memory_train_allocated_bytes"]
        print(f"| {pb['method']}/{pb['name']} | {measured / MIB:.1f} | {estimate.peak_bytes / MIB:.1f} | "
              f"{estimate.peak_bytes - measured:,} | {estimate.breakdown['optimizer_state'] / MIB:.1f} |")


if __name__ == "__main__":
    part, args = sys.argv[1], sys.argv[2:]
    if part == "overhead":
        overhead(int(args[args.index("--reps") + 1]) if "--reps" in args else 8)
    elif part == "compare":
        compare(args[0], args[1])
    elif part == "suite":
        suite(args[0])
    elif part == "estimate":
        sets = [a for i, a in enumerate(args) if a == "--set" or (i and args[i - 1] == "--set")]
        plain = [a for a in args if a not in sets]
        estimate(plain[0], plain[1:], sets)
    else:
        raise SystemExit(__doc__)
