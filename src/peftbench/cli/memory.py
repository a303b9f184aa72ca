"""`peftbench memory`: estimate the peak training memory of experiments without allocating the model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

HELP = """Estimate the peak training memory of each EXPERIMENT on the task's base model, without allocating it.

The model is built from its config.json alone (no weights) under FakeTensorMode, wrapped by peft as `peftbench run` wraps it, and real training steps (forward, backward, clipping, optimizer step) are traced at the run's batch shapes: those of its real training batches where the data and tokenizer are at hand, else batch_size x max_seq_length (a line says which). The bytes are counted as in a measured run (parameters, gradients, optimizer state, activations saved for backward, temporaries) and are what torch.cuda.max_memory_allocated would report on a GPU: the allocator's cache on top (max_memory_reserved) is not included.

A model on the hub needs a local copy of its config.json: --set model_id=<folder with config.json>.

Examples:
  peftbench memory experiments/lora/rank32 experiments/full-finetuning/default --task math --set model_id=models/Llama-3.2-3B
  peftbench memory experiments/*/* --task math --set model_id=models/Llama-3.2-3B --set batch_size=8 --json
"""

BREAKDOWN_COLUMNS = [
    ("parameters", "params"), ("gradients", "grads"), ("optimizer_state", "optimizer"),
    ("activations", "activations"), ("temporaries", "temporaries"),
]


def memory(
    experiments: Annotated[list[Path], typer.Argument(help="Experiment folders (<method>/<name>/).", show_default=False)],
    task: Annotated[Optional[str], typer.Option("--task", "-t", help="Task (default: math-tiny).")] = None,
    set_values: Annotated[list[str], typer.Option(
        "--set", "-s", metavar="KEY=VALUE", help="Override one training parameter (as in `peftbench run`). Repeatable.",
    )] = [],
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array, one object per experiment.")] = False,
) -> None:
    from rich.console import Console
    from rich.markup import escape

    from peftbench.config import ConfigError, parse_set_options
    from peftbench.runners.engine import prepare
    from peftbench.runners.request import RunRequest
    from peftbench.tasks import DEFAULT_TASK, available_tasks

    console = Console(stderr=True)
    task_name = task or (DEFAULT_TASK if DEFAULT_TASK in available_tasks() else "math")

    def fail(error: Exception) -> None:
        console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)

    try:
        from peftbench.training.memory_estimate import check_text_task, load_model_config

        overrides = parse_set_options(set_values)
        prepared = [
            prepare(RunRequest(task=task_name, results_dir=".", experiment_dir=str(path), overrides=overrides))
            for path in experiments
        ]
        for run in prepared:
            check_text_task(run.task)
            load_model_config(run.config)
    except ConfigError as error:
        fail(error)
        raise typer.Exit(2)

    estimates, failed = _estimate_all(prepared, console, fail, quiet=as_json)
    if as_json:
        print(json.dumps([estimate.to_dict() for estimate in estimates], indent=2))
    else:
        _print_table(estimates)
    if failed:
        raise typer.Exit(failed)


def _estimate_all(prepared, console, fail, quiet: bool):
    import warnings
    from contextlib import nullcontext

    from peftbench.config import ConfigError
    from peftbench.training.memory_estimate import load_tokenizer_if_any, batch_shapes, estimate_training_memory

    estimates, failed = [], 0  # exit code: 2 bad input, 1 an experiment that could not be traced
    shape_lines: set[str] = set()
    for run in prepared:
        with nullcontext() if quiet else console.status(f"tracing {run.experiment_name}", spinner="dots"):
            try:
                tokenizer = load_tokenizer_if_any(run.task, run.config)
                shapes = batch_shapes(run.task, run.config, tokenizer)
                with warnings.catch_warnings():  # peft's and transformers' remarks on a model without weights
                    warnings.simplefilter("ignore")
                    estimates.append(estimate_training_memory(run.spec, run.task, run.config, shapes, tokenizer))
            except ConfigError as error:
                fail(f"{run.experiment_name}: {error}")
                failed = max(failed, 2)
                continue
            except Exception as error:  # e.g. a method whose initialisation needs the weights' values
                first_line = (str(error).splitlines() or [""])[0][:200]
                fail(f"{run.experiment_name}: could not be traced without the model's weights "
                     f"({type(error).__name__}: {first_line}); this method computes shapes from tensor values "
                     "(nonzero, bincount, a clustering of the weights), which a model without data cannot give")
                failed = max(failed, 1)
                continue
        if shapes.source not in shape_lines:
            shape_lines.add(shapes.source)
            console.print(shapes.source, markup=False, highlight=False, soft_wrap=True)
    return estimates, failed


def _print_table(estimates) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from peftbench.analysis.metrics import format_value, get_metric

    memory_metric, count_metric = get_metric("peak_memory"), get_metric("trainable_params")
    table = Table(title="estimated peak training memory (allocated, as torch.cuda.max_memory_allocated)")
    table.add_column("experiment")
    table.add_column("peak", justify="right", style="bold")
    for _, label in BREAKDOWN_COLUMNS:
        table.add_column(label, justify="right")
    table.add_column("trainable", justify="right")
    for estimate in sorted(estimates, key=lambda e: e.peak_bytes):
        table.add_row(
            escape(estimate.experiment_name), format_value(memory_metric, estimate.peak_bytes),
            *(format_value(memory_metric, estimate.breakdown.get(key, 0)) for key, _ in BREAKDOWN_COLUMNS),
            format_value(count_metric, estimate.trainable_params),
        )
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("memory", help=HELP)(memory)
