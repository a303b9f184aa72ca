"""Pareto frontiers over any two or more metrics, each with its own direction.

Rules (see docs/report.md):
- A dominates B when A is at least as good on every metric and strictly better on at least one.
- Ties: points equal on every metric do not dominate each other; if nothing else dominates them they
  are all on the frontier, and `ties` lists them together.
- Missing values: a point that lacks any of the metrics is left out of that frontier and listed in
  `missing` with the metrics it lacks.
- For each dominated point, `dominated_by` names the frontier point that dominates it with the largest
  advantage on the first metric (ties broken by name), with its advantage on every metric.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from peftbench.analysis.metrics import Metric, get_metric


@dataclass(frozen=True)
class Domination:
    by: str
    # How much better `by` is on each metric, in the metric's unit (>= 0; 0 where equal).
    margins: dict[str, float]
    n_dominators: int  # how many points in all dominate this one


@dataclass
class Frontier:
    metrics: list[str]
    frontier: list[str]  # best first on the first metric
    dominated_by: dict[str, Domination]
    ties: list[list[str]]
    missing: dict[str, list[str]]


def _resolve(metrics: Sequence[Metric | str]) -> list[Metric]:
    resolved = [m if isinstance(m, Metric) else get_metric(m) for m in metrics]
    if len(resolved) < 2:
        raise ValueError("a Pareto frontier needs at least two metrics")
    if len({m.name for m in resolved}) != len(resolved):
        raise ValueError(f"metrics must differ, got {[m.name for m in resolved]}")
    return resolved


def dominates(a: Mapping[str, float], b: Mapping[str, float], metrics: Sequence[Metric]) -> bool:
    """A is at least as good as B everywhere and strictly better somewhere."""
    strictly_better = False
    for metric in metrics:
        if metric.better(b[metric.name], a[metric.name]):
            return False
        if metric.better(a[metric.name], b[metric.name]):
            strictly_better = True
    return strictly_better


def pareto_frontier(
    values: Mapping[str, Mapping[str, float | None]], metrics: Sequence[Metric | str]
) -> Frontier:
    """The non-dominated points of `values` (point name -> metric name -> value) over `metrics`."""
    resolved = _resolve(metrics)
    names = [m.name for m in resolved]
    missing = {
        point: [m for m in names if point_values.get(m) is None]
        for point, point_values in values.items()
        if any(point_values.get(m) is None for m in names)
    }
    complete = {point: {m: float(v[m]) for m in names} for point, v in values.items() if point not in missing}

    dominators: dict[str, list[str]] = {point: [] for point in complete}
    for a, a_values in complete.items():
        for b, b_values in complete.items():
            if a != b and dominates(a_values, b_values, resolved):
                dominators[b].append(a)

    first = resolved[0]
    frontier = sorted(
        (p for p, by in dominators.items() if not by),
        key=lambda p: (-complete[p][first.name] if first.higher_is_better else complete[p][first.name], p),
    )
    on_frontier = set(frontier)
    dominated_by: dict[str, Domination] = {}
    for point, by in dominators.items():
        if not by:
            continue
        candidates = [d for d in by if d in on_frontier]
        best = min(candidates, key=lambda d: (-first.advantage(complete[d][first.name], complete[point][first.name]), d))
        margins = {m.name: m.advantage(complete[best][m.name], complete[point][m.name]) for m in resolved}
        dominated_by[point] = Domination(best, margins, len(by))

    ties: dict[tuple[float, ...], list[str]] = {}
    for point in frontier:
        ties.setdefault(tuple(complete[point][m] for m in names), []).append(point)
    return Frontier(
        metrics=names,
        frontier=frontier,
        dominated_by=dominated_by,
        ties=[group for group in ties.values() if len(group) > 1],
        missing=missing,
    )
