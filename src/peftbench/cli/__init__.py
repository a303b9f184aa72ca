"""The `peftbench` command line.

Each subcommand lives in its own module `peftbench.cli.<name>` exposing `register(app)`.
Subcommand modules import torch, peft and friends inside their functions, so that
`peftbench --help` stays fast.
"""

from __future__ import annotations

import importlib

import typer

SUBCOMMAND_MODULES = ["run", "init_task", "listing", "suite", "report", "recommend", "sweep", "convert", "memory"]

app = typer.Typer(
    name="peftbench",
    help=(
        "A fair referee for parameter-efficient fine-tuning (PEFT) methods: train every method under "
        "identical conditions, measure score, memory, time, size and forgetting, compare them on "
        "Pareto frontiers, and ship the winner as a plain LoRA adapter."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register_all() -> None:
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(f"peftbench.cli.{name}").register(app)


_register_all()


def main() -> None:
    from peftbench.runners.cancel import cancel_on_signals

    cancel_on_signals()  # SIGTERM and SIGHUP cancel like Ctrl-C: `cancelled` results, no files left behind
    app()
