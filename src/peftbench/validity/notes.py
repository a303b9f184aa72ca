"""The measured validity of each offline task, as one line under `peftbench report`'s tables.

The figures are `peftbench validate --json` reports, saved as validity/measured/<task>.json by the command
docs/validity.md gives; nothing here is typed in by hand.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from importlib.resources import files
from typing import Any, Optional

MEASURED = files("peftbench") / "validity" / "measured"


def measured(task: str) -> Optional[dict[str, Any]]:
    """The saved validity report of `task`, or None when none was measured (or the file is unreadable)."""
    path = MEASURED / f"{task}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _interval(entry: Optional[dict[str, Any]]) -> str:
    if not entry or entry.get("value") is None:
        return "n/a"
    if entry.get("low") is None:
        return f"{entry['value']:.2f}"
    return f"{entry['value']:.2f} [{entry['low']:.2f}, {entry['high']:.2f}]"


def validity_notes(tasks: Iterable[str]) -> list[str]:
    """One line per offline task among `tasks` with a measured validity: how far its ranking predicts the
    reference (Spearman, 95% interval, over the report half of the methods and over all configs) and its noise
    ceiling."""
    notes = []
    for task in dict.fromkeys(tasks):
        report = measured(task)
        if report is None:
            continue
        agreement, ceiling = report.get("agreement") or {}, (report.get("noise_ceiling") or {}).get("all") or {}
        recipe = report.get("recipe") or {}
        ranking = ""
        if agreement:
            ranking = (f"ranks configs like the published GPU results at Spearman {_interval(agreement['all']['both']['spearman'])} "
                       f"over {agreement['all']['both']['n']} configs ({_interval(agreement['all']['report']['spearman'])} "
                       f"on the held-out half); ")
        noise = (report.get("seed_noise") or {}).get("all") or {}
        if ceiling.get("spearman", {}).get("value") is not None:
            agreement_of_seeds = f"two seeds rank them alike at Spearman {_interval(ceiling['spearman'])} (noise ceiling)"
        else:
            agreement_of_seeds = (f"seed sd {noise.get('median_sd') or float('nan'):.3f} (median over the "
                                  f"{noise.get('n_configs')} config(s) run with several seeds) against a spread of "
                                  f"{noise.get('spread') or float('nan'):.3f} between configs")
        # the tables rank by test score; a task whose validity was measured on the loss says how to see that order
        ranked_by = {"train_loss": ", ranked by final train loss: `report --y final_train_loss`",
                     "test": ", ranked by test score"}.get(report.get("rank_by"), "")
        notes.append(f"validity of {task} ({recipe.get('steps') or 'default'} steps, seeds "
                     f"{','.join(map(str, recipe.get('seeds') or []))}{ranked_by}): {ranking}{agreement_of_seeds}. Rank differences "
                     "within the seed noise are not evidence; docs/validity.md")
    return notes
