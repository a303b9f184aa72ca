"""math-tiny's validity with each config's rate chosen by an equal-budget sweep, against the common scale (issue 28).

    .venv/bin/python benchmarks/bench_validity_lr_sweep.py --work results/validity-lr-sweep --half choose
    .venv/bin/python benchmarks/bench_validity_lr_sweep.py --work results/validity-lr-sweep --half choose --analyse

The validity recipe's runs (120 steps, 300 test problems, the published configs of one half of the method split)
become a `peftbench sweep`: each config's folder is copied with its scaled rate (the protocol's `scaled` policy:
published rate x 20) as its configured rate, and the sweep tries that rate x 10^(-1/2, 0, 1/2) on seed 0, chooses
on the validation accuracy (100 problems; ties go to the scaled rate), then runs seed 1 at the chosen rate. Every
config gets the same three rates and the same rule: an equal budget.

`--analyse` reads the sweep's result files into two validity folders and analyses both as `peftbench validate`
does: `scaled` (the search trials at the scaled rate, seed 0: the scaled policy, one seed) and `sweep` (the
chosen rate's search trial, seed 0, and its seed-1 run). Both are ranked by the final train loss (the protocol's
measure); the paired bootstrap of the Spearman difference (sweep, seed 0 only, minus scaled: one seed each, the
same configs and resamples) is what decides, on the choose half.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import numpy as np

from peftbench.validity.agreement import half_of
from peftbench.validity.protocol import (PUBLISHED_METAMATHQA, PUBLISHED_METAMATHQA_EXPERIMENTS, RECIPE_FILE, Recipe,
                                         analyse, plan_runs, read_reference)

TASK = "math-tiny"
STEPS, TEST_SIZE, VALID_SIZE, LR_TRIALS = 120, 300, 100, 3


def scaled_copies(work: Path, half: str) -> tuple[list[Path], dict]:
    """Copies of the half's published configs with the scaled rate as their own; the overrides every run shares."""
    recipe = Recipe(task=TASK, seeds=(0,), steps=STEPS, test_size=TEST_SIZE, lr_policy="scaled")
    requests = plan_runs(recipe, PUBLISHED_METAMATHQA_EXPERIMENTS, work / "scaled-configs",
                         read_reference(PUBLISHED_METAMATHQA))
    folders, shared = [], None
    for request in requests:
        source = Path(request.experiment_dir)
        method, name = source.parent.name, source.name
        if half != "both" and half_of(method) != half:
            continue
        overrides = dict(request.overrides)
        lr = float(f'{overrides.pop("optimizer_kwargs")["lr"]:.6g}')  # 20 x 1e-3 is 0.019999999999999997
        shared = shared or {**overrides, "valid_size": VALID_SIZE}  # the same for every config (pinned and fixed)
        target = work / "configs" / method / name
        if not target.exists():
            shutil.copytree(source, target)
            params_file = target / "training_params.json"
            params = json.loads(params_file.read_text()) if params_file.exists() else {}
            params["optimizer_kwargs"] = {**params.get("optimizer_kwargs", {}), "lr": lr}
            params_file.write_text(json.dumps(params, indent=2))
        folders.append(target)
    return folders, shared


def sweep_plan(work: Path, half: str):
    from peftbench.sweep.plan import SweepPlan, resolve_experiments

    folders, shared = scaled_copies(work, half)
    experiments = resolve_experiments(folders, TASK, shared)
    return SweepPlan(TASK, experiments, work / "sweep", lr_trials=LR_TRIALS, seeds=1, overrides=shared)


def link(result: Path, folder: Path) -> None:
    """A hard link to `result` in `folder`; not for a run that trained no parameter (one made before such configs
    were refused, training.methods.wrap_model: it measured the base model)."""
    own = json.loads(result.read_text())["peftbench"]
    if own.get("status") == "success" and own.get("trainable_params") == 0:
        print(f"left out, trained no parameter (refused now): {result.name}")
        return
    target = folder / result.name
    if not target.exists():
        os.link(result, target)


def build_folders(plan, work: Path) -> tuple[Path, Path, dict]:
    """The two validity folders (hard links to the sweep's result files) and config -> (scaled, chosen) rate."""
    from peftbench.sweep.selection import chosen_lrs

    scaled, swept = work / "scaled", work / "sweep-chosen"
    rates = {}
    chosen = chosen_lrs(plan, higher_is_better=True)
    for folder, policy in ((scaled, "scaled"), (swept, "sweep")):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        recipe = Recipe(task=TASK, seeds=(0,) if policy == "scaled" else (0, 1), steps=STEPS, test_size=TEST_SIZE,
                        lr_policy=policy, lr_from=str(plan.results_dir / "sweep-summary.json") if policy == "sweep" else None,
                        overrides={"valid_size": VALID_SIZE})
        (folder / RECIPE_FILE).write_text(json.dumps(recipe.to_dict(), indent=2))
    for experiment in plan.experiments:
        default = plan.result_path(experiment, experiment.default_lr, experiment.default_seed)
        if default.exists():
            link(default, scaled)
        lr = chosen[experiment.key]
        rates[experiment.key] = (experiment.default_lr, lr)
        if lr is None:
            continue
        for seed in (experiment.default_seed, *plan.seed_list(experiment)):
            path = plan.result_path(experiment, lr, seed)
            if path.exists():
                link(path, swept)
    return scaled, swept, rates


def paired_difference(a, b, n_resamples: int = 2000) -> tuple[float, float, float]:
    """Spearman(a) - Spearman(b) against the reference over the configs both rank, with a paired percentile
    bootstrap over configs (the same resamples for both)."""
    from scipy.stats import spearmanr

    scores_a = {row.config: row.scores for row in a.rows}
    common = [row for row in b.rows if 0 in row.scores and 0 in scores_a.get(row.config, {})]
    x = np.array([-scores_a[row.config][0] for row in common])  # lower loss ranks higher
    y = np.array([-row.scores[0] for row in common])
    ref = np.array([row.reference for row in common])
    point = spearmanr(x, ref).statistic - spearmanr(y, ref).statistic
    rng = np.random.default_rng(0)
    draws = []
    for _ in range(n_resamples):
        i = rng.integers(0, len(common), len(common))
        if np.ptp(ref[i]) == 0:
            continue
        draws.append(spearmanr(x[i], ref[i]).statistic - spearmanr(y[i], ref[i]).statistic)
    low, high = np.nanquantile(draws, [0.025, 0.975])
    return float(point), float(low), float(high)


def trial_table(plan, rates: dict) -> None:
    """Per config: each rate's validation accuracy and final train loss (seed 0), the one chosen in bold."""
    from peftbench.results.reader import read_result_file
    print("\n| config | half | rate: valid accuracy / final train loss (seed 0) | chosen |\n|---|---|---|---|")
    for experiment in plan.experiments:
        cells = []
        for lr in plan.grid(experiment):
            path = plan.result_path(experiment, lr, experiment.default_seed)
            result = read_result_file(path).result if path.exists() else None
            if result is None:
                cells.append(f"{lr:.3g}: not run")
                continue
            text = (f"{lr:.3g}: {result.valid_score or 0:.2f} / {result.final_train_loss:.3f}"
                    if result.status == "success" else f"{lr:.3g}: {result.status}")
            cells.append(f"**{text}**" if lr == rates[experiment.key][1] else text)
        chosen = rates[experiment.key][1]
        moved = "" if chosen is None or chosen == experiment.default_lr else " (moved)"
        print(f"| {experiment.key} | {half_of(experiment.method)} | {'; '.join(cells)} | "
              f"{'none' if chosen is None else f'{chosen:.3g}'}{moved} |")


def report(plan, work: Path) -> None:
    scaled, swept, rates = build_folders(plan, work)
    trial_table(plan, rates)
    reports = {}
    chosen = [key for key, (_, lr) in rates.items() if lr is not None]
    seed_runs = sum(1 for path in swept.glob("*--seed1.json"))
    both_seeds = (("sweep, seeds 0+1", swept, None),) if seed_runs >= len(chosen) else ()
    if not both_seeds:
        print(f"seed 1 at the chosen rate: {seed_runs} of {len(chosen)} configs run; the seed-0 figures only")
    for label, folder, seeds in (("scaled, seed 0", scaled, (0,)), ("sweep, seed 0", swept, (0,)), *both_seeds):
        reports[label] = analyse(TASK, folder, PUBLISHED_METAMATHQA, seeds=seeds)
        r = reports[label]
        line = ", ".join(f"{half} {a.spearman.text()} (n={a.n})" for half, a in r.agreement["all"].items())
        learn = r.agreement["learn"]["both"]
        print(f"{label}: Spearman by final train loss: {line}; learns {r.n_learn} of {len(r.rows)} "
              f"(among them {learn.spearman.text()})")
    moved = {key: pair for key, pair in rates.items() if pair[1] is not None and pair[1] != pair[0]}
    print(f"chosen rate differs from the scaled one for {len(moved)} of {len(rates)} configs:")
    for key, (default, lr) in sorted(moved.items()):
        print(f"  {key}: {default:.3g} -> {lr:.3g}")
    diff = paired_difference(reports["sweep, seed 0"], reports["scaled, seed 0"])
    print(f"paired Spearman difference, sweep - scaled (seed 0 each): {diff[0]:+.2f} [{diff[1]:+.2f}, {diff[2]:+.2f}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--half", choices=("choose", "report", "both"), default="choose")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--analyse", action="store_true", help="only read the results so far")
    args = parser.parse_args()
    plan = sweep_plan(args.work.resolve(), args.half)
    if not args.analyse:
        from peftbench.sweep.run import run_sweep

        print(f"{len(plan.experiments)} configs x {LR_TRIALS} rates, then seed 1 at the chosen rate", flush=True)
        run_sweep(plan, workers=args.workers, show_progress=True)
    report(plan, args.work.resolve())


if __name__ == "__main__":
    main()
