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

    from peftbench.config import ConfigError
    from peftbench.tasks.starter import write_starter_task_file

    console = Console(stderr=True)
    try:
        write_starter_task_file(task_file, data, model, force)
    except ConfigError as error:
        console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
        raise typer.Exit(2)
    console.print(f"wrote {task_file}; edit it, then: peftbench run EXPERIMENT... --task {task_file}", markup=False)


def register(app: typer.Typer) -> None:
    app.command("init-task", help=INIT_TASK_HELP)(init_task)
