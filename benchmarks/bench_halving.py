"""The full learning-rate grid against the successive-halving sweep, on the same methods, rates and seeds.

    .venv/bin/python benchmarks/bench_halving.py --runs grid halving      # both, the quick suite's nine methods
    .venv/bin/python benchmarks/bench_halving.py --compare                 # the table from the two folders

Each run is one `run_sweep` into its own results folder (RESULTS/grid, RESULTS/halving), every trial run afresh;
the parent's wall time of each trial is recorded, and each run's timings are written to RESULTS/<run>/timing.json.
`--compare` prints, per method, the rate each run chose, the chosen rate's seed-mean test score with its sd (the
grid's noise), and for the search phase the training steps used (each trial's `steps` in its result file), the
children's CPU seconds (`cpu_time_s`, barely moved by other load) and the wall time; the machine's CPU and load
averages are printed beside them. `--replay MIN_STEPS:FACTOR ...` also applies the halving rule (the same Optuna
pruner, the same start order, one worker) to the grid's recorded validation curves: what a halving sweep with
those settings would have chosen, and its share of the grid's steps (the grid must validate at those rungs).
`--replay-synchronous MIN_STEPS:FACTOR ...` applies synchronous halving to the same curves instead (every rate to
a rung, then the best 1/FACTOR go on, the configured rate included): not a sweep option, a yardstick for what an
asynchronous rule gives up.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

from peftbench.config import parse_set_options
from peftbench.runners.batch import TrialOutcome, execute_trial
from peftbench.run.request import RunRequest
from peftbench.sweep.halving import DEFAULT_REDUCTION_FACTOR, DEFAULT_SIGNAL, SIGNALS, Halving
from peftbench.sweep.plan import SweepPlan, resolve_experiments
from peftbench.sweep.run import run_sweep
from peftbench.training.pruning import score_then_loss

QUICK = Path(__file__).resolve().parents[1] / "src" / "peftbench" / "suites" / "quick"
# validation rows for selection (the quick suite's folders have none; the generated score once, at the end), fewer
# test and forgetting rows so the nine methods x 4 rates fit on two cores; the validation loss every 16 of the 128
# steps for both runs alike (the halving search's rungs with the loss signal; the grid records it for --replay)
DEFAULT_SETTINGS = ["valid_size=100", "test_size=200", "forgetting_size=20", "valid_loss_steps=16"]


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
        self.trials[trial.result_stem] = {"role": trial.sweep.role, "start_s": begin,
                                       "end_s": time.perf_counter() - self.start, "status": outcome.status}
        return outcome


def sweep_plan(kind: str, args, overrides: dict) -> SweepPlan:
    experiments = resolve_experiments([QUICK / e for e in args.experiments], "math-tiny", overrides)
    halving = (Halving(args.halving_min_steps, args.halving_reduction_factor, args.halving_signal)
               if kind == "halving" else None)
    return SweepPlan("math-tiny", experiments, args.results / kind, lr_trials=args.lr_trials, seeds=args.seeds,
                     overrides=overrides, halving=halving)


def run(kind: str, args, overrides: dict) -> None:
    plan = sweep_plan(kind, args, overrides)
    load_before = os.getloadavg()
    timer = TimedExecutor()
    sweep = run_sweep(plan, workers=args.workers, force=not args.resume, execute=timer, show_progress=False)
    wall = time.perf_counter() - timer.start
    timing = {"wall_s": wall, "load_before": load_before, "load_after": os.getloadavg(), "trials": timer.trials,
              "workers": args.workers, "ran": len(sweep.ran)}
    (plan.results_dir / "timing.json").write_text(json.dumps(timing, indent=1))
    print(f"{kind}: {wall:.0f} s wall, {len(sweep.ran)} trials, load {load_before} -> {os.getloadavg()}", flush=True)


def grid_curves(args, overrides: dict):
    """The grid's summary, and per experiment its finished trials' own result fields by rate, in start order."""
    from peftbench.sweep.halving import start_order
    from peftbench.sweep.summary import build_summary

    grid = build_summary(sweep_plan("grid", args, overrides)).to_dict()
    trials = {}
    for key, entry in grid["experiments"].items():
        by_lr = {t["lr"]: t for t in entry["trials"] if t["status"] == "success"}
        if len(by_lr) < len(entry["trials"]):
            print(f"  {key}: {len(entry['trials']) - len(by_lr)} grid trial(s) not finished, left out")
        trials[key] = {lr: (by_lr[lr]["result_file"],
                            json.loads((args.results / "grid" / by_lr[lr]["result_file"]).read_text())["peftbench"])
                       for lr in start_order(list(by_lr), entry["default_lr"])}
    return grid, trials


def rung_signal(signal: str, own: dict, higher: bool) -> dict[int, float]:
    """Step -> the value the rule compares at that step, from a trial's recorded validation curves (as
    training.pruning.RungCheck reports them)."""
    losses = {point["step"]: point["loss"] for point in own["valid_loss_curve"]}
    if signal == "loss":
        return losses
    scores = {point["step"]: point["score"] for point in own["valid_curve"]}
    if signal == "score":
        return scores
    return {step: score_then_loss(score, losses[step], higher) for step, score in scores.items()}


def replayed_choice(trials: dict, stopped: dict[float, int], entry: dict, higher_is_better: bool):
    """The rate a replay chooses (the sweep's own rule, over the trials it did not stop), and its training steps
    and the grid's: `trials` lr -> (result file, result fields), `stopped` lr -> the step it stopped at."""
    from peftbench.sweep.selection import TrialRecord, choose_lr

    records = [TrialRecord(Path(result_file), lr, 0, "pruned" if lr in stopped else "success",
                           valid_score=own["valid_score"]) for lr, (result_file, own) in trials.items()]
    used = sum(stopped.get(lr, own["steps"]) for lr, (_, own) in trials.items())
    return choose_lr(records, entry["default_lr"], higher_is_better), used, sum(own["steps"] for _, own in trials.values())


def replay(args, overrides: dict, min_steps: int, factor: int) -> None:
    """The halving rule on the grid's validation curves (of the loss or the score, --halving-signal), as a
    one-worker halving sweep would meet them (the grid's finished trials so far)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    grid, trials = grid_curves(args, overrides)
    used = budget = 0
    ties = " (ties broken by the validation loss at the same step)" if args.halving_signal == "score-then-loss" else ""
    print(f"\nreplay of the {args.halving_signal} signal on the grid's curves{ties}, rungs at {min_steps} x {factor}^k:")
    for key, entry in grid["experiments"].items():
        higher = args.halving_signal != "loss" and grid["higher_is_better"]
        study = optuna.create_study(direction="maximize" if higher else "minimize",
                                    pruner=optuna.pruners.SuccessiveHalvingPruner(min_steps, factor))
        stopped = {}
        for lr, (_, own) in trials[key].items():
            trial = study.ask()
            for step, value in sorted(rung_signal(args.halving_signal, own, higher).items()):
                trial.report(value, step)
                if step < own["steps"] and trial.should_prune():
                    stopped[lr] = step
                    break
        chosen, used_here, budget_here = replayed_choice(trials[key], stopped, entry, grid["higher_is_better"])
        used, budget = used + used_here, budget + budget_here
        stops = ", ".join(f"{lr:g}@{stopped[lr]}" if lr in stopped else f"{lr:g} to the end" for lr in trials[key])
        print(f"  {key}: {stops}; chosen {chosen} (grid: {entry['chosen_lr']})")
    print(f"  steps {used} of {budget} ({used / max(budget, 1):.0%})")


def replay_synchronous(args, overrides: dict, min_steps: int, factor: int) -> None:
    """Synchronous successive halving on the grid's curves, for comparison with the asynchronous rule the sweep
    uses: every rate of an experiment trains to a rung, then the best 1/factor of them (at least one) go on, the
    others stop there, the configured rate included. Not something the sweep can do (Optuna's pruner decides
    each trial as it reaches a rung, and a paused trial would have to be resumed in a new child); it shows what
    deciding with all of a rung's values at hand would choose, and at what share of the steps."""
    grid, trials = grid_curves(args, overrides)
    used = budget = 0
    print(f"\nsynchronous halving on the grid's curves, the {args.halving_signal} signal, rungs at {min_steps} x "
          f"{factor}^k:")
    for key, entry in grid["experiments"].items():
        higher = args.halving_signal != "loss" and grid["higher_is_better"]
        values = {lr: rung_signal(args.halving_signal, own, higher) for lr, (_, own) in trials[key].items()}
        max_steps = min(own["steps"] for _, own in trials[key].values())
        alive, stopped, step = list(trials[key]), {}, min_steps
        while step < max_steps and len(alive) > 1:
            missing = [lr for lr in alive if step not in values[lr]]
            if missing:
                raise SystemExit(f"{key}: the grid recorded no {args.halving_signal} signal at step {step} (rates "
                                 f"{missing}); replay at the grid's validation steps")
            ranked = sorted(alive, key=lambda lr: values[lr][step], reverse=higher)  # stable: start order on ties
            alive = ranked[:max(1, len(ranked) // factor)]
            stopped.update({lr: step for lr in ranked[len(alive):]})
            step *= factor
        chosen, used_here, budget_here = replayed_choice(trials[key], stopped, entry, grid["higher_is_better"])
        used, budget = used + used_here, budget + budget_here
        stops = ", ".join(f"{lr:g}@{at}" for lr, at in stopped.items())
        print(f"  {key}: stopped {stops or '-'}; chosen {chosen} (grid: {entry['chosen_lr']})")
    print(f"  steps {used} of {budget} ({used / max(budget, 1):.0%})")


def compare(args, overrides: dict) -> None:
    """Both runs from their result files (a run still going: its finished trials so far)."""
    from peftbench.hardware import detect_hardware
    from peftbench.results.reader import read_result_file
    from peftbench.sweep.summary import build_summary

    print(f"CPU: {detect_hardware('cpu').name}, {os.cpu_count()} cores; load now {os.getloadavg()}")
    summaries = {}
    for kind in ("grid", "halving"):
        plan = sweep_plan(kind, args, overrides)
        summaries[kind] = build_summary(plan).to_dict()
        timing_file = plan.results_dir / "timing.json"
        timing = json.loads(timing_file.read_text()) if timing_file.exists() else None
        steps = budget = cpu = 0
        finished, ends = 0, []
        for trial in plan.search_trials():
            read = read_result_file(trial.result_file())
            if read.result is None or read.status in (None, "cancelled", "failed"):
                continue
            finished += 1
            steps += read.result.steps
            budget += read.result.train_config["max_steps"]
            cpu += read.result.extra.get("cpu_time_s") or 0
            ends.append(trial.result_file().stat().st_mtime)
        if timing is not None:
            # a resumed run times only what it ran (none of the search, when resumed for its seeds)
            search_wall = max((t["end_s"] for t in timing["trials"].values() if t["role"] != "seed"), default=math.nan)
            whole = f"whole sweep {timing['wall_s']:.0f} s, load {timing['load_before']} -> {timing['load_after']}"
        else:
            search_wall = max(ends) - args.started if ends and args.started else float("nan")
            whole = "still running"
        print(f"{kind}: {finished} of {len(plan.search_trials())} search trials finished, search phase "
              f"{search_wall:.0f} s wall, {cpu:.0f} CPU s in the children, training steps {steps} of {budget} "
              f"({steps / max(budget, 1):.0%}); {whole}")
    print(f"halving: {summaries['halving']['halving']}")
    print("\n| experiment | grid: valid score by lr | grid: chosen lr | halving: chosen lr | halving: pruned (lr@step) "
          "| test score at the chosen lr, grid / halving (seed runs: mean ± sd) |")
    print("|---|---|---|---|---|---|")
    for key, grid in summaries["grid"]["experiments"].items():
        halving = summaries["halving"]["experiments"][key]
        valid = ", ".join(f"{t['lr']:g}: {t['valid_score']}" for t in grid["trials"])
        pruned = ", ".join(f"{t['lr']:g}@{t['steps']}" for t in halving["trials"] if t["status"] == "pruned")
        tests = " / ".join(f"{e['tuned']['mean']} ± {e['tuned']['sd']}" for e in (grid, halving))
        print(f"| {key} | {valid} | {grid['chosen_lr']} | {halving['chosen_lr']} | {pruned or '-'} | {tests} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", nargs="+", default=quick_experiments(), help="quick-suite <method>/<name>")
    parser.add_argument("--runs", nargs="*", choices=("grid", "halving"), default=[])
    parser.add_argument("--compare", action="store_true")
    parser.add_argument("--resume", action="store_true",
                        help="with --runs: keep the finished trials of an earlier run (its timing.json then covers "
                             "this part only)")
    parser.add_argument("--replay", nargs="*", default=[], metavar="MIN_STEPS:FACTOR")
    parser.add_argument("--replay-synchronous", nargs="*", default=[], metavar="MIN_STEPS:FACTOR",
                        help="synchronous halving on the grid's curves (not a sweep option: for comparison)")
    parser.add_argument("--lr-trials", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--halving-min-steps", type=int, default=None,
                        help="default: max_steps / factor^3 (signal loss), eval_steps (signal score)")
    parser.add_argument("--halving-signal", choices=SIGNALS, default=DEFAULT_SIGNAL)
    parser.add_argument("--halving-reduction-factor", type=int, default=DEFAULT_REDUCTION_FACTOR)
    parser.add_argument("--set", action="append", default=None, help="training parameter override, repeatable")
    parser.add_argument("--results", type=Path, default=Path("results/bench-halving"))
    parser.add_argument("--started", type=float, default=None,
                        help="epoch seconds both runs started at: a search phase's wall time while its run goes on")
    args = parser.parse_args()
    overrides = parse_set_options(args.set if args.set is not None else DEFAULT_SETTINGS)
    for kind in args.runs:
        run(kind, args, overrides)
    if args.compare:
        compare(args, overrides)
    for setting in args.replay:
        replay(args, overrides, *map(int, setting.split(":")))
    for setting in args.replay_synchronous:
        replay_synchronous(args, overrides, *map(int, setting.split(":")))


if __name__ == "__main__":
    main()
