"""`peftbench list`: the registered tasks and the experiment folders found."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from peftbench.builtin_suites import suites_root  # light: no torch

BUILTIN_SUITES = suites_root()


def list_command(
    roots: Optional[list[Path]] = typer.Argument(
        None, help="Folders to search for experiments (default: ./experiments and the built-in suites).",
        show_default=False,
    ),
    params: Optional[str] = typer.Option(
        None, "--params", help="List the training parameters of this task (type, default, help) instead.",
        show_default=False,
    ),
) -> None:
    """List the tasks and the experiment folders (<method>/<name>/ with adapter_config.json or
    training_params.json) under ROOTS."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from peftbench.config import ConfigError
    from peftbench.experiments import discover_experiments, load_experiment
    from peftbench.tasks import DEFAULT_TASK, available_tasks, get_task

    console = Console()
    if params is not None:
        console.print(_params_table(params))
        return
    tasks = Table(title="tasks")
    for column in ("task", "description", "base model", "score"):
        tasks.add_column(column, overflow="fold")  # a model path or id cut short would name nothing
    for name in available_tasks():
        task = get_task(name)
        label = f"{name} (default)" if name == DEFAULT_TASK else name
        score = f"{task.score_name} ({'higher' if task.higher_is_better else 'lower'} is better)"
        model = str(task.default_params().get("model_id"))
        tasks.add_row(escape(label), escape(task.description), escape(_short(Path(model)) if Path(model).is_dir() else model),
                      score)
    tasks.caption = "or your own: --task my_task.yaml (peftbench init-task; docs/custom-task.md)"
    console.print(tasks)

    search = roots or [p for p in (Path("experiments"), BUILTIN_SUITES) if p.exists()]
    experiments = Table(title="experiments")
    for column in ("folder", "method", "peft_type", "training params"):
        experiments.add_column(column, overflow="fold")
    for root in search:
        for folder in discover_experiments(root):
            try:
                spec = load_experiment(folder, check_peft_type=False)
                peft_type = spec.peft_type or "full fine-tuning"
                params = ", ".join(f"{k}={v}" for k, v in spec.training_params.items()) or "-"
                experiments.add_row(escape(_short(folder)), escape(spec.method), escape(peft_type), escape(params))
            except ConfigError as error:
                experiments.add_row(escape(_short(folder)), "", "[red]invalid[/]", escape(str(error)))
    if experiments.row_count:
        console.print(experiments)
    else:
        console.print(f"no experiment folders under {', '.join(map(str, search)) or '(nothing to search)'}", markup=False)


def _params_table(task_name: str):
    """A task's training parameters: name, type, the task's default and the help line of its config class."""
    import json

    from rich.markup import escape
    from rich.table import Table

    from peftbench.config import ConfigError, describe_params
    from peftbench.tasks import get_task

    try:
        task = get_task(task_name)
    except ConfigError as error:
        raise typer.BadParameter(str(error), param_hint="--params") from None
    defaults = task.default_params()
    table = Table(title=f"training parameters of {task.name}")
    for column in ("key", "type", "default", "help"):
        table.add_column(column)
    for described in describe_params(task.config_class):
        default = json.dumps(defaults.get(described["name"], described["default"]))
        shown = default if len(default) <= 60 else default[:59] + "…"
        table.add_row(*map(escape, (described["name"], described["type"], shown, described["help"])))
    return table


def _short(folder: Path) -> str:
    """A folder relative to the working directory (or to the package: built-in suites, shipped models), for a
    narrow table."""
    for base, prefix in ((Path.cwd(), ""), (BUILTIN_SUITES, "suites/"), (BUILTIN_SUITES.parent, "peftbench/")):
        try:
            return prefix + str(folder.resolve().relative_to(base.resolve()))
        except ValueError:
            continue
    return str(folder)


def register(app: typer.Typer) -> None:
    app.command("list")(list_command)
