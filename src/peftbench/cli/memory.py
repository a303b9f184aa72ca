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

BREAKDOWN_LABELS = [
    ("parameters", "parameters"), ("gradients", "gradients"), ("optimizer_state", "optimizer state"),
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
    from contextlib import nullcontext

    from rich.console import Console
    from rich.markup import escape

    from peftbench.config import ConfigError, parse_set_options
    from peftbench.tasks import DEFAULT_TASK, available_tasks
    from peftbench.run.memory_estimates import EstimateFailure, estimate_prepared_run, prepare_estimates

    console = Console(stderr=True)

    def fail(message: str) -> None:
        console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)

    try:
        task_name = task or (DEFAULT_TASK if DEFAULT_TASK in available_tasks() else "math")
        prepared = prepare_estimates(task_name, experiments, parse_set_options(set_values))
    except ConfigError as error:
        fail(str(error))
        raise typer.Exit(2)

    estimates, exit_code, shape_lines = [], 0, set()
    for run in prepared:
        with nullcontext() if as_json else console.status(f"tracing {run.experiment_name}", spinner="dots"):
            outcome = estimate_prepared_run(run)
        if isinstance(outcome, EstimateFailure):
            fail(outcome.message)
            exit_code = max(exit_code, outcome.exit_code)
            continue
        estimates.append(outcome)
        if outcome.shape_source not in shape_lines:
            shape_lines.add(outcome.shape_source)
            console.print(outcome.shape_source, markup=False, highlight=False, soft_wrap=True)
    if as_json:
        print(json.dumps([estimate.to_dict() for estimate in estimates], indent=2))
    else:
        _print_table(estimates)
        for note in dict.fromkeys(note for estimate in estimates for note in estimate.notes):
            console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    if exit_code:
        raise typer.Exit(exit_code)


def _print_table(estimates) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from peftbench.analysis.metrics import format_value, get_metric

    memory_metric, count_metric = get_metric("peak_memory"), get_metric("trainable_params")
    table = Table(title="estimated peak training memory (allocated, as torch.cuda.max_memory_allocated)")
    # the breakdown is one wrapping column, largest part first: five more columns would not fit 80 characters
    table.add_column("experiment", overflow="fold")
    table.add_column("peak", justify="right", style="bold", no_wrap=True)
    table.add_column("trainable", justify="right", no_wrap=True)
    table.add_column("at the peak")
    for estimate in sorted(estimates, key=lambda e: e.peak_bytes):
        parts = sorted(((estimate.breakdown.get(key, 0), label) for key, label in BREAKDOWN_LABELS), reverse=True)
        breakdown = ", ".join(f"{label} {format_value(memory_metric, size)}".replace(" ", "\u00a0")  # one part, one line
                              for size, label in parts if size)
        table.add_row(escape(estimate.experiment_name), format_value(memory_metric, estimate.peak_bytes),
                      format_value(count_metric, estimate.trainable_params), breakdown)
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("memory", help=HELP)(memory)
