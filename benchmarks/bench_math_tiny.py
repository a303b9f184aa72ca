"""Measurements of the math-tiny benchmark (numbers go to benchmarks/math-tiny.md).

    .venv/bin/python benchmarks/bench_math_tiny.py base                 # base model, no fine-tuning
    .venv/bin/python benchmarks/bench_math_tiny.py seeds EXPERIMENT --seeds 0 1 2 --results DIR
    .venv/bin/python benchmarks/bench_math_tiny.py samples CHECKPOINT_DIR --count 5
    .venv/bin/python benchmarks/bench_math_tiny.py table RESULTS_DIR     # accuracy, memory, size per method

Everything runs offline on the shipped model with math-tiny's default training parameters.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def default_config(**overrides):
    from peftbench.tasks import get_task

    task = get_task("math-tiny")
    return task, task.build_config(overrides=overrides)


def measure_base(args) -> None:
    """Test accuracy of the pretrained model without fine-tuning (it has never seen the answer format)."""
    import torch

    task, config = default_config()
    torch.set_num_threads(args.threads)
    tokenizer = task.load_processor(config)
    model = task.load_model(config, "cpu")
    rows = task.load_data(config).test[: args.rows]
    started = time.perf_counter()
    result = task.evaluate(model, tokenizer, rows, config, desc="test")  # fp32, as the runner evaluates
    elapsed = time.perf_counter() - started
    print(f"base model test accuracy: {result.score:.4f} ({sum(result.per_item_correct)}/{len(rows)}), "
          f"evaluation {elapsed:.1f} s for {len(rows)} items")
    print("\nfirst completions (prompt, then what the base model writes):")
    for row, completion in list(zip(rows, result.predictions))[: args.count]:
        print(f"--- {row['query']}\n>>> {completion.strip()[:300]!r}")


def measure_seeds(args) -> None:
    """One experiment with several seeds, each in its own child process; mean and sd of test accuracy."""
    from peftbench.runners.isolated import run_request
    from peftbench.run.request import RunRequest

    scores = []
    for seed in args.seeds:
        path, status, _ = run_request(RunRequest(
            task="math-tiny", results_dir=str(args.results), experiment_dir=str(args.experiment), seed=seed,
            save_checkpoint=seed == args.seeds[0], num_threads=args.threads,
        ))
        data = json.loads(Path(path).read_text())["peftbench"]
        print(f"seed {seed}: {status}, test accuracy {data['test_score']:.4f}, valid {data['valid_score']}, "
              f"train {data['train_time_s']:.0f} s, total {data['total_time_s']:.0f} s")
        scores.append(data["test_score"])
    sd = statistics.stdev(scores) if len(scores) > 1 else float("nan")
    print(f"mean {statistics.mean(scores):.4f}, sd {sd:.4f} over seeds {args.seeds}")


def show_samples(args) -> None:
    """Greedy solutions of a trained adapter on the first test problems, next to the reference."""
    import torch
    from peftbench.adapter_loading import load_adapter_strictly

    task, config = default_config()
    torch.set_num_threads(args.threads)
    tokenizer = task.load_processor(config)
    model = load_adapter_strictly(task.load_model(config, "cpu"), args.checkpoint)
    rows = task.load_data(config).test[: args.count]
    result = task.evaluate(model, tokenizer, rows, config, desc="samples")
    for row, completion, correct in zip(rows, result.predictions, result.per_item_correct):
        print(f"Question: {row['query']}\nModel:     {completion.strip()!r}\nReference: {row['response']!r}\n"
              f"{'correct' if correct else 'WRONG'}\n")


def print_table(args) -> None:
    """Per result file: test accuracy, peak memory, checkpoint size, trainable params, times; then the suite's
    wall time estimated from the children's CPU seconds (load-robust) on `--workers` workers."""
    rows = []
    for path in sorted(Path(args.results).glob("*.json")):
        data = json.loads(path.read_text()).get("peftbench")
        if not data:
            continue
        rows.append(data)
    print("| experiment | status | precision | test acc | peak RSS train (MB) | checkpoint (KB) | trainable params "
          "| train s | total s | CPU s | forgetting |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for d in sorted(rows, key=lambda d: -(d.get("test_score") or 0)):
        mb = (d.get("peak_memory_train_bytes") or 0) / 2**20
        kb = (d.get("checkpoint_size_bytes") or 0) / 1024
        forgetting = d.get("forgetting")
        print(f"| {d['method']}/{d['name']} | {d['status']} | {d.get('precision')} | {d.get('test_score') or 0:.3f} "
              f"| {mb:.0f} | {kb:.0f} | {d.get('trainable_params')} | {d.get('train_time_s') or 0:.0f} "
              f"| {d.get('total_time_s') or 0:.0f} | {d.get('cpu_time_s') or 0:.0f} "
              f"| {forgetting if forgetting is None else f'{forgetting:.3f}'} |")
    cpu = [d.get("cpu_time_s") or 0.0 for d in rows]  # in suite order (the files sort like the experiments)
    workers_free = [0.0] * args.workers
    for seconds in cpu:  # the pool: each experiment goes to the first free worker
        first = workers_free.index(min(workers_free))
        workers_free[first] += seconds * args.cpu_factor
    print(f"\nCPU seconds of the {len(cpu)} children: {sum(cpu):.0f}; scaled by {args.cpu_factor} and scheduled on "
          f"{args.workers} workers in suite order: {max(workers_free):.0f} s wall (parent start-up not included)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    commands = parser.add_subparsers(dest="command", required=True)
    base = commands.add_parser("base", help="base model accuracy")
    base.add_argument("--count", type=int, default=3)
    base.add_argument("--rows", type=int, default=None, help="the first N test problems (default: all)")
    seeds = commands.add_parser("seeds", help="one experiment over several seeds")
    seeds.add_argument("experiment")
    seeds.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    seeds.add_argument("--results", default="results/seeds")
    samples = commands.add_parser("samples", help="generated solutions of a trained adapter")
    samples.add_argument("checkpoint")
    samples.add_argument("--count", type=int, default=5)
    table = commands.add_parser("table", help="markdown table of a results folder")
    table.add_argument("results")
    table.add_argument("--workers", type=int, default=2)
    table.add_argument("--cpu-factor", type=float, default=1.0,
                       help="seconds on the target CPU per CPU second measured here (calibration)")
    args = parser.parse_args()
    {"base": measure_base, "seeds": measure_seeds, "samples": show_samples, "table": print_table}[args.command](args)


if __name__ == "__main__":
    main()
