"""The full learning-rate grid against the successive-halving sweep, on the same methods, rates and seeds.

    .venv/bin/python benchmarks/bench_halving.py --runs grid halving      # both, the quick suite's nine methods
    .venv/bin/python benchmarks/bench_halving.py --compare                 # the table from the two folders

Each run is one `run_sweep` into its own results folder (RESULTS/grid, RESULTS/halving), every trial run afresh;
the parent's wall time of each trial is recorded, and each run's timings are written to RESULTS/<run>/timing.json.
`--compare` prints, per method, the rate each run chose, the chosen rate's seed-mean test score with its sd (the
grid's noise), and for the search phase the training steps used (each trial's `steps` in its result file) and
the wall time; the machine's CPU and load averages are printed beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from peftbench.config import parse_set_options
from peftbench.runners.batch import TrialOutcome, execute_trial
from peftbench.runners.request import RunRequest
from peftbench.sweep.halving import DEFAULT_REDUCTION_FACTOR, Halving
from peftbench.sweep.plan import SweepPlan, resolve_experiments
from peftbench.sweep.run import run_sweep

QUICK = Path(__file__).resolve().parents[1] / "src" / "peftbench" / "suites" / "quick"
# validation rows for selection (the quick suite's folders have none), fewer test and forgetting rows so the nine
# methods x 4 rates fit an hour on two cores; validation every 32 of the 128 steps for both runs alike
DEFAULT_SETTINGS = ["valid_size=100", "test_size=200", "forgetting_size=20", "eval_steps=32"]


def quick_experiments() -> list[str]:
    return json.loads((QUICK / "order.json").read_text())["longest_first"]


class TimedExecutor:
    """The real trial executor, recording when each trial started and ended (seconds since the run began)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.trials: dict[str, dict] = {}

    def __call__(self, trial: RunRequest) -> TrialOutcome:
        begin = time.perf_counter() - self.start
        outcome = execute_trial(trial)
        self.trials[trial.trial_id] = {"role": trial.sweep.role, "start_s": begin,
                                       "end_s": time.perf_counter() - self.start, "status": outcome.status}
        return outcome


def run(kind: str, args, overrides: dict) -> None:
    experiments = resolve_experiments([QUICK / e for e in args.experiments], "math-tiny", overrides)
    halving = Halving(args.halving_min_steps, args.halving_reduction_factor) if kind == "halving" else None
    plan = SweepPlan("math-tiny", experiments, args.results / kind, lr_trials=args.lr_trials, seeds=args.seeds,
                     overrides=overrides, halving=halving)
    load_before = os.getloadavg()
    timer = TimedExecutor()
    sweep = run_sweep(plan, workers=args.workers, force=True, execute=timer, show_progress=False)
    wall = time.perf_counter() - timer.start
    timing = {"wall_s": wall, "load_before": load_before, "load_after": os.getloadavg(), "trials": timer.trials,
              "workers": args.workers, "ran": len(sweep.ran)}
    (plan.results_dir / "timing.json").write_text(json.dumps(timing, indent=1))
    print(f"{kind}: {wall:.0f} s wall, {len(sweep.ran)} trials, load {load_before} -> {os.getloadavg()}", flush=True)


def compare(results: Path) -> None:
    from peftbench.hardware import detect_hardware

    print(f"CPU: {detect_hardware('cpu').name}, {os.cpu_count()} cores")
    runs = {}
    for kind in ("grid", "halving"):
        summary = json.loads((results / kind / "sweep-summary.json").read_text())
        timing = json.loads((results / kind / "timing.json").read_text())
        search = [t for t in timing["trials"].values() if t["role"] != "seed"]
        steps = budget = 0
        for stem in timing["trials"]:
            own = json.loads((results / kind / f"{stem}.json").read_text())
            if timing["trials"][stem]["role"] == "seed":
                continue
            steps += own["peftbench"].get("steps") or 0
            budget += own["run_info"]["train_config"]["max_steps"]
        runs[kind] = summary
        print(f"{kind}: whole sweep {timing['wall_s']:.0f} s, search phase {max(t['end_s'] for t in search):.0f} s "
              f"({len(search)} trials), training steps of the search {steps} of {budget} ({steps / budget:.0%}); "
              f"load {timing['load_before']} -> {timing['load_after']}; halving settings: {summary.get('halving')}")
    print("\n| experiment | grid: chosen lr | grid: tuned test (mean ± sd) | halving: chosen lr | halving: tuned test "
          "(mean ± sd) | halving: trials pruned (lr@step) |")
    print("|---|---|---|---|---|---|")
    for key, grid in runs["grid"]["experiments"].items():
        halving = runs["halving"]["experiments"][key]
        pruned = ", ".join(f"{t['lr']:g}@{t.get('stopped_at_step')}" for t in halving["trials"] if t["status"] == "pruned")
        print(f"| {key} | {grid['chosen_lr']} | {grid['tuned']['mean']} ± {grid['tuned']['sd']} | {halving['chosen_lr']} "
              f"| {halving['tuned']['mean']} ± {halving['tuned']['sd']} | {pruned or '-'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", nargs="+", default=quick_experiments(), help="quick-suite <method>/<name>")
    parser.add_argument("--runs", nargs="*", choices=("grid", "halving"), default=[])
    parser.add_argument("--compare", action="store_true")
    parser.add_argument("--lr-trials", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--halving-min-steps", type=int, default=None, help="default: eval_steps")
    parser.add_argument("--halving-reduction-factor", type=int, default=DEFAULT_REDUCTION_FACTOR)
    parser.add_argument("--set", action="append", default=None, help="training parameter override, repeatable")
    parser.add_argument("--results", type=Path, default=Path("results/bench-halving"))
    args = parser.parse_args()
    overrides = parse_set_options(args.set if args.set is not None else DEFAULT_SETTINGS)
    for kind in args.runs:
        run(kind, args, overrides)
    if args.compare:
        compare(args.results)


if __name__ == "__main__":
    main()
