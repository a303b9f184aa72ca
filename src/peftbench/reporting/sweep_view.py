"""The report's sweep view: every search trial of each learning-rate sweep among the report's inputs, with its
status; a halving sweep's pruned trials greyed, with the step where they stopped.

A sweep's summary file (sweep-summary.json, peftbench.sweep.summary) lists every trial with its rate, status,
steps and scores, pruned ones included (the frontier leaves them out: they have no test score). The file is
untrusted data: each value is type-checked here, and only plain strings and numbers leave this module.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Optional

from peftbench.printable import printable
from peftbench.sweep.summary import SUMMARY_FILE, SUMMARY_KIND


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _text(value: Any) -> str:
    return printable(value) if isinstance(value, str) else ""


def summary_files(inputs: Iterable[str | Path]) -> list[Path]:
    """The sweep summaries among the report's inputs: given as files, or in the folders given (recursively)."""
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_file() and item.name == SUMMARY_FILE:
            found.append(item)
        elif item.is_dir():
            found.extend(sorted(item.rglob(SUMMARY_FILE)))
    return list(dict.fromkeys(found))


def sweep_view(path: Path) -> Optional[dict[str, Any]]:
    """One summary file as the view shows it, or None when it is not a readable sweep summary."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or document.get("kind") != SUMMARY_KIND:
        return None
    halving = document.get("halving") if isinstance(document.get("halving"), dict) else None
    experiments = []
    for key, entry in (document.get("experiments") or {}).items():
        if not isinstance(entry, dict):
            continue
        chosen = _number(entry.get("chosen_lr"))
        trials = [trial for trial in entry.get("trials") or [] if isinstance(trial, dict)]
        rows = [{
            "lr": _number(t.get("lr")), "status": _text(t.get("status")), "steps": _number(t.get("steps")),
            "valid_score": _number(t.get("valid_score")), "test_score": _number(t.get("test_score")),
            "chosen": chosen is not None and _number(t.get("lr")) == chosen,
        } for t in trials]
        for row in rows:
            row["shown_status"] = status_text(row)
        steps = entry.get("search_steps") if isinstance(entry.get("search_steps"), dict) else {}
        experiments.append({"experiment": _text(key), "chosen_lr": chosen, "trials": rows,
                            "steps_fraction": _number(steps.get("fraction"))})
    view = {
        "file": str(path), "sweep_id": _text(document.get("sweep_id")), "task": _text(document.get("task")),
        "score_name": _text(document.get("score_name")) or "score", "experiments": experiments,
        "halving": None if halving is None else {
            "scheduler": _text(halving.get("scheduler")), "min_steps": _number(halving.get("min_steps")),
            "reduction_factor": _number(halving.get("reduction_factor")),
        },
    }
    view["search"] = search_text(view)
    return view


def sweep_views(inputs: Iterable[str | Path]) -> list[dict[str, Any]]:
    return [view for view in map(sweep_view, summary_files(inputs)) if view is not None]


def status_text(row: dict[str, Any]) -> str:
    """`pruned at step 32` for a pruned trial, else its status (`chosen` marks the rate the sweep chose)."""
    if row["status"] == "pruned":
        return f"pruned at step {row['steps']:.0f}" if row["steps"] is not None else "pruned"
    return f"{row['status']}, chosen" if row["chosen"] else row["status"]


def search_text(view: dict[str, Any]) -> str:
    halving = view["halving"]
    if halving is None:
        return "full grid"
    return (f"successive halving ({halving['scheduler']}): rungs at {halving['min_steps']:g} steps "
            f"x {halving['reduction_factor']:g}^k")


def sweep_tables(views: list[dict[str, Any]]):
    """A rich table per sweep: its trials, pruned ones dim."""
    from rich.table import Table
    from rich.text import Text

    def number(value: Optional[float]) -> str:
        return "-" if value is None else f"{value:.3g}"

    tables = []
    for view in views:
        score = view["score_name"]
        table = Table(title_justify="left", title=Text(
            f"sweep {view['sweep_id']} on {view['task']} ({view['search']}): search trials, valid {score} "
            f"decides"))
        for column in ("experiment", "lr", "status", "steps", f"valid {score}", f"test {score}"):
            table.add_column(column, overflow="fold")
        for experiment in view["experiments"]:
            for row in experiment["trials"]:
                cells = (experiment["experiment"], number(row["lr"]), row["shown_status"], number(row["steps"]),
                         number(row["valid_score"]), number(row["test_score"]))
                table.add_row(*(Text(cell) for cell in cells), style="dim" if row["status"] == "pruned" else None)
        tables.append(table)
    return tables
