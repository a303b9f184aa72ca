"""`peftbench report`: Pareto frontiers, tables and reports from result files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from peftbench.analysis.metrics import METRICS  # a dict of names, no heavy imports

HELP = f"""Compare result files: Pareto frontier of two metrics (default: peak memory vs test score), with
seed error bars, dominated-by details and a note where a point is on the frontier only within noise.

RESULTS are result files or folders of them (peftbench's and the PEFT method_comparison suite's).
Broken files, failed runs and missing metrics give one warning line each and are left out.

Metrics: {", ".join(METRICS)} (image tasks: forgetting is drift, test_score is DINO similarity).

Filter names: the metrics, and name, experiment, method, config, task, peft_type, n_runs, lr,
sweep_stage, converted. Operators: and, or, not, == != < <= > >= in, not in; lists ['A', 'B'].

Example: peftbench report results/ --html report.html --filter "peft_type in ['LORA','OFT']"
"""


def report(
    results: Annotated[list[Path], typer.Argument(help="Result files or folders (searched recursively).")],
    x: Annotated[str, typer.Option("--x", help="Metric on the x axis.")] = "peak_memory",
    y: Annotated[str, typer.Option("--y", help="Metric on the y axis.")] = "test_score",
    metrics: Annotated[
        Optional[str],
        typer.Option("--metrics", help="Also a frontier over several metrics, comma-separated (e.g. test_score,peak_memory,forgetting)."),
    ] = None,
    filter_expression: Annotated[
        Optional[str],
        typer.Option("--filter", help="Keep points matching an expression, e.g. \"peft_type in ['LORA','OFT'] and test_score > 0.4\"."),
    ] = None,
    html: Annotated[Optional[Path], typer.Option("--html", help="Write a self-contained interactive HTML report here.")] = None,
    png: Annotated[Optional[Path], typer.Option("--png", help="Write static Pareto plots (PNG) into this folder.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON object (frontier, points, dominated_by, ...) instead of tables.")] = False,
    title: Annotated[str, typer.Option("--title", help="Title of the HTML report.")] = "peftbench report",
    catalog: Annotated[bool, typer.Option("--catalog", help="Add the method catalog (`peftbench methods`, joined with these results) to the HTML report.")] = False,
) -> None:
    from rich.console import Console

    from peftbench.analysis.filters import FilterError
    from peftbench.reporting.render import render_report

    metric_list = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
    if catalog and html is None:
        typer.echo("error: --catalog adds a section to the HTML report; give --html too", err=True)
        raise typer.Exit(2)
    try:
        comparison = render_report(
            results, x=x, y=y, metrics=metric_list, filter_expression=filter_expression,
            html=html, png_dir=png, json_out=json_out, console=Console(), title=title,
            catalog=_catalog(results) if catalog else None,
        )
    except (KeyError, ValueError, FilterError) as error:
        message = error.args[0] if error.args else str(error)
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(2) from None
    except OSError as error:  # an output path that cannot be written
        typer.echo(f"error: cannot write {error.filename or 'the output'}: {error.strerror or error}", err=True)
        raise typer.Exit(1) from None
    if not comparison.points:
        raise typer.Exit(1)  # nothing usable: scripts should notice


def _catalog(results):
    from peftbench.catalog.catalog import build_catalog

    return build_catalog(results, progress=True)


def register(app: typer.Typer) -> None:
    app.command(name="report", help=HELP)(report)
