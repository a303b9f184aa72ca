"""`render_report`: one call from result files to every output (terminal, JSON, HTML, PNG).

`peftbench report` and `peftbench suite` both call it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from rich.console import Console

from peftbench.analysis.comparison import Comparison, compare_results, comparison_dict
from peftbench.analysis.filters import parse_filter
from peftbench.analysis.points import FILTER_FIELDS
from peftbench.results.reader import LoadedResults, RunRecord, load_results

def render_report(
    results: Iterable[str | Path] | Sequence[RunRecord] | LoadedResults,
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

    `results`: result files / folders, already loaded records, or a LoadedResults. With `json_out` the
    terminal gets the JSON object only (for piping); otherwise the rich tables. `catalog` (catalog.catalog.Catalog)
    adds the method catalog to the HTML report. Returns the Comparison.
    Raises KeyError (unknown metric) or FilterError (bad filter) before anything is written.
    """
    console = console or Console()
    if isinstance(results, LoadedResults):
        loaded = results
    else:
        items = list(results)
        if items and all(isinstance(item, RunRecord) for item in items):
            loaded = LoadedResults(records=list(items), warnings=[], ignored=[])
        else:
            loaded = load_results(items, progress=True)
    point_filter = parse_filter(filter_expression, FILTER_FIELDS) if filter_expression else None
    comparison = compare_results(loaded, x=x, y=y, metrics=metrics, point_filter=point_filter)

    if json_out:
        # Plain text, not rich's highlighted print_json: the output is meant for pipes and other programs.
        console.file.write(json.dumps(comparison_dict(comparison), indent=2, allow_nan=False) + "\n")
    else:
        from peftbench.reporting.terminal import print_comparison

        print_comparison(comparison, console)
    if html is not None:
        from peftbench.reporting.html import write_html

        path = write_html(comparison, html, title=title, catalog=catalog)
        if not json_out:
            console.print(f"HTML report: {path}", markup=False, highlight=False)
    if png_dir is not None:
        from peftbench.reporting.png import write_pngs

        for path in write_pngs(comparison, png_dir):
            if not json_out:
                console.print(f"PNG: {path}", markup=False, highlight=False)
    return comparison
