"""`peftbench run`: train and evaluate experiment folders, one child process each, one result file each."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

RUN_HELP = """Train and evaluate each EXPERIMENT folder on a task and write RESULTS/<method>--<name>.json.

An experiment folder is <method>/<name>/ with adapter_config.json (any peft config, as written by save_pretrained; none means full fine-tuning) and optionally training_params.json (overrides of the task's defaults). The PEFT suite's method_comparison folders run unchanged.

Each experiment runs in its own child process: a crash or out-of-memory in one is recorded in its result (status failed / oom) and the others still run; the command then exits with code 1. An existing result is skipped unless --force (failed, cancelled, oom and killed results are run again; --keep-killed keeps oom and killed ones). Before any training, every experiment is checked, two folders that would write the same result file are refused, and the results folder must take a real file write. With --seed N the file is <method>--<name>--seed<N>.json. Ctrl-C, SIGTERM and SIGHUP stop after writing a `cancelled` result. The trained adapter is saved under RESULTS/checkpoints/<method>--<name>/ unless --no-save.

Example: peftbench run experiments/lora/rank32 --task math-tiny --set max_steps=20 --set optimizer_kwargs.lr=1e-3
"""


def run(
    experiments: list[Path] = typer.Argument(..., help="Experiment folders (<method>/<name>/).", show_default=False),
    task: Optional[str] = typer.Option(
        None, "--task", "-t", help="Task name (see `peftbench list`) or a task file (my_task.yaml, see docs/custom-task.md). "
        "Default: math-tiny, the offline tiny benchmark."
    ),
    results: Path = typer.Option(Path("results"), "--results", "-r", help="Folder for result files and checkpoints."),
    set_values: list[str] = typer.Option(
        [], "--set", "-s", metavar="KEY=VALUE",
        help="Override one training parameter, e.g. --set max_steps=20. Values are JSON where they parse; "
        "optimizer_kwargs.lr=1e-3 sets one key of a nested dict. Repeatable.",
    ),
    seed: Optional[int] = typer.Option(
        None, "--seed", help="Random seed (default: the config's `seed`, 0). Given, it adds --seed<N> to the result name."
    ),
    force: bool = typer.Option(False, "--force", help="Run again even when a result file exists (replaces it)."),
    keep_killed: bool = typer.Option(
        False, "--keep-killed", help="Keep existing oom and killed results instead of running them again."
    ),
    no_save: bool = typer.Option(False, "--no-save", help="Do not keep the trained adapter (its size is still measured)."),
    num_threads: Optional[int] = typer.Option(None, "--threads", help="Torch CPU threads per run (default: torch's)."),
    harness_tasks: Optional[str] = typer.Option(
        None, "--harness-tasks", metavar="TASK,...",
        help="lm-evaluation-harness tasks (e.g. hellaswag,arc_easy) to run after training, with the adapter active "
        "and disabled; scores and differences go into the result. Needs pip install 'peftbench[harness]'. "
        "Default: the task file's harness_tasks, if any.",
    ),
    harness_include: Optional[Path] = typer.Option(
        None, "--harness-include", help="A folder of your own lm-eval task YAMLs (lm-eval's --include_path)."
    ),
    harness_limit: Optional[int] = typer.Option(
        None, "--harness-limit", min=1, help="At most this many items per harness task (lm-eval's --limit)."
    ),
) -> None:
    from rich.console import Console
    from rich.markup import escape

    from peftbench.config import ConfigError, parse_set_options
    from peftbench.runners.batch import run_trials
    from peftbench.run.plan import plan_batch
    from peftbench.run.request import RunRequest
    from peftbench.tasks import DEFAULT_TASK, available_tasks, get_task, resolve_task_name

    console = Console(stderr=True)
    task_name = resolve_task_name(task or (DEFAULT_TASK if DEFAULT_TASK in available_tasks() else "math"))
    try:
        task_label = get_task(task_name).name
        overrides = parse_set_options(set_values)
        harness = harness_request(harness_tasks, harness_include, harness_limit)
        plans = plan_batch([
            RunRequest(
                task=task_name, results_dir=str(results.resolve()), experiment_dir=str(experiment.resolve()),
                overrides=overrides, seed=seed, num_threads=num_threads, harness=harness, force=force,
                keep_killed=keep_killed, save_checkpoint=not no_save,
            )
            for experiment in experiments
        ])
    except ConfigError as error:
        console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
        raise typer.Exit(2)

    outcomes = []
    requests = [plan.request for plan in plans]
    try:
        # one at a time, in this thread, with the child's own progress bars (and a warm fork: runners.isolated)
        run_trials(requests, workers=1, execute=_announced(console, task_label, plans), on_done=outcomes.append,
                   description="run", show_progress=False, share_cores=False)
    except KeyboardInterrupt:
        console.print("[yellow]cancelled[/]: finished results are kept; rerun to continue")
        _print_summary(console, requests, outcomes)
        raise typer.Exit(130)
    _print_summary(console, requests, outcomes)
    if any(outcome.unfinished for outcome in outcomes):
        raise typer.Exit(1)


def _announced(console, task_label: str, plans):
    """The executor of the planned runs (each run as planned, not planned again), with a header line before each
    experiment and an error line after a failure."""
    from rich.markup import escape

    from peftbench.printable import printable
    from peftbench.runners.batch import execute_planned
    from peftbench.runners.trial import guarded

    planned = {plan.request.result_stem: plan for plan in plans}

    def run_as_planned(request):
        return execute_planned(planned[request.result_stem].handed_on(request))

    def execute(request):
        method, name = request.names
        console.rule(escape(printable(f"{method}/{name} on {task_label}")))
        outcome = guarded(run_as_planned, request)
        if outcome.skipped:
            console.print(printable(f"skip {method}/{name}: {outcome.result_path} exists ({outcome.status}); "
                                    "--force reruns"), markup=False)
        elif outcome.error:
            console.print(f"[bold red]error:[/] {escape(outcome.error)}", highlight=False)
        return outcome

    return execute


def harness_request(tasks: Optional[str], include: Optional[Path], limit: Optional[int]) -> dict:
    """The --harness-* options as a RunRequest's `harness` (empty: the task file's, if any)."""
    from peftbench.config import ConfigError
    from peftbench.tasks.task_file import parse_harness_tasks

    names = parse_harness_tasks(tasks, "--harness-tasks")
    if not names:
        if include is not None or limit is not None:
            raise ConfigError("--harness-include and --harness-limit need --harness-tasks")
        return {}
    if include is not None and not include.exists():
        raise ConfigError(f"--harness-include: not found: {include} (a folder of lm-eval task YAMLs)")
    return {"tasks": names, "include_path": str(include.resolve()) if include else None, "limit": limit}


def _print_summary(console, requests, outcomes) -> None:
    """One line per experiment that ran or was skipped. Result files are read as untrusted data: a value that
    is missing, malformed or out of range shows as blank."""
    from rich.table import Table
    from rich.text import Text

    from peftbench.printable import printable
    from peftbench.results.reader import read_result_file
    from peftbench.results.record import RunResult

    names = {request.result_stem: "/".join(request.names) for request in requests}
    table = Table(title="peftbench run")
    for column in ("experiment", "status", "test score", "train time (s)", "result / error"):
        table.add_column(column, overflow="fold")  # a path or an error cut short would not say where or what
    for outcome in outcomes:
        status = "skipped" if outcome.skipped else outcome.status
        result = (read_result_file(outcome.result_path).result if outcome.result_path else None) or RunResult()
        score, train_time = result.test_score, result.train_time_s
        note = outcome.error or None
        if result.error_msg.strip():
            note = result.error_msg.strip().splitlines()[-1][:120]
        style = {"success": "green", "skipped": "dim"}.get(status, "red")
        table.add_row(
            Text(printable(names[outcome.result_stem])), Text(status, style=style),
            f"{score:.3f}" if score is not None and abs(score) < 1e6 else "",
            f"{train_time:.1f}" if train_time is not None and abs(train_time) < 1e9 else "",
            Text(printable(str(note or outcome.result_path or ""))),
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("run", help=RUN_HELP)(run)
