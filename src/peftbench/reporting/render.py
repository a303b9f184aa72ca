"""`render_report`: one call from result files to every output (terminal, JSON, HTML, PNG).

`peftbench report` and `peftbench suite` both call it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from rich.console import Console

from peftbench.analysis.comparison import Comparison, compare_results, comparison_dict
from peftbench.analysis.filters import parse_filter
from peftbench.analysis.points import FILTER_FIELDS
from peftbench.analysis.runs import LoadedResults, RunView, load_results


def _spellings(path: Path) -> set[Path]:
    """The path as given (absolute) and with its links resolved: an input reached through a link is still one."""
    return {Path(os.path.abspath(path)), path.resolve()}


def check_output_paths(inputs: Iterable[str | Path], html: str | Path | None, png_dir: str | Path | None) -> None:
    """Refuse, before anything is read, run or written, an output that would replace what the report reads.

    The HTML report must not be an input file, nor a .json file inside an input folder (a result file there now,
    one a suite is about to write, or one the next report would read as a broken result), nor a folder. The PNG
    folder must not be a file. The ValueError names the path.
    """
    if html is not None:
        html = Path(html)
        for item in map(Path, inputs):
            same_file = bool(_spellings(html) & _spellings(item))
            # an input that is not a file is a folder, or one a suite is about to create
            in_folder = not item.is_file() and any(target.suffix.lower() == ".json" and folder in target.parents
                                                   for folder in _spellings(item) for target in _spellings(html))
            if same_file or in_folder:
                where = "is" if same_file else "would be a result file in"
                raise ValueError(f"--html {html} {where} the report's input {item}: writing the HTML report there "
                                 "would replace result data; give another path, e.g. report.html")
        if html.is_dir():
            raise ValueError(f"--html {html} is a folder; give a file name, e.g. {html / 'report.html'}")
    if png_dir is not None and Path(png_dir).exists() and not Path(png_dir).is_dir():
        raise ValueError(f"--png {png_dir} is a file; give a folder for the PNG plots")


def render_report(
    results: Iterable[str | Path] | Sequence[RunView] | LoadedResults,
    *,
    x: str = "peak_memory",
    y: str = "test_score",
    metrics: Sequence[str] | None = None,
    filter_expression: str | None = None,
    html: str | Path | None = None,
    png_dir: str | Path | None = None,
    json_out: bool = False,
    console: Console | None = None,
    title: str = "peftbench report",
    catalog=None,
) -> Comparison:
    """Load results, compare them and write the requested outputs.

    `results`: result files / folders, already loaded runs, or a LoadedResults. With `json_out` the
    terminal gets the JSON object only (for piping); otherwise the rich tables. `catalog` (catalog.catalog.Catalog)
    adds the method catalog to the HTML report. Returns the Comparison.
    Raises KeyError (unknown metric), FilterError (bad filter) or ValueError (an output path that would replace
    an input: check_output_paths) before anything is written.
    """
    console = console or Console()
    sweeps: list = []  # the sweeps among result folders (reporting.sweep_view): their trials, pruned ones too
    if isinstance(results, LoadedResults):
        loaded = results
    else:
        items = list(results)
        if items and all(isinstance(item, RunView) for item in items):
            loaded = LoadedResults(runs=list(items), warnings=[], ignored=[])
        else:
            check_output_paths(items, html, png_dir)
            loaded = load_results(items, progress=True)
            from peftbench.reporting.sweep_view import sweep_views

            sweeps = sweep_views(items)
    point_filter = parse_filter(filter_expression, FILTER_FIELDS) if filter_expression else None
    comparison = compare_results(loaded, x=x, y=y, metrics=metrics, point_filter=point_filter)

    if json_out:
        # Plain text, not rich's highlighted print_json: the output is meant for pipes and other programs.
        console.file.write(json.dumps(comparison_dict(comparison), indent=2, allow_nan=False) + "\n")
    else:
        from peftbench.reporting.terminal import print_comparison

        print_comparison(comparison, console)
        from peftbench.reporting.sweep_view import sweep_tables

        for table in sweep_tables(sweeps):
            console.print(table)
        from peftbench.validity.notes import validity_notes

        for note in validity_notes(point.task for point in comparison.points):
            console.print(note, style="italic", markup=False, highlight=False, soft_wrap=True)
    if html is not None:
        from peftbench.reporting.html import write_html

        path = write_html(comparison, html, title=title, catalog=catalog, sweeps=sweeps)
        if not json_out:
            console.print(f"HTML report: {path}", markup=False, highlight=False)
    if png_dir is not None:
        from peftbench.reporting.png import write_pngs

        for path in write_pngs(comparison, png_dir):
            if not json_out:
                console.print(f"PNG: {path}", markup=False, highlight=False)
    return comparison
