"""`peftbench sweep`: an equal-budget learning-rate sweep per method, then seeds at the chosen rate."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from peftbench.sweep.halving import DEFAULT_REDUCTION_FACTOR, DEFAULT_SIGNAL

HELP = (
    "Give every method the same learning-rate search, choose its rate on the VALIDATION score only, then run "
    "that rate with several seeds and report the test score as mean, sd and 95% bootstrap interval.\n\n"
    "Each trial is an ordinary result file RESULTS/<method>--<name>--lr<lr>--seed<s>.json; the summary is "
    "RESULTS/sweep-summary.json (\"default\" vs \"tuned\" per method, paired bootstrap against the reference).\n\n"
    "Running the same command again resumes: finished trials (success, diverged, oom) are kept; failed, "
    "cancelled and missing ones run again. Exit status 1 if any trial did not succeed.\n\n"
    "--halving stops hopeless rates early (Optuna's successive halving on the validation loss, or with "
    "--halving-signal score on the validation score, or score-then-loss: the score, equal scores ordered by the "
    "loss; every method the same rungs): a pruned trial's result says "
    "`pruned` at its step and it is never chosen nor run again. The rates are still chosen on the validation "
    "score at the end.\n\n"
    "Example: peftbench sweep src/peftbench/suites/quick/lora/rank16 src/peftbench/suites/quick/ia3/default "
    "--task math-tiny --lr-trials 3 --seeds 3 --set valid_size=100 --workers 2"
)


class Backend(str, Enum):
    local = "local"
    ray = "ray"


def register(app: typer.Typer) -> None:
    app.command("sweep", help=HELP)(sweep)


def sweep(
    experiments: Annotated[list[Path], typer.Argument(help="Experiment folders <method>/<name>/ (adapter_config.json, optional training_params.json).", show_default=False)],
    task: Annotated[str, typer.Option(help="Task to train and score on, e.g. math-tiny (see `peftbench list`), or a task file (my_task.yaml, docs/custom-task.md).")] = "math-tiny",
    lrs: Annotated[Optional[str], typer.Option(help="Explicit comma-separated learning rates, the same for every method, e.g. 1e-4,3e-4,1e-3. Excludes --lr-trials.")] = None,
    lr_trials: Annotated[Optional[int], typer.Option(help="Trials per method on a grid of factor 10^(1/2) around each method's configured rate (which is always included). Default 3.", min=1)] = None,
    seeds: Annotated[int, typer.Option(help="Seeds run at each method's chosen rate (configured seed + 1 ... + K).", min=1)] = 3,
    results: Annotated[Path, typer.Option(help="Folder for the trial result files and sweep-summary.json.")] = Path("results/sweep"),
    backend: Annotated[Backend, typer.Option(help="local: child processes on this machine; ray: Ray tasks (needs `pip install peftbench[ray]`).")] = Backend.local,
    workers: Annotated[int, typer.Option(help="Trials at once; CPU cores are split evenly between them (a phase of fewer trials shares all of them).", min=1)] = 1,
    ray_address: Annotated[Optional[str], typer.Option(help="Ray cluster to connect to (e.g. ray://head:10001 or auto); default: start a local Ray instance. The results folder must be on a filesystem all nodes share.")] = None,
    reference: Annotated[Optional[str], typer.Option(help="Experiment the others are compared with (method or method/name). Default: the first lora experiment.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override a training parameter for every trial, e.g. --set max_steps=100 (repeatable). The sweep sets the learning rate itself.")] = None,
    force: Annotated[bool, typer.Option(help="Run every trial again, even finished ones.")] = False,
    keep_killed: Annotated[bool, typer.Option("--keep-killed", help="Keep oom and killed trials instead of running them again.")] = False,
    save_checkpoint: Annotated[bool, typer.Option(help="Keep every trial's trained adapter.")] = False,
    halving: Annotated[bool, typer.Option("--halving", help="Successive halving of the search: at each rung a trial goes on only if its rung signal is in the best 1/reduction-factor of its method's trials there so far (Optuna's SuccessiveHalvingPruner).")] = False,
    halving_min_steps: Annotated[Optional[int], typer.Option(help="With --halving: the first rung, in training steps (then x reduction factor, ...). Default: the shortest max_steps / factor^3 (signal loss); eval_steps (signals score, score-then-loss).", min=1)] = None,
    halving_reduction_factor: Annotated[int, typer.Option(help="With --halving: at each rung about 1/this of the trials go on.", min=2)] = DEFAULT_REDUCTION_FACTOR,
    halving_signal: Annotated[str, typer.Option(help="With --halving: what the rungs compare. loss: the validation loss, measured at each rung (no generation; text tasks); score: the validation score, at validation steps (set eval_steps: --set eval_steps=N); score-then-loss: the score, equal scores ordered by the validation loss at the same step (text tasks; keeps the grid's choices more often, docs/sweep.md).")] = DEFAULT_SIGNAL,
) -> None:
    from rich.console import Console
    from rich.text import Text

    from peftbench.config import ConfigError
    from peftbench.results.writer import ResultWriteError
    from peftbench.sweep.run import run_sweep

    console = Console(stderr=True)
    try:
        plan, task_info = sweep_plan(experiments, task, lrs, lr_trials, seeds, results, reference, set_ or [],
                                     save_checkpoint, halving_settings(halving, halving_min_steps,
                                                                       halving_reduction_factor, halving_signal))
    except ConfigError as error:
        console.print(Text.assemble(("error: ", "red"), str(error)))
        raise typer.Exit(2) from None
    if plan.halving is not None:
        console.print(f"successive halving: rungs at {plan.halving.min_steps} steps x {plan.halving.reduction_factor}^k, "
                      f"decided on the {plan.halving.decided_on()}", markup=False)
    console.print(
        f"sweep {plan.sweep_id}: {len(plan.experiments)} experiments, {len(plan.search_trials())} search runs, then "
        f"{plan.seeds} seeds each at the chosen rate; backend {backend.value}, {workers} worker(s); results in {plan.results_dir}",
        markup=False,
    )
    try:
        run = run_sweep(plan, backend=backend.value, workers=workers, ray_address=ray_address, force=force,
                        keep_killed=keep_killed, higher_is_better=task_info.higher_is_better,
                        score_name=task_info.score_name)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]: finished trials are kept; run the same command again to resume.")
        raise typer.Exit(130) from None
    except ResultWriteError as error:  # the summary file (a trial's own is that trial's failure)
        console.print(f"error: {error}; the finished trials are kept: run the same command again to write it",
                      markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    Console().print(summary_table(run.summary))
    console.print(f"{len(run.ran)} trials run, {run.skipped} already finished; summary: {run.summary_path}", markup=False)
    if not run.summary.complete:
        failed = run.summary.not_successful
        console.print(f"[red]{len(failed)} trial(s) did not succeed:[/red]")
        for trial in failed:
            brief = trial.brief()
            console.print(f"  {brief['result_file']}: {brief['status']} {brief.get('error', '')}".rstrip(), markup=False)
        raise typer.Exit(1)


def halving_settings(halving: bool, min_steps: Optional[int], reduction_factor: int, signal: str = DEFAULT_SIGNAL):
    """The --halving options as sweep.halving.Halving, or None; its settings without --halving are an error."""
    from peftbench.config import ConfigError
    from peftbench.sweep.halving import Halving

    if not halving:
        if min_steps is not None or reduction_factor != DEFAULT_REDUCTION_FACTOR or signal != DEFAULT_SIGNAL:
            raise ConfigError("the --halving-* options need --halving")
        return None
    return Halving(min_steps, reduction_factor, signal)


def sweep_plan(experiments, task, lrs, lr_trials, seeds, results, reference, set_values, save_checkpoint,
               halving=None):
    """The sweep's plan and its task, checked before anything runs (ConfigError names what is wrong)."""
    from peftbench.config import ConfigError, parse_set_options
    from peftbench.sweep.plan import DEFAULT_LR_TRIALS, SweepPlan, parse_lrs, resolve_experiments
    from peftbench.tasks import get_task, resolve_task_name

    task = resolve_task_name(task)
    if lrs is not None and lr_trials is not None:
        raise ConfigError("give either --lrs or --lr-trials, not both")
    overrides = parse_set_options(set_values)
    task_info = get_task(task)
    plan = SweepPlan(
        task=task, experiments=resolve_experiments(experiments, task, overrides), results_dir=results,
        lrs=parse_lrs(lrs) if lrs is not None else None, lr_trials=lr_trials or DEFAULT_LR_TRIALS, seeds=seeds,
        overrides=overrides, reference=reference, save_checkpoint=save_checkpoint, halving=halving,
    )
    plan.check_before_running()
    return plan, task_info


def _number(value: Optional[float], digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def halving_text(entry) -> str:
    """A halving search of one experiment: which rates stopped where, and its share of the full grid's steps."""
    pruned = ", ".join(f"{_number(t.lr)}@{t.steps}" for t in entry.trials if t.status == "pruned") or "none pruned"
    steps = entry.search_steps
    share = f" ({steps['fraction']:.0%})" if steps["fraction"] is not None else ""
    return f"{pruned}; {steps['used']} of {steps['full_grid']} steps{share}"


def summary_table(summary):
    """A rich table of a sweep.summary.SweepSummary: default vs tuned per experiment, and the comparison with
    the reference."""
    from rich.table import Table
    from rich.text import Text

    score = summary.score_name
    table = Table(title_justify="left", title=Text(
        f"sweep {summary.plan.sweep_id} on {summary.plan.task}: test {score}; rates chosen on valid {score}; "
        f"tuned = mean ± sd [95% CI] (seeds); vs {summary.reference or 'reference'} = paired Δ [95% CI] P(better)"))
    halving = summary.plan.halving is not None
    columns = ("experiment", "default lr", "default test", "chosen lr", "tuned test", "vs reference")
    for column in columns + (("search: pruned lr@step, steps used",) if halving else ()):
        table.add_column(column, overflow="fold")
    for key, entry in summary.experiments.items():
        tuned = entry.tuned
        tuned_text = "-"
        if tuned.mean is not None:
            ci = f" [{_number(tuned.ci95[0])}, {_number(tuned.ci95[1])}]" if tuned.ci95 else ""
            tuned_text = f"{_number(tuned.mean)} ± {_number(tuned.sd)}{ci} ({tuned.n})"
        paired = entry.vs_reference.tuned if entry.vs_reference else None
        versus_text = "reference" if key == summary.reference else "-"
        if paired is not None and paired.error is None:
            versus_text = (f"{paired.mean_difference:+.3f} [{paired.ci95[0]:+.3f}, {paired.ci95[1]:+.3f}], "
                           f"{paired.probability_of_improvement:.2f}")
        default = entry.default
        cells = (
            key,
            _number(entry.experiment.default_lr),
            _number(default.test_score) if default.status == "success" else default.status,
            _number(entry.chosen_lr) if entry.chosen_lr is not None else "none: no trial succeeded with a valid score",
            tuned_text,
            versus_text,
        ) + ((halving_text(entry),) if halving else ())
        table.add_row(*(Text(cell) for cell in cells))  # Text: names are data, never rich markup
    return table
