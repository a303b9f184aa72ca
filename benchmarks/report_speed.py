"""How long `peftbench report` takes: on the 63 published MetaMathQA results, and on a synthetic large
results folder (many experiments, 3 seeds each, per-item correctness) to see how the frontier, the
bootstrap noise checks and the HTML scale.

Usage: .venv/bin/python benchmarks/report_speed.py [N_EXPERIMENTS] (default 200)
"""

from __future__ import annotations

import io
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from peftbench.reporting import render_report
from peftbench.analysis.runs import load_results

PUBLISHED = Path(__file__).resolve().parents[1].parent / "shared" / "peft-method-comparison" / "MetaMathQA" / "results"
N_ITEMS = 1319  # GSM8K test size


def synthetic_results(folder: Path, n_experiments: int) -> None:
    rng = random.Random(0)
    for i in range(n_experiments):
        skill = rng.uniform(0.1, 0.6)
        memory = rng.uniform(18, 30) * 2**30
        for seed in range(3):
            correct = [int(rng.random() < skill) for _ in range(N_ITEMS)]
            result = {
                "run_info": {"experiment_name": f"method{i % 20}/config{i}", "peft_config": {"peft_type": "LORA"}},
                "train_info": {"status": "success", "metrics": []},
                "peftbench": {
                    "task": "math", "method": f"method{i % 20}", "name": f"config{i}", "seed": seed, "status": "success",
                    "test_score": sum(correct) / N_ITEMS, "per_item_correct": correct,
                    "peak_memory_train_bytes": memory + rng.uniform(0, 2**28), "train_time_s": rng.uniform(600, 1800),
                    "checkpoint_size_bytes": rng.randint(10**5, 10**9), "forgetting": rng.uniform(0, 0.3),
                    "train_curve": [{"step": s, "loss": 1 / (1 + s)} for s in range(0, 5000, 250)],
                },
            }  # fmt: skip
            (folder / f"method{i % 20}--config{i}--seed{seed}.json").write_text(json.dumps(result))


def timed(label: str, paths: list[Path], **options) -> None:
    started = time.perf_counter()
    comparison = render_report(paths, console=Console(file=io.StringIO(), width=200), **options)
    elapsed = time.perf_counter() - started
    print(f"{label:<48} {elapsed:6.2f} s  ({len(comparison.points)} points, {len(comparison.pair.frontier.frontier)} on the frontier)")


def main() -> None:
    n_experiments = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        if PUBLISHED.is_dir():
            started = time.perf_counter()
            load_results([PUBLISHED])
            print(f"{'load 63 published results':<48} {time.perf_counter() - started:6.2f} s")
            timed("published: terminal tables", [PUBLISHED])
            timed("published: --json", [PUBLISHED], json_out=True)
            timed("published: --html", [PUBLISHED], html=tmp_path / "published.html")
            timed("published: --png (2 plots)", [PUBLISHED], png_dir=tmp_path / "png", metrics=["test_score", "peak_memory", "forgetting"])
        synthetic = tmp_path / "synthetic"
        synthetic.mkdir()
        synthetic_results(synthetic, n_experiments)
        timed(f"synthetic {n_experiments} experiments x 3 seeds: terminal", [synthetic])
        timed(f"synthetic {n_experiments} experiments x 3 seeds: --html", [synthetic], html=tmp_path / "synthetic.html")
        print(f"HTML size for the synthetic set: {(tmp_path / 'synthetic.html').stat().st_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
