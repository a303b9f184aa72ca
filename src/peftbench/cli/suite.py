"""`peftbench suite`: run a built-in suite of experiments and show its Pareto table."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from peftbench.builtin_suites import SUITE_TASKS, available_suites, suite_experiments  # light: no torch

HELP = """Run a built-in suite: every experiment folder of the suite is trained and scored, each in its own
child process, then the Pareto table of test accuracy against peak memory is printed (and an HTML report
written with --html).

`quick` (the default) trains 8+ PEFT methods and full fine-tuning on the offline `math-tiny` task with the
tiny model shipped in the package, offline, in minutes on a laptop CPU (measured times: BENCHMARKS.md; faster
where the CPU runs bf16 natively, precision: `use_amp` "auto"). Progress: each experiment's start, its step and ETA at least every
20 s, its score and time with the time left (live bars in a terminal, plain lines in a log).

Results that already exist in the results folder are kept and not run again (use --force to re-run); failed,
cancelled, oom and killed ones are run again (--keep-killed keeps oom and killed ones). The exit status is 1
when any experiment did not finish (failed, oom, killed, cancelled, or its result file could not be written),
and the last line names them.

Examples:
  peftbench suite quick --results results/quick --html results/quick/report.html
  peftbench suite --list
"""

def print_suite_list(console) -> None:
    import json

    from rich.table import Table

    for suite in available_suites():
        table = Table(title=f"suite {suite} (task {SUITE_TASKS[suite]})")
        table.add_column("experiment")
        table.add_column("training params overridden")
        for path in suite_experiments(suite):
            params_file = path / "training_params.json"
            overridden = ""
            if params_file.exists():
                overridden = ", ".join(sorted(json.loads(params_file.read_text())))
            table.add_row(f"{path.parent.name}/{path.name}", overridden)
        console.print(table)


def suite(
    name: Annotated[Optional[str], typer.Argument(help="Suite to run (built-in: quick).")] = None,
    results: Annotated[
        Optional[Path], typer.Option("--results", help="Folder for the result files. Default: results/<suite>, or "
                                     "results/<suite>-<task file name> with --task.")
    ] = None,
    task: Annotated[
        Optional[str], typer.Option("--task", help="Run the suite's experiments on this task (a name, or a task "
                                    "file: my_task.yaml, docs/custom-task.md) instead of the suite's own.")
    ] = None,
    html: Annotated[Optional[Path], typer.Option("--html", help="Also write the HTML report here.")] = None,
    list_suites: Annotated[bool, typer.Option("--list", help="List the built-in suites and their experiments.")] = False,
    only: Annotated[
        Optional[str], typer.Option("--only", help="Run only experiments whose '<method>/<name>' contains this text.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Re-run experiments whose result file exists.")] = False,
    keep_killed: Annotated[
        bool, typer.Option("--keep-killed", help="Keep existing oom and killed results instead of running them again.")
    ] = False,
    save_checkpoint: Annotated[
        bool, typer.Option("--save-checkpoint", help="Keep each experiment's trained adapter under "
                           "RESULTS/checkpoints/<method>--<name>/, for `peftbench convert`.")
    ] = False,
    workers: Annotated[
        int, typer.Option("--workers", help="Experiments run at once; the CPU cores are split between them.")
    ] = 2,  # two single-thread runs keep both cores busy through generation and small-batch steps
    set_params: Annotated[
        Optional[list[str]],
        typer.Option("--set", help="Override a training parameter for every experiment, e.g. --set max_steps=50."),
    ] = None,
) -> None:
    from rich.console import Console
    from rich.text import Text

    from peftbench.builtin_suites import suite_requests
    from peftbench.config import ConfigError
    from peftbench.printable import printable
    from peftbench.reporting.render import check_output_paths
    from peftbench.runners.batch import run_trials

    console = Console()
    if list_suites:
        print_suite_list(console)
        return
    name = name or "quick"
    try:
        trials, task_label = suite_requests(name, task, only, results, set_params or [], force, keep_killed,
                                            save_checkpoint)
        check_output_paths([trials[0].results_dir], html, None)
    except (ConfigError, ValueError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    results = Path(trials[0].results_dir)
    console.print(f"suite {name}: {len(trials)} experiments on task {task_label}, results in {results}")
    started = time.perf_counter()
    outcomes = run_trials(trials, workers=workers, description=f"suite {name}")
    console.print(f"suite {name} finished in {time.perf_counter() - started:.0f} s")
    for outcome in outcomes:
        if outcome.status != "success":
            console.print(Text.assemble((f"{outcome.result_stem}: {outcome.status} ", "yellow"), outcome.error))
    show_results(results, html, console)
    unfinished = [outcome for outcome in outcomes if outcome.unfinished]
    if unfinished:
        # a script (or CI) running the suite must see that the table lacks these, and that a rerun continues
        listed = ", ".join(f"{printable(o.result_stem)} ({o.status if o.recorded else 'result not written'})"
                           for o in unfinished)
        console.print(Text(f"suite {name}: {len(unfinished)} of {len(outcomes)} experiments did not finish: "
                           f"{listed}; run the same command again to retry them", style="red"), soft_wrap=True)
        raise typer.Exit(1)


def show_results(results: Path, html: Optional[Path], console) -> None:
    """The Pareto table (test accuracy vs peak memory) and, if asked, the HTML report."""
    from peftbench.reporting.render import render_report

    if html is not None:
        html.parent.mkdir(parents=True, exist_ok=True)
    render_report([results], x="peak_memory", y="test_score", metrics=None, filter_expression=None,
                  html=html, png_dir=None, json_out=False, console=console)


def register(app: typer.Typer) -> None:
    app.command(name="suite", help=HELP)(suite)
