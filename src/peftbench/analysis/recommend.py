"""Recommending a method under constraints: the best, the runner-up, and why.

Constraints are limits on metrics (`peak_memory <= 20 GB`, `test_score >= 0.4`); among the points that
meet all of them, the best on the priority metric wins. Ties on the priority are broken by test score,
then peak memory (analysis.points.memory_axis), then name. Whether the winner's lead is real is judged by analysis.noise.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from peftbench.analysis.metrics import Metric, format_value, get_metric
from peftbench.analysis.noise import Difference, compare
from peftbench.analysis.points import Point, memory_axis, task_oriented

_NUMBER = r"([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)"
# Memory is reported in powers of 1024 by nvidia-smi and PyTorch, and users read "20GB" off those
# tools: so K, M, G, T (with or without B, with or without i) all mean powers of 1024 here.
_SIZE_UNITS = {
    unit: 1024.0**power
    for power, letter in enumerate(["", "k", "m", "g", "t"])
    for unit in ({"", "b"} if not letter else {letter, letter + "b", letter + "ib"})
}
_DURATION_UNITS = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400}
_COUNT_UNITS = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9}


class ConstraintError(ValueError):
    """A limit that cannot be parsed; the message names the option and shows valid forms."""


def finite_limit(value: float, option: str, text: object) -> float:
    """`value` (parsed from `text`) if it is a finite number: an infinite limit would silently allow everything
    (and 'nan' compares false with everything, so it would silently allow nothing)."""
    if not math.isfinite(value):
        raise ConstraintError(f"{option} {text!r} is not a finite number; give a limit such as 20GB, 30m or 0.4, "
                              "or leave the option out for no limit")
    return value


def _number_with_unit(text: str, option: str, units: dict[str, float], refusal: str) -> float:
    """A number and one of `units` (case-insensitive), scaled; `refusal` ends the error otherwise."""
    match = re.fullmatch(rf"\s*{_NUMBER}\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in units:
        raise ConstraintError(f"{option} {text!r} is not {refusal}")
    return finite_limit(float(match.group(1)) * units[match.group(2).lower()], option, text)


def parse_size(text: str, option: str = "size") -> float:
    """'20GB' -> 20 * 1024**3 bytes; KB/MB/GB/TB and KiB/MiB/GiB/TiB are all powers of 1024."""
    return _number_with_unit(text, option, _SIZE_UNITS, "a size; use a number and a unit, e.g. 20GB, 512MiB, 1.5GiB")


def parse_duration(text: str, option: str = "duration") -> float:
    """'30m' -> 1800 s; also '90s', '1.5h', '1h30m', '2d'; a bare number is seconds."""
    compact = re.sub(r"\s+", "", text)
    parts = re.findall(rf"{_NUMBER}([a-zA-Z]*)", compact)
    # findall skips what it cannot read: the parts must add up to the whole text.
    if not parts or "".join(number + unit for number, unit in parts) != compact:
        raise ConstraintError(f"{option} {text!r} is not a duration; use e.g. 90s, 30m, 1.5h, 1h30m")
    seconds = 0.0
    for number, unit in parts:
        if unit.lower() not in _DURATION_UNITS:
            raise ConstraintError(f"{option} {text!r}: unknown time unit {unit!r}; use s, m, h or d")
        seconds += float(number) * _DURATION_UNITS[unit.lower()]
    return finite_limit(seconds, option, text)


def parse_count(text: str, option: str = "count") -> float:
    """'10M' -> 1e7; k, M, B suffixes."""
    return _number_with_unit(text, option, _COUNT_UNITS, "a count; use e.g. 500k, 10M, 1.5B")


def parse_percent(text: str, option: str = "percentage") -> float:
    """'10%' -> 10.0 (a bare number is a percentage too: 10 -> 10.0)."""
    match = re.fullmatch(rf"\s*([+-]?{_NUMBER})\s*(%?)\s*", text)
    if not match:
        raise ConstraintError(f"{option} {text!r} is not a percentage; use e.g. 10%, 2.5%")
    return finite_limit(float(match.group(1)), option, text)


@dataclass(frozen=True)
class Constraint:
    metric: Metric
    limit: float
    at_least: bool = False  # True: value >= limit (scores); False: value <= limit (costs)

    def allows(self, value: float) -> bool:
        return value >= self.limit if self.at_least else value <= self.limit

    def __str__(self) -> str:
        return f"{self.metric.label} {'>=' if self.at_least else '<='} {format_value(self.metric, self.limit)}"


@dataclass
class Recommendation:
    priority: Metric
    constraints: list[Constraint]
    ranked: list[Point]  # eligible points, best first
    excluded: list[tuple[str, str]] = field(default_factory=list)  # (point name, why)
    difference: Difference | None = None  # best vs runner-up on the priority metric
    reasons: list[str] = field(default_factory=list)

    @property
    def best(self) -> Point | None:
        return self.ranked[0] if self.ranked else None

    @property
    def runner_up(self) -> Point | None:
        return self.ranked[1] if len(self.ranked) > 1 else None


def _sort_key(point: Point, priority: Metric, memory: Metric) -> tuple:
    def best_first(metric_name: str) -> float:
        metric = task_oriented(get_metric(metric_name), [point])  # the direction the point's task declares
        value = point.mean(metric_name)
        if value is None:
            return float("inf")
        return -value if metric.higher_is_better else value

    return (best_first(priority.name), best_first("test_score"), best_first(memory.name), point.name)


def _noise_sentence(difference: Difference, priority: Metric) -> str:
    if difference.paired is not None:
        paired = difference.paired
        return (
            f"{'a real difference' if difference.verdict == 'clear' else 'within noise'} by a paired bootstrap over "
            f"{paired.n_items} test items: difference {paired.mean_difference:+.3f}, 95% CI "
            f"[{paired.low:+.3f}, {paired.high:+.3f}], P(best is better) = {paired.prob_a_better:.2f}"
        )
    if difference.verdict == "unknown":
        return "single runs: the noise is not measured, so this ranking may not survive a rerun with another seed"
    if difference.verdict == "noise":
        return f"within noise: the two {priority.label} values are indistinguishable ({difference.how})"
    return f"a real difference ({difference.how})"


def recommend(points: Sequence[Point], constraints: Sequence[Constraint], priority: Metric | str) -> Recommendation:
    """Rank the points that meet every constraint on `priority` and explain the choice. A limit or priority on
    `peak_memory` applies to the memory the points have (analysis.points.memory_axis)."""
    priority = memory_axis(priority if isinstance(priority, Metric) else get_metric(priority), points)
    priority = task_oriented(priority, list(points))
    constraints = [replace(c, metric=memory_axis(c.metric, points)) for c in constraints]
    eligible: list[Point] = []
    excluded: list[tuple[str, str]] = []
    for point in points:
        why_not = []
        for constraint in constraints:
            value = point.mean(constraint.metric.name)
            if value is None:
                why_not.append(f"no {constraint.metric.label} measured")
            elif not constraint.allows(value):
                why_not.append(f"{constraint.metric.label} {format_value(constraint.metric, value)} breaks {constraint}")
        if point.mean(priority.name) is None:
            why_not.append(f"no {priority.label} measured")
        if why_not:
            excluded.append((point.name, "; ".join(why_not)))
        else:
            eligible.append(point)
    memory = memory_axis(get_metric("peak_memory"), points)  # the tie-break after the test score
    ranked = sorted(eligible, key=lambda p: _sort_key(p, priority, memory))
    result = Recommendation(priority, list(constraints), ranked, excluded)
    limits = ", ".join(str(c) for c in constraints) or "no constraints"
    if not ranked:
        result.reasons.append(f"no point meets {limits}; {len(excluded)} left out")
        for constraint in constraints:
            measured = [p for p in points if p.mean(constraint.metric.name) is not None]
            if measured:
                closest = min(measured, key=lambda p: _sort_key(p, constraint.metric, memory))
                value = format_value(constraint.metric, closest.mean(constraint.metric.name))
                result.reasons.append(f"best {constraint.metric.label} available: {value} ({closest.name})")
        return result
    best = ranked[0]
    best_value = format_value(priority, best.mean(priority.name))
    direction = "highest" if priority.higher_is_better else "lowest"
    result.reasons.append(
        f"{best.name}: {direction} {priority.label} ({best_value}) among {len(ranked)} of {len(points)} points "
        f"that meet {limits}"
    )
    score_limited = any(c.metric.name == "test_score" for c in constraints)
    if priority.name != "test_score" and best.mean("test_score") is not None and not score_limited:
        result.reasons.append(
            f"its test score is {format_value(get_metric('test_score'), best.mean('test_score'))}; "
            "add --min-score to rule out methods that did not learn the task"
        )
    if len(ranked) > 1:
        runner_up = ranked[1]
        gap = priority.advantage(best.mean(priority.name), runner_up.mean(priority.name))
        result.difference = compare(best, runner_up, priority)
        result.reasons.append(
            f"runner-up {runner_up.name}: {format_value(priority, runner_up.mean(priority.name))} "
            f"({format_value(priority, gap)} behind); {_noise_sentence(result.difference, priority)}"
        )
        if result.difference.verdict == "noise" or gap == 0:
            result.reasons.append(
                "the two are within noise on the priority: pick by the other metrics (memory, size, time) or run more seeds"
            )
    else:
        result.reasons.append("no runner-up: it is the only point that meets the constraints")
    return result


@dataclass
class RecommendationReport:
    """`peftbench recommend`'s answer: the recommendation, or why there is none, and the warnings to show."""

    recommendation: Recommendation | None
    warnings: list  # the loader's and the grouping's (analysis.comparison.grouped_points)
    error: str | None = None  # the results cannot be ranked (no run of the task, several tasks)
    condition_warnings: list = field(default_factory=list)  # unfair comparisons among the ranked points


def capable_points(points: Sequence[Point], must: Sequence[str],
                   findings: Mapping[str, Mapping[str, Any]]) -> tuple[list[Point], list[tuple[str, str]]]:
    """The points whose method can do every capability in `must`, by the method catalog's findings per peft type
    (catalog.capabilities.Finding), and (point name, why) for the others."""
    kept, left_out = [], []
    for point in points:
        method_findings = findings.get(point.peft_type or "")
        if method_findings is None:
            left_out.append((point.name, f"{point.peft_type or 'its method'} is not in the method catalog"))
            continue
        lacking = [f"cannot {name}: {method_findings[name]}" for name in must if method_findings[name].status != "yes"]
        if lacking:
            left_out.append((point.name, "; ".join(lacking)))
        else:
            kept.append(point)
    return kept, left_out


def recommend_results(loaded, constraints: Sequence[Constraint], priority: Metric | str, *, task: str | None = None,
                      point_filter=None, must: Sequence[str] = (),
                      findings: Mapping[str, Mapping[str, Any]] | None = None) -> RecommendationReport:
    """From loaded results to a recommendation: the points of one task (`task`, or the only one there is), then
    those `point_filter` keeps and whose method can do every capability in `must` (`findings`: the method
    catalog's, per peft type), ranked under `constraints`."""
    from peftbench.analysis.comparison import filtered, grouped_points
    from peftbench.analysis.conditions import condition_warnings

    points, warnings = grouped_points(loaded)
    tasks = sorted({p.task for p in points})
    if task is not None:
        points = [p for p in points if p.task == task]
        if not points:
            return RecommendationReport(None, warnings, f"no results of task {task!r}; tasks found: {', '.join(tasks) or 'none'}")
    elif len(tasks) > 1:
        return RecommendationReport(None, warnings, f"results of several tasks ({', '.join(tasks)}) cannot be ranked "
                                    "together; choose one with --task")
    points, _ = filtered(points, point_filter)
    points, incapable = capable_points(points, must, findings or {}) if must else (points, [])
    unfair = condition_warnings(points)
    recommendation = recommend(points, constraints, priority)
    recommendation.excluded.extend(incapable)
    if incapable and not points:
        recommendation.reasons = [f"no method among the results can {' and '.join(must)}",
                                  *(f"{name}: {why}" for name, why in incapable)]
    elif must:
        recommendation.reasons.insert(1, f"only methods that can {' and '.join(must)} (the method catalog's "
                                         f"findings): {len(incapable)} point(s) left out for that")
    return RecommendationReport(recommendation, warnings, None, unfair)
