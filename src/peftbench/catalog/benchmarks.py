"""The results joined to the catalog: per benchmark (a task in a set of results), each method's best point and
how it rates among the methods benchmarked there.

Ratings follow the PEFT method shop (method_comparison/peft-shop/app.py, `benchmark_stars`): among the methods
benchmarked on a task, a method's rank on a metric is the number of methods strictly better than it, and its
stars are 5 - int(5 * rank / count): the best 20% five, the next 20% four, down to one; ties share the better
rank. Full fine-tuning is the reference, never ranked (the shop: it would hand every method five memory and
time stars). Each method is its best point by the headline score, as the shop keeps each method's best run. The
metrics rated are the shop's: the score and forgetting (drift), peak memory, checkpoint size, train time.
Where peftbench differs, on purpose: a point is the mean over its seeds (the shop's runs are single); of two
points with the same best score the first is kept (the shop keeps the last file by name: an accident of file
order); a method without a value on a metric is left out of that metric's ranking (the shop has none missing).
The published MetaMathQA results of the PEFT suite ship with the package (published/metamathqa/) and are one
benchmark, marked as published; the user's results folders are read with the same reader.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Sequence

from peftbench.analysis.metrics import Metric, format_value, get_metric
from peftbench.analysis.points import Point, memory_axis, task_oriented
from peftbench.results.reader import FULL_FINETUNING_PEFT_TYPE, LoadWarning

# What each benchmark shows per method, the headline first (it picks the method's best point).
RATED_METRICS = ("test_score", "peak_memory", "train_time", "forgetting", "file_size")
# Shown beside the ratings where `peftbench infer` measured the benchmark's adapters; not rated (the shop has no
# serving benchmark to take a rule from).
SHOWN_METRICS = ("inference_overhead",)
STARS = 5


def published_results_dir() -> Path:
    """The PEFT suite's published MetaMathQA results, shipped in the package."""
    return Path(str(files("peftbench") / "published" / "metamathqa"))


@dataclass
class MethodResult:
    """A method's best point on one benchmark, its values and star ratings."""

    point: Point
    values: dict[str, float | None]
    stars: dict[str, int | None] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"experiment": self.point.experiment_name, "point": self.point.name, "values": self.values,
                "stars": self.stars, "peft_config": _peft_config(self.point)}


@dataclass
class Benchmark:
    name: str  # the task, "(published)" for the shipped results
    task: str
    published: bool
    metrics: list[Metric]  # oriented the way the task's files declare
    methods: dict[str, MethodResult]  # by peft type, full fine-tuning excepted
    reference: MethodResult | None  # full fine-tuning

    def to_json(self) -> dict:
        return {"name": self.name, "task": self.task, "published": self.published,
                "metrics": [{"name": m.name, "label": m.label, "higher_is_better": m.higher_is_better}
                            for m in self.metrics],
                "full_finetuning": self.reference.to_json() if self.reference else None,
                "methods": {peft_type: result.to_json() for peft_type, result in self.methods.items()}}

    def cell(self, peft_type: str) -> str:
        """The method's headline here in a few characters: score and stars, or that it was never run."""
        result = self.methods.get(peft_type)
        if result is None:
            return "never benchmarked here"
        score = self.metrics[0]
        return f"{format_value(score, result.values[score.name])} {stars_text(result.stars.get(score.name))}".strip()


def stars_text(stars: int | None) -> str:
    return "" if stars is None else "★" * stars + "☆" * (STARS - stars)


def _peft_config(point: Point) -> dict | None:
    config = point.runs[0].result.peft_config
    return config if isinstance(config, dict) else None


def _best(points: list[Point], score: Metric) -> Point:
    """The point with the best score (the first one when none has a score)."""
    scored = [p for p in points if p.mean(score.name) is not None]
    if not scored:
        return points[0]
    return max(scored, key=lambda p: p.mean(score.name) if score.higher_is_better else -p.mean(score.name))


def quantile_stars(values: dict[str, float], metric: Metric) -> dict[str, int]:
    """Stars by rank among `values` (the shop's benchmark_stars): rank = how many are strictly better."""
    def better(other: float, value: float) -> bool:
        return other > value if metric.higher_is_better else other < value

    count = len(values)
    return {key: STARS - int(STARS * sum(better(other, value) for other in values.values()) / count)
            for key, value in values.items()}


def benchmark(name: str, task: str, published: bool, points: list[Point]) -> Benchmark:
    metrics = [task_oriented(memory_axis(get_metric(metric), points), points) for metric in RATED_METRICS]
    metrics += [get_metric(name) for name in SHOWN_METRICS if any(p.mean(name) is not None for p in points)]
    by_method: dict[str, list[Point]] = defaultdict(list)
    for point in points:
        if point.peft_type:
            by_method[point.peft_type].append(point)
    best = {peft_type: _best(method_points, metrics[0]) for peft_type, method_points in by_method.items()}
    results = {peft_type: MethodResult(point, {m.name: point.mean(m.name) for m in metrics})
               for peft_type, point in best.items()}
    reference = results.pop(FULL_FINETUNING_PEFT_TYPE, None)
    for metric in metrics[:len(RATED_METRICS)]:
        measured = {peft_type: r.values[metric.name] for peft_type, r in results.items()
                    if r.values[metric.name] is not None}
        stars = quantile_stars(measured, metric) if measured else {}
        for peft_type, result in results.items():
            result.stars[metric.name] = stars.get(peft_type)
    return Benchmark(name, task, published, metrics, dict(sorted(results.items())), reference)


def load_benchmarks(results: Sequence[str | Path], *, published: bool = True,
                    progress: bool = False) -> tuple[list[Benchmark], list[LoadWarning]]:
    """One benchmark per task of the user's results (successful, non-converted runs), then the shipped published
    results; the reader's warnings, one per unreadable file."""
    from peftbench.analysis.comparison import grouped_points
    from peftbench.analysis.runs import load_results

    benchmarks, warnings = [], []
    sources = [(list(results), False)] if results else []
    if published:
        sources.append(([published_results_dir()], True))
    for paths, is_published in sources:
        points, loaded_warnings = grouped_points(load_results(paths, progress=progress))
        warnings.extend(loaded_warnings)
        by_task: dict[str, list[Point]] = defaultdict(list)
        for point in points:
            if point.conversion_rank is None:  # a converted adapter is LoRA's point, not its source method's
                by_task[point.task].append(point)
        for task, task_points in sorted(by_task.items()):
            name = f"{task} (published)" if is_published else task
            benchmarks.append(benchmark(name, task, is_published, task_points))
    return benchmarks, warnings
