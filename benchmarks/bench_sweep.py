"""Measure sweeps on math-tiny: default vs tuned ranking and spread, runner overhead per trial, 1 vs 2 workers.

    .venv/bin/python benchmarks/bench_sweep.py                       # defaults below (~15 trials per sweep)
    .venv/bin/python benchmarks/bench_sweep.py --workers 1 2 --set max_steps=120

For each worker count it runs the same sweep (quick-suite experiments, `--lr-trials` rates, `--seeds`
seeds) into its own results folder and prints:
- per experiment: configured rate, its test score (default), chosen rate, tuned test mean ± sd;
- the default and the tuned ranking, and the spread (best - worst) of test scores before and after tuning;
- per trial, the parent's wall time against the child's training and evaluation time: the rest is runner
  overhead (child process start, imports, data and model load, forgetting measure, writing the result);
- the sweep's wall time.
Numbers are printed, never assumed; the load average is printed too, because other work on the
machine changes them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from peftbench.config import parse_set_options
from peftbench.runners.batch import TrialOutcome, execute_trial
from peftbench.run.request import RunRequest
from peftbench.sweep.plan import SweepPlan, resolve_experiments
from peftbench.sweep.run import run_sweep

QUICK = Path(__file__).resolve().parents[1] / "src" / "peftbench" / "suites" / "quick"
DEFAULT_EXPERIMENTS = ["lora/rank16", "ia3/default", "loha/rank16"]
# shortened so a whole comparison fits in minutes on 2 CPU cores (math-tiny's own defaults: 240 steps, 1000 test)
DEFAULT_SETTINGS = ["max_steps=80", "eval_steps=80", "valid_size=100", "test_size=200", "forgetting_size=50"]


class TimedExecutor:
    """Wraps the real trial executor and records the parent's wall time of each trial."""

    def __init__(self) -> None:
        self.wall_s: dict[str, float] = {}

    def __call__(self, trial: RunRequest) -> TrialOutcome:
        start = time.perf_counter()
        outcome = execute_trial(trial)
        self.wall_s[trial.result_stem] = time.perf_counter() - start
        return outcome


def overhead_rows(results_dir: Path, wall_s: dict[str, float]) -> list[dict]:
    rows = []
    for trial_id, wall in sorted(wall_s.items()):
        own = json.loads((results_dir / f"{trial_id}.json").read_text())["peftbench"]
        train, evaluation = own.get("train_time_s"), own.get("eval_time_s")
        if train is None or evaluation is None:
            continue
        rows.append({"trial": trial_id, "wall_s": wall, "train_s": train, "eval_s": evaluation,
                     "overhead_s": wall - train - evaluation, "child_total_s": own.get("total_time_s")})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", nargs="+", default=DEFAULT_EXPERIMENTS, help="quick-suite <method>/<name>")
    parser.add_argument("--lr-trials", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--set", action="append", default=None, help="training parameter override, repeatable")
    parser.add_argument("--results", type=Path, default=Path("results/bench-sweep"))
    args = parser.parse_args()

    overrides = parse_set_options(args.set if args.set is not None else DEFAULT_SETTINGS)
    experiments = resolve_experiments([QUICK / e for e in args.experiments], "math-tiny", overrides)
    print(f"machine: {os.cpu_count()} CPU cores; load average at start {os.getloadavg()[0]:.1f}")
    print(f"experiments: {', '.join(args.experiments)}; {args.lr_trials} rates x {args.seeds} seeds; "
          f"overrides {json.dumps(overrides)}")

    for workers in args.workers:
        results = args.results / f"workers{workers}"
        plan = SweepPlan("math-tiny", experiments, results, lr_trials=args.lr_trials, seeds=args.seeds,
                         overrides=overrides)
        timer = TimedExecutor()
        start = time.perf_counter()
        run = run_sweep(plan, workers=workers, force=True, execute=timer)
        wall = time.perf_counter() - start
        summary = run.summary.to_dict()
        print(f"\n== {workers} worker(s): sweep wall time {wall:.0f} s for {len(run.ran)} trials "
              f"(load average now {os.getloadavg()[0]:.1f}) ==")
        for key, entry in summary["experiments"].items():
            tuned = entry["tuned"]
            default_score = entry["default"]["test_score"]
            print(f"{key:22s} default lr {entry['default_lr']:<8g} test {default_score if default_score is not None else '-'}"
                  f" | valid by lr {[(t['lr'], t['valid_score']) for t in entry['trials']]}"
                  f" | chosen lr {entry['chosen_lr']} tuned test {tuned['mean']} ± {tuned['sd']} (n={tuned['n']})")
        print(f"ranking default: {summary['ranking']['default']}")
        print(f"ranking tuned:   {summary['ranking']['tuned']}")
        print(f"spread of test scores (best - worst): default {summary['spread']['default']}, "
              f"tuned {summary['spread']['tuned']}")
        rows = overhead_rows(results, timer.wall_s)
        if rows:
            for name in ("wall_s", "train_s", "eval_s", "overhead_s"):
                print(f"per trial {name:10s} median {statistics.median(r[name] for r in rows):6.1f} s  "
                      f"min {min(r[name] for r in rows):6.1f}  max {max(r[name] for r in rows):6.1f}")


if __name__ == "__main__":
    main()
