"""What the models wrote: a few test items per task, each with every method's prediction beside the reference.

The same items are shown for every method of a task, so that outputs compare side by side. Items where the
methods disagree come first (they say the most), then, for each method, its first failure if none is shown
yet, then the first items of the test set. Long texts are shortened; the page escapes everything.
"""

from __future__ import annotations

from typing import Any

from peftbench.analysis.points import Point

ITEMS_PER_TASK = 6
MAX_TEXT = 1500  # characters of one input, prediction or target shown


def _short(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_TEXT:
        return text
    return text[: MAX_TEXT - 1] + "…"


def _failed(item: dict[str, Any]) -> bool:
    return item["score"] is not None and item["score"] < 1


def choose_items(predictions: dict[str, list[dict[str, Any]]], count: int = ITEMS_PER_TASK) -> list[int]:
    """Indices of the items to show, given each point's predictions (all over the same test split)."""
    length = min(len(items) for items in predictions.values())
    chosen: list[int] = []

    def add(index: int) -> None:
        if index not in chosen and len(chosen) < count:
            chosen.append(index)

    for index in range(length):
        outcomes = {_failed(items[index]) for items in predictions.values()}
        if len(outcomes) > 1 and len(chosen) < count // 2:
            add(index)
    for items in predictions.values():
        if not any(_failed(items[i]) for i in chosen):
            failure = next((i for i in range(length) if _failed(items[i])), None)
            if failure is not None:
                add(failure)
    for index in range(length):
        add(index)
    return sorted(chosen)


def prediction_samples(points: list[Point]) -> dict[str, Any]:
    """Per task: the chosen items (input, reference) and each point's prediction and score on them.
    A point shows its first run's predictions; points whose test split differs in length are left out."""
    by_task: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for point in points:
        run = next((r for r in point.runs if r.predictions), None)
        if run is not None:
            by_task.setdefault(point.task, {})[point.name] = run.predictions
    samples: dict[str, Any] = {}
    for task, predictions in by_task.items():
        common = max((len(p) for p in predictions.values()), key=lambda n: sum(len(p) == n for p in predictions.values()))
        predictions = {name: items for name, items in predictions.items() if len(items) == common}
        indices = choose_items(predictions)
        reference = next(iter(predictions.values()))
        samples[task] = {
            "items": [
                {"index": i, "input": _short(reference[i]["input"]), "target": _short(reference[i]["target"])}
                for i in indices
            ],
            "predictions": {
                name: [{"prediction": _short(items[i]["prediction"]), "score": items[i]["score"]} for i in indices]
                for name, items in predictions.items()
            },
        }
    return samples
