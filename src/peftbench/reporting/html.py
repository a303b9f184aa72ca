"""The HTML report: one self-contained file (plotly.js inlined, no network) rendering a Comparison.

Data from result files reaches the page only as JSON inside a `<script type="application/json">`
element, with `<`, `>`, `&` and U+2028/U+2029 escaped so that no string can close the element; the
page's script puts strings into the DOM with `textContent` and escapes them for plotly's labels.
The title is HTML-escaped. The page has no inline event handlers.
"""

from __future__ import annotations

import html
import json
import os
import re
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from peftbench.analysis.comparison import Comparison, comparison_dict, point_dict
from peftbench.analysis.metrics import AXIS_UNITS, METRICS
from peftbench.analysis.points import DESCRIPTIVE_FIELDS
from peftbench.reporting.gallery import image_gallery
from peftbench.reporting.samples import prediction_samples
from peftbench.reporting.terminal import CONTEXT_METRICS

_PLACEHOLDER = re.compile(r"__PEFTBENCH_(TITLE|DATA|PLOTLYJS)__")
_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def json_for_script(data: Any) -> str:
    """JSON that is safe inside a <script> element: no `</script>`, no `<!--`, no line separators."""
    text = json.dumps(data, allow_nan=False, ensure_ascii=False)
    return re.sub("[<>&\u2028\u2029]", lambda m: _JSON_ESCAPES[m.group(0)], text)


def catalog_data(catalog) -> dict[str, Any]:
    """The method catalog as the page's table shows it: the findings, and each benchmark's cell as the terminal
    prints it."""
    from peftbench.reporting.catalog import provenance_line

    document = catalog.to_json()
    for method in document["methods"]:
        method["benchmarks"] = {b.name: b.cell(method["peft_type"]) for b in catalog.benchmarks}
    return {"provenance": provenance_line(catalog), "capabilities": document["capabilities"],
            "benchmarks": [b.name for b in catalog.benchmarks], "methods": document["methods"]}


def report_data(comparison: Comparison, title: str, catalog=None, sweeps=()) -> dict[str, Any]:
    """What the page's script renders: the comparison plus metric metadata and per-run curves, the method
    catalog (catalog.catalog.Catalog) when one is given, and the sweeps' trials (reporting.sweep_view)."""
    data = comparison_dict(comparison)
    data["sweeps"] = list(sweeps)
    data["catalog"] = catalog_data(catalog) if catalog is not None else None
    data["points"] = [point_dict(p) for p in comparison.points]
    data["title"] = title
    data["samples"] = prediction_samples(comparison.points)  # what the models wrote, a few items per task
    data["gallery"] = image_gallery(comparison.points)  # what image tasks generated: thumbnails
    data["task_outputs"] = task_outputs(comparison.points)
    data["filter_fields"] = list(DESCRIPTIVE_FIELDS)
    data["axis_units"] = AXIS_UNITS  # the plot's axis units are chosen as in the PNG plots
    data["context_metrics"] = CONTEXT_METRICS  # the table's columns besides the chosen pair, as in the terminal
    data["metric_info"] = {
        name: {"label": m.label, "direction": m.direction, "unit": m.unit, "help": m.help}
        for name, m in METRICS.items()
    }
    return data


def task_outputs(points) -> dict[str, Any]:
    """Per task, its outputs as its result files name them: score name and direction, forgetting name and
    direction, throughput unit (the page labels and orients its axes with them)."""
    outputs: dict[str, Any] = {}
    for point in points:
        result = point.runs[0].result
        outputs.setdefault(point.task, {
            "score_name": result.score_name, "higher_is_better": result.higher_is_better,
            "forgetting_name": result.forgetting_name, "forgetting_higher_is_better": result.forgetting_higher_is_better,
            "throughput_unit": result.throughput_unit,
        })
    return outputs


def render_html(comparison: Comparison, *, title: str = "peftbench report", catalog=None, sweeps=()) -> str:
    """The whole report as one HTML string."""
    from plotly.offline import get_plotlyjs

    template = resources.files("peftbench.reporting").joinpath("templates/report.html").read_text(encoding="utf-8")
    values = {
        "TITLE": html.escape(title),
        "DATA": json_for_script(report_data(comparison, title, catalog, sweeps)),
        "PLOTLYJS": get_plotlyjs(),
    }
    # One pass, so that a placeholder-like string inside the data is never substituted again.
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def write_html(comparison: Comparison, path: str | Path, *, title: str = "peftbench report", catalog=None,
               sweeps=()) -> Path:
    """Write the report atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = render_html(comparison, title=title, catalog=catalog, sweeps=sweeps)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp_name, 0o644)  # mkstemp makes it private; a report is meant to be shared
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return path
