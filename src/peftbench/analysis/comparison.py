"""From loaded results to one comparison: points, frontiers, noise marks and warnings.

Every output (terminal, JSON, HTML, PNG) renders this one object, so they cannot disagree. Results of
different tasks are never compared with each other: each task gets its own frontier.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftbench.analysis.conditions import ConditionWarning, condition_warnings
from peftbench.analysis.filters import Filter
from peftbench.analysis.metrics import METRICS, Metric, format_value, get_metric
from peftbench.analysis.noise import within_noise
from peftbench.analysis.pareto import Domination, Frontier, pareto_frontier
from peftbench.analysis.points import DESCRIPTIVE_FIELDS, Point, build_points, memory_axis, points_by_task, task_oriented
from peftbench.analysis.runs import LoadedResults
from peftbench.results.reader import PEFT_SUITE_SOURCE, LoadWarning


@dataclass
class FrontierView:
    """A frontier over some metrics, with noise marks (frontier point -> the point it ties within noise)."""

    metrics: list[Metric]
    frontier: Frontier
    within_noise: dict[str, str]


@dataclass
class Comparison:
    points: list[Point]
    x: Metric
    y: Metric
    pair: FrontierView  # the x-y frontier
    multi: FrontierView | None  # over --metrics, when given
    warnings: list[LoadWarning | ConditionWarning]  # condition warnings (unfair comparisons) last
    ignored: list[Path]
    filter_text: str | None = None
    filtered_out: list[str] = field(default_factory=list)

    @property
    def by_name(self) -> dict[str, Point]:
        return {p.name: p for p in self.points}

    @property
    def all_single_runs(self) -> bool:
        return all(len(p.runs) == 1 for p in self.points)

    @property
    def noise_summary(self) -> str:
        """One honest sentence about how much the frontier can be trusted."""
        if not self.points:
            return "no points"
        if self.all_single_runs and all(p.per_item_correct is None for p in self.points):
            return (
                "Single runs without per-item results: noise is not measured, so small differences "
                "(and frontier membership) may not survive a rerun with another seed."
            )
        if self.all_single_runs:
            return "Single runs: only the test set's item-level noise is measured (paired bootstrap), not seed noise."
        return "Seeds aggregated: mean with 95% bootstrap interval; score comparisons use a paired bootstrap where possible."


def _merge(frontiers: Sequence[Frontier], metrics: list[str]) -> Frontier:
    merged = Frontier(metrics=metrics, frontier=[], dominated_by={}, ties=[], missing={})
    for f in frontiers:
        merged.frontier += f.frontier
        merged.dominated_by.update(f.dominated_by)
        merged.ties += f.ties
        merged.missing.update(f.missing)
    return merged


def frontier_view(points: Sequence[Point], metrics: Sequence[Metric], *, with_noise: bool = True) -> FrontierView:
    """The frontier over `metrics`, computed per task, with its noise marks (unless `with_noise` is False)."""
    names = [m.name for m in metrics]
    frontiers, noise = [], {}
    for task_points in points_by_task(points).values():
        task_metrics = [task_oriented(m, task_points) for m in metrics]
        values = {p.name: {m: p.mean(m) for m in names} for p in task_points}
        frontier = pareto_frontier(values, task_metrics)
        frontiers.append(frontier)
        if with_noise:
            noise.update(within_noise(frontier, {p.name: p for p in task_points}, task_metrics))
    return FrontierView(list(metrics), _merge(frontiers, names), noise)


def frontier_note(name: str, view: FrontierView) -> tuple[str, str]:
    """Where a point stands on a frontier, as (kind, sentence). Kinds: missing, dominated, within_noise,
    tie, frontier. The terminal colours by kind; the HTML and JSON show the sentence."""
    frontier = view.frontier
    metrics = {m.name: m for m in view.metrics}
    if name in frontier.missing:
        return "missing", f"left out of the frontier: no {', '.join(frontier.missing[name])}"
    if name in frontier.dominated_by:
        domination = frontier.dominated_by[name]
        margins = ", ".join(
            f"{format_value(metrics[m], margin)} {metrics[m].label}" for m, margin in domination.margins.items() if margin
        )
        return "dominated", f"dominated by {domination.by} (better by {margins})"
    tie = next((group for group in frontier.ties if name in group), None)
    tie_note = f"; tie: equal to {', '.join(n for n in tie if n != name)}" if tie else ""
    if name in view.within_noise:
        return "within_noise", f"on the frontier only within noise of {view.within_noise[name]}{tie_note}"
    return ("tie" if tie else "frontier"), f"on the frontier{tie_note}"


def _missing_warnings(points: Sequence[Point], view: FrontierView) -> list[LoadWarning]:
    label = " x ".join(m.name for m in view.metrics)
    warnings = []
    by_name = {p.name: p for p in points}
    for name, lacking in view.frontier.missing.items():
        for run in by_name[name].runs:
            # the PEFT suite measures no tensor-level peak; its memory figure is another metric, never this axis
            hint = (" (a published result: its memory is peak_memory_total, reserved memory of the whole run)"
                    if "peak_memory" in lacking and run.source == PEFT_SUITE_SOURCE else "")
            warnings.append(LoadWarning(run.path, f"no {', '.join(lacking)}; left out of the {label} frontier{hint}"))
    return warnings


def _run_warnings(points: Sequence[Point]) -> list[LoadWarning]:
    """What a run's own result says makes its score suspect (evaluation/validity.py)."""
    return [
        LoadWarning(run.path, warning)
        for point in points for run in point.runs for warning in run.result.run_warnings if isinstance(warning, str)
    ]


def _one_line_per_file(warnings: list[LoadWarning]) -> list[LoadWarning]:
    """A file with several problems still gets one warning line."""
    messages: dict[Path, list[str]] = {}
    for warning in warnings:
        messages.setdefault(warning.path, []).append(warning.message)
    return [LoadWarning(path, "; ".join(dict.fromkeys(texts))) for path, texts in messages.items()]


def grouped_points(loaded: LoadedResults) -> tuple[list[Point], list[LoadWarning]]:
    """The loaded runs grouped into points (seeds aggregated), with the loader's and the grouping's warnings."""
    points, grouping_warnings = build_points(loaded.runs)
    return points, list(loaded.warnings) + grouping_warnings


def filtered(points: list[Point], point_filter: Filter | None) -> tuple[list[Point], list[str]]:
    """The points `point_filter` keeps (all without one), and the names of those it leaves out."""
    if point_filter is None:
        return points, []
    kept = [p for p in points if point_filter.matches(p.fields())]
    return kept, [p.name for p in points if p not in kept]


def compare_results(
    loaded: LoadedResults,
    *,
    x: str | Metric = "peak_memory",
    y: str | Metric = "test_score",
    metrics: Iterable[str | Metric] | None = None,
    point_filter: Filter | None = None,
) -> Comparison:
    """Group the loaded runs into points, filter them and compute the frontiers."""
    points, warnings = grouped_points(loaded)
    points, filtered_out = filtered(points, point_filter)

    def axis(metric: str | Metric) -> Metric:
        return memory_axis(metric if isinstance(metric, Metric) else get_metric(metric), points)

    x_metric, y_metric = axis(x), axis(y)
    pair = frontier_view(points, [x_metric, y_metric])
    multi = frontier_view(points, [axis(m) for m in metrics]) if metrics else None
    warnings += _missing_warnings(points, pair)
    if multi is not None:
        warnings += _missing_warnings(points, multi)
    warnings += _run_warnings(points)
    warnings = _one_line_per_file(warnings) + condition_warnings(points)
    return Comparison(
        points=points,
        x=x_metric,
        y=y_metric,
        pair=pair,
        multi=multi,
        warnings=warnings,
        ignored=list(loaded.ignored),
        filter_text=point_filter.text if point_filter else None,
        filtered_out=filtered_out,
    )


def _domination_dict(domination: Domination) -> dict[str, Any]:
    return {"by": domination.by, "margins": domination.margins, "n_dominators": domination.n_dominators}


def _view_dict(view: FrontierView) -> dict[str, Any]:
    return {
        "metrics": [m.name for m in view.metrics],
        "frontier": view.frontier.frontier,
        "dominated_by": {name: _domination_dict(d) for name, d in view.frontier.dominated_by.items()},
        "ties": view.frontier.ties,
        "missing": view.frontier.missing,
        "within_noise": view.within_noise,
    }


def point_dict(point: Point) -> dict[str, Any]:
    """A point as plain JSON data: its filter fields, metrics (means), intervals, runs and curves."""
    fields = point.fields()
    descriptive = {name: fields[name] for name in DESCRIPTIVE_FIELDS}
    return {
        **descriptive,  # name, experiment, method, config, task, peft_type, n_runs, lr, sweep_stage, converted
        "seeds": point.seeds,
        "noise": point.noise_note,
        "metrics": {m: point.mean(m) for m in METRICS if point.mean(m) is not None},
        "ci95": {m: [v.low, v.high] for m, v in point.values.items() if v is not None and v.low != v.high},
        # the same numbers in human units (GiB, min, M), as the terminal prints them
        "formatted": {m: point.shown(m, format_value(METRICS[m], v.mean)) for m, v in point.values.items() if v is not None},
        "ci95_formatted": {
            m: f"{format_value(METRICS[m], v.low)} – {format_value(METRICS[m], v.high)}"
            for m, v in point.values.items()
            if v is not None and v.low != v.high
        },
        "files": [str(run.path) for run in point.runs],
        "curves": [
            {
                "seed": run.seed,
                "train": [[c.step, c.value] for c in run.train_curve],
                "valid": [[c.step, c.value] for c in run.valid_curve],
            }
            for run in point.runs
        ],
    }


def comparison_dict(comparison: Comparison, *, with_curves: bool = False) -> dict[str, Any]:
    """The machine-readable comparison (`--json`): frontier, points, dominated_by and more."""
    points = [point_dict(p) for p in comparison.points]
    if not with_curves:
        for p in points:
            del p["curves"]
    result: dict[str, Any] = {
        "x": comparison.x.name,
        "y": comparison.y.name,
        "frontier": comparison.pair.frontier.frontier,
        "dominated_by": {n: _domination_dict(d) for n, d in comparison.pair.frontier.dominated_by.items()},
        "ties": comparison.pair.frontier.ties,
        "missing": comparison.pair.frontier.missing,
        "within_noise": comparison.pair.within_noise,
        "notes": {p.name: frontier_note(p.name, comparison.pair)[1] for p in comparison.points},
        "noise_summary": comparison.noise_summary,
        "points": points,
        "warnings": [str(w) for w in comparison.warnings],
        "ignored_files": [str(p) for p in comparison.ignored],
        "filter": comparison.filter_text,
        "filtered_out": comparison.filtered_out,
    }
    if comparison.multi is not None:
        result["multi"] = _view_dict(comparison.multi)
    return result
