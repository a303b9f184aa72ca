"""`peftbench init-task`: write a commented task file from a data file's columns."""

from __future__ import annotations

from pathlib import Path

import typer

INIT_TASK_HELP = """Write TASK_FILE, a commented task file for the data in --data (JSON, JSONL, CSV or Parquet).

The prompt, target and (for a column holding lists) multiple-choice fields are guessed from the column names; edit the file, then run it with `peftbench run EXPERIMENT... --task TASK_FILE`. The file is checked as a run would check it (data, templates, scorer) before it is written. See docs/custom-task.md.

Example: peftbench init-task support.yaml --data tickets.jsonl
"""


def init_task(
    task_file: Path = typer.Argument(..., help="The task file to write (.yaml).", show_default=False),
    data: Path = typer.Option(..., "--data", help="A data file whose columns the task file uses.", show_default=False),
    model: str = typer.Option("builtin:tiny-math-llama", "--model", help="The base model: hub id, local folder or builtin:tiny-math-llama."),
    force: bool = typer.Option(False, "--force", help="Replace TASK_FILE if it exists."),
) -> None:
    from rich.console import Console
    from rich.markup import escape

    from peftbench.config import ConfigError, build_train_config
    from peftbench.tasks.base import load_rows
    from peftbench.tasks.starter import starter_text
    from peftbench.tasks.task_file import TASK_FILE_SUFFIXES

    console = Console(stderr=True)
    try:
        if task_file.suffix.lower() not in TASK_FILE_SUFFIXES:
            raise ConfigError(f"task file {task_file}: the name must end in {' or '.join(TASK_FILE_SUFFIXES)}")
        if task_file.exists() and not force:
            raise ConfigError(f"{task_file} exists; --force replaces it")
        if not data.is_file():
            raise ConfigError(f"--data: file not found: {data}")
        rows = [dict(row) for row in load_rows(str(data), key="--data").select(range(1))] if data.stat().st_size else []
        if not rows:
            raise ConfigError(f"--data: {data} has no rows")
        text = starter_text(data, task_file, rows, model)
        task_file.parent.mkdir(parents=True, exist_ok=True)
        staging = task_file.with_name(f".{task_file.name}.tmp")
        staging.write_text(text, encoding="utf-8")
        try:  # the starter must run as written: check it as `run` would, before it replaces anything
            from peftbench.tasks.declared import DeclaredTask

            task = DeclaredTask(staging)
            # forgetting_size 0: the default forgetting set of a hub model need not be downloaded to check this
            task.check_inputs(build_train_config(task.default_params(), overrides={"forgetting_size": 0}))
        except ConfigError:
            staging.unlink()
            raise
        staging.replace(task_file)
    except ConfigError as error:
        console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
        raise typer.Exit(2)
    console.print(f"wrote {task_file}; edit it, then: peftbench run EXPERIMENT... --task {task_file}", markup=False)


def register(app: typer.Typer) -> None:
    app.command("init-task", help=INIT_TASK_HELP)(init_task)
