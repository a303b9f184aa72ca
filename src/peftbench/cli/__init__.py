"""The `peftbench` command line.

Each subcommand lives in its own module `peftbench.cli.<name>` exposing `register(app)`.
Subcommand modules import torch, peft and friends inside their functions, so that
`peftbench --help` stays fast.
"""

from __future__ import annotations

import atexit
import importlib
import inspect
import os
import sys
import threading

import typer

SUBCOMMAND_MODULES = ["run", "init_task", "listing", "suite", "report", "recommend", "sweep", "convert", "memory",
                      "methods", "infer", "validate"]

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
    for command in app.registered_commands:
        # Help texts are wrapped at the source's width; rich help keeps their line breaks, so paragraphs are
        # joined here and the terminal's width wraps them. Indented lines (examples) stay as written.
        paragraphs = [paragraph if any(line.startswith(" ") for line in paragraph.splitlines())
                      else " ".join(paragraph.split())
                      for paragraph in inspect.cleandoc(command.help or command.callback.__doc__ or "").split("\n\n")]
        command.help = "\n\n".join(paragraphs)
        command.short_help = command.short_help or paragraphs[0]


_register_all()


# Commands whose parent process computes on one thread only before it starts children (runners.__init__)
ONE_THREAD_PARENTS = ("run", "suite", "sweep")


def main() -> None:
    from peftbench import runners
    from peftbench.cancel import cancel_on_signals

    cancel_on_signals()  # SIGTERM and SIGHUP cancel like Ctrl-C: `cancelled` results, no files left behind
    runners.PARENT_COMPUTES_ON_ONE_THREAD = len(sys.argv) > 1 and sys.argv[1] in ONE_THREAD_PARENTS
    try:
        app()
        code = 0
    except SystemExit as done:
        code = done.code
    exit_without_teardown(code)


def exit_without_teardown(code) -> None:
    """sys.exit(code), without the interpreter's teardown: once torch, transformers and peft are imported,
    freeing their modules and objects one by one takes about a second (benchmarks/math-faithful.md, "Speed"),
    for memory the operating system takes back at once. Exit handlers (atexit: logging, multiprocessing,
    temporary folders) still run and the standard streams are flushed; the files peftbench writes are closed
    (and renamed into place) before a command returns. With a non-daemon thread still running, the ordinary
    exit, which waits for it."""
    if any(thread.is_alive() and not thread.daemon for thread in threading.enumerate()
           if thread is not threading.main_thread()):
        sys.exit(code)
    if code is not None and not isinstance(code, int):  # sys.exit("message"): printed, status 1
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing left to say there
            pass
    os._exit(code or 0)
