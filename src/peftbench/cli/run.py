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
    from peftbench.printable import printable
    from peftbench.results.writer import ResultWriteError, check_writable
    from peftbench.runners.execute import RunRequest, check_distinct_result_files, prepare
    from peftbench.runners.local import existing_status, run_experiment, should_skip
    from peftbench.tasks import DEFAULT_TASK, available_tasks, resolve_task_name

    console = Console(stderr=True)
    task_name = resolve_task_name(task or (DEFAULT_TASK if DEFAULT_TASK in available_tasks() else "math"))
    try:
        overrides = parse_set_options(set_values)
        harness = harness_request(harness_tasks, harness_include, harness_limit)
        # check every experiment before running any, so that a typo does not surface after an hour of training
        prepared = []
        for experiment in experiments:
            request = RunRequest(
                task=task_name, results_dir=str(results), experiment_dir=str(experiment), overrides=overrides,
                seed=seed, num_threads=num_threads, harness=harness,
            )
            run_info = prepare(request)
            if seed is not None:  # one file per seed, so that a second seed never "skips" onto the first one
                request.result_name = f"{run_info.method}--{run_info.name}--seed{seed}"
                run_info = prepare(request)
            if all(run_info.source != earlier.source for _, earlier in prepared):  # a folder given twice runs once
                prepared.append((experiment, run_info))
        check_distinct_result_files([run_info for _, run_info in prepared])
        check_writable(results)
    except ConfigError as error:
        console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
        raise typer.Exit(2)

    rows = []
    try:
        for experiment, run_info in prepared:
            if should_skip(run_info.result_file, force, keep_killed, run_info.task.name):
                status = existing_status(run_info.result_file)
                console.print(
                    printable(f"skip {run_info.experiment_name}: {run_info.result_file} exists ({status}); --force reruns"),
                    markup=False,
                )
                rows.append((run_info.experiment_name, "skipped", run_info.result_file, None))
                continue
            console.rule(escape(printable(f"{run_info.experiment_name} on {run_info.task.name}")))
            try:
                path, status = run_experiment(
                    experiment, task_name, results, overrides=overrides, seed=seed, force=True, keep_killed=keep_killed,
                    save_checkpoint=not no_save, num_threads=num_threads, result_name=run_info.result_file.stem,
                    harness=harness,
                )
            except (ConfigError, ResultWriteError) as error:  # the other experiments still run
                console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
                rows.append((run_info.experiment_name, "failed", None, str(error)))
                continue
            rows.append((run_info.experiment_name, status, path, None))
    except KeyboardInterrupt:
        console.print("[yellow]cancelled[/]: finished results are kept; rerun to continue")
        _print_summary(console, rows)
        raise typer.Exit(130)
    _print_summary(console, rows)
    if any(status not in ("success", "skipped", "diverged") for _, status, _, _ in rows):
        raise typer.Exit(1)


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


def _print_summary(console, rows) -> None:
    """One line per experiment: (name, status, result file or None, note). Result files are read as
    untrusted data: a value that is missing, malformed or out of range shows as blank."""
    from rich.table import Table
    from rich.text import Text

    from peftbench.printable import printable
    from peftbench.results.reader import finite_number

    table = Table(title="peftbench run")
    for column in ("experiment", "status", "test score", "train time (s)", "result / error"):
        table.add_column(column)
    for name, status, path, note in rows:
        record = _own_section(path)
        score, train_time = finite_number(record.get("test_score")), finite_number(record.get("train_time_s"))
        error = record.get("error_msg")
        if isinstance(error, str) and error.strip():
            note = error.strip().splitlines()[-1][:120]
        style = {"success": "green", "skipped": "dim"}.get(status, "red")
        table.add_row(
            Text(printable(name)), Text(status, style=style),
            f"{score:.3f}" if score is not None and abs(score) < 1e6 else "",
            f"{train_time:.1f}" if train_time is not None and abs(train_time) < 1e9 else "",
            Text(printable(str(note or path or ""))),
        )
    console.print(table)


def _own_section(path) -> dict:
    import json

    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    own = data.get("peftbench") if isinstance(data, dict) else None
    return own if isinstance(own, dict) else {}


def register(app: typer.Typer) -> None:
    app.command("run", help=RUN_HELP)(run)
