"""Deciding whether a difference between two points is real or inside the noise.

Per metric, best evidence first:
1. exact metrics (file size, parameter counts) do not vary between seeds: any difference is real;
2. test score with per-item correctness stored for both points: paired bootstrap over test items
   (the difference's 95% interval excludes zero -> real);
3. both points aggregated over seeds: their 95% bootstrap intervals do not overlap -> real;
4. otherwise (single runs without per-item data) the noise is unknown, and the report says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from peftbench.analysis.metrics import Metric
from peftbench.analysis.pareto import Frontier
from peftbench.analysis.points import Point
from peftbench.analysis.stats import PairedComparison, paired_bootstrap

Verdict = Literal["clear", "noise", "unknown"]


@dataclass(frozen=True)
class Difference:
    verdict: Verdict
    how: str  # which evidence decided it, for "why" texts
    paired: PairedComparison | None = None


def compare(a: Point, b: Point, metric: Metric) -> Difference:
    """Whether `a` and `b` differ on `metric` beyond noise."""
    a_value, b_value = a.values.get(metric.name), b.values.get(metric.name)
    if a_value is None or b_value is None:
        return Difference("unknown", "missing value")
    if a_value.mean == b_value.mean:
        return Difference("noise", "equal values")
    if metric.exact:
        return Difference("clear", "exact measurement")
    if (
        metric.name == "test_score"
        and a.per_item_correct is not None
        and b.per_item_correct is not None
        and a.per_item_correct.shape == b.per_item_correct.shape
    ):
        paired = paired_bootstrap(a.per_item_correct, b.per_item_correct)
        verdict: Verdict = "clear" if paired.significant else "noise"
        return Difference(verdict, "paired bootstrap over test items", paired)
    if a_value.has_spread and b_value.has_spread:
        overlap = a_value.low <= b_value.high and b_value.low <= a_value.high
        return Difference("noise" if overlap else "clear", "seed confidence intervals")
    return Difference("unknown", "single runs, noise not measured")


def within_noise(
    frontier: Frontier, points: Mapping[str, Point], metrics: Sequence[Metric]
) -> dict[str, str]:
    """Frontier points that are on it only within noise -> the point that matches them within noise.

    P is on the frontier only within noise when some other point Q is at least as good as P on every
    metric except where P's advantage is inside the noise.
    """
    complete = [name for name in points if name not in frontier.missing]
    result: dict[str, str] = {}
    for p_name in frontier.frontier:
        p = points[p_name]
        for q_name in complete:
            if q_name == p_name:
                continue
            q = points[q_name]
            # The paired bootstrap is the costly check: try it last, after cheaper verdicts had a chance to fail.
            advantages = sorted(
                (m for m in metrics if m.better(p.mean(m.name), q.mean(m.name))), key=lambda m: m.name == "test_score"
            )
            if advantages and all(compare(p, q, m).verdict == "noise" for m in advantages):
                result[p_name] = q_name
                break
    return result
