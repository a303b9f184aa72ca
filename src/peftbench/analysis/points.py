"""Grouping runs into points: one point per experiment configuration, its seeds aggregated.

Runs of the same experiment that differ only in their seed share `experiment_name` (and task); sweep
trials are told apart by their learning rate, converted adapters by their conversion rank. A point's
metrics are the mean over its runs with a 95% bootstrap interval (see analysis.stats).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from peftbench.config import format_lr
from peftbench.analysis.metrics import METRICS, Metric, oriented
from peftbench.analysis.stats import MeanCI, bootstrap_mean_ci, mean_per_item
from peftbench.results.inference_record import overhead_range_label, serving_mode_label
from peftbench.analysis.runs import RunView
from peftbench.results.reader import PEFT_SUITE_SOURCE, LoadWarning, finite_number


# What filter expressions and the HTML table can refer to besides the metrics (see Point.fields).
DESCRIPTIVE_FIELDS = ("name", "experiment", "method", "config", "task", "peft_type", "n_runs", "lr", "sweep_stage", "converted",
                      "serving_mode")
FILTER_FIELDS = frozenset(DESCRIPTIVE_FIELDS) | frozenset(METRICS)


@dataclass
class Point:
    """The runs of one configuration: the key they are grouped by, and their metrics aggregated over seeds. What
    the runs share (method, name, peft_type) is read from their results (`runs[0].result`)."""

    name: str  # unique among the points of a report
    experiment_name: str
    task: str
    runs: list[RunView]
    values: dict[str, MeanCI | None] = field(default_factory=dict)
    # Per-test-item correctness, averaged over the runs that stored it (None if none did or lengths differ).
    per_item_correct: np.ndarray | None = None
    learning_rate: float | None = None
    sweep_stage: str | None = None  # "search" (lr trials) or "tuned" (seeds at the chosen lr)
    conversion_rank: Any = None

    def mean(self, metric: str) -> float | None:
        value = self.values.get(metric)
        return value.mean if value is not None else None

    @property
    def peft_type(self) -> str | None:
        return self.runs[0].result.peft_type

    @property
    def seeds(self) -> list[int | None]:
        return [run.seed for run in self.runs]

    @property
    def serving_mode(self) -> str:
        """The serving mode of the inference_overhead metric ("merged", "unmerged (cannot merge)", ...; "" when
        never measured), from the first run that `peftbench infer` measured."""
        measured = next((run.inference for run in self.runs if run.inference is not None), None)
        return serving_mode_label(measured) if measured is not None else ""

    def shown(self, metric: str, text: str) -> str:
        """A metric's formatted value with what it needs beside it: the inference overhead's range over its runs
        and its serving mode."""
        measured = next((run.inference for run in self.runs if run.inference is not None), None)
        if metric != "inference_overhead" or measured is None:
            return text
        return " ".join(part for part in (text, overhead_range_label(measured), self.serving_mode) if part)

    @property
    def noise_note(self) -> str:
        n = len(self.runs)
        if n >= 2:
            return f"{n} seeds"
        if self.per_item_correct is not None:
            return "single run (item-level noise only)"
        return "single run (noise not measured)"

    def fields(self) -> dict[str, Any]:
        """What filter expressions and the HTML table can refer to by name."""
        return {
            "name": self.name,
            "experiment": self.experiment_name,
            "method": self.runs[0].result.method,
            "config": self.runs[0].result.name,
            "task": self.task,
            "peft_type": self.peft_type or "",
            "n_runs": len(self.runs),
            "lr": self.learning_rate if self.learning_rate is not None else self.runs[0].learning_rate,
            "sweep_stage": self.sweep_stage or "",
            "converted": self.conversion_rank is not None,
            "serving_mode": self.serving_mode,
            **{metric: self.mean(metric) for metric in METRICS},
        }


def _sweep_stage(run: RunView) -> str | None:
    """Search trials (roles "trial"/"default") and tuned seed runs (role "seed") are never pooled: the
    search trial at the chosen rate was picked for its luck on validation."""
    sweep = run.extra("sweep")
    if sweep is None:
        return None
    return "tuned" if sweep.get("role") == "seed" else "search"


def _sweep_lr(run: RunView) -> float | None:
    return finite_number((run.extra("sweep") or {}).get("lr"))


def _conversion_rank(run: RunView) -> Any:
    conversion = run.extra("conversion")
    if conversion is None:
        return None
    rank = conversion.get("rank")
    return rank if isinstance(rank, (int, float, str)) and not isinstance(rank, bool) else "?"


def _aggregate(point: Point) -> None:
    for metric in METRICS:
        present = [run.metrics[metric] for run in point.runs if run.metrics.get(metric) is not None]
        point.values[metric] = bootstrap_mean_ci(present) if present else None
    point.per_item_correct = mean_per_item([run.per_item_correct for run in point.runs if run.per_item_correct])
    # With one run and its per-item correctness, the test set's own sampling noise is what we know.
    if len(point.runs) == 1 and point.per_item_correct is not None and point.values.get("test_score"):
        item_ci = bootstrap_mean_ci(point.per_item_correct)
        point.values["test_score"] = MeanCI(point.values["test_score"].mean, item_ci.low, item_ci.high, 1, 0.95)


def _base_name(experiment: str, stage: str | None, lr: float | None, rank: Any) -> str:
    name = experiment
    if stage == "tuned":
        name += f" tuned lr={format_lr(lr)}" if lr is not None else " tuned"
    elif lr is not None:
        name += f" lr={format_lr(lr)}"
    if rank is not None:
        name += f" -> LoRA r{rank}"
    return name


def build_points(runs: list[RunView]) -> tuple[list[Point], list[LoadWarning]]:
    """Group runs into points (seeds aggregated). Warns about repeated seeds, which are counted once."""
    groups: dict[tuple, list[RunView]] = defaultdict(list)
    warnings: list[LoadWarning] = []
    for run in runs:
        # a published result and a peftbench run of the same experiment are two points, never one's two seeds
        key = (run.result.task, run.result.experiment_name, _sweep_stage(run), _sweep_lr(run), _conversion_rank(run),
               run.source)
        same_seed = [other for other in groups[key] if run.seed is not None and other.seed == run.seed]
        if same_seed:
            warnings.append(
                LoadWarning(run.path, f"same experiment and seed {run.seed} as {same_seed[0].path.name}; counted once")
            )
            continue
        groups[key].append(run)

    base_names = {key: _base_name(*key[1:5]) for key in groups}
    tasks_per_name: dict[str, set[str]] = defaultdict(set)
    sources_per_name: dict[str, set[str]] = defaultdict(set)
    for key, base in base_names.items():
        tasks_per_name[base].add(key[0])
        sources_per_name[base].add(key[5])
    points: list[Point] = []
    used_names: set[str] = set()
    for key, runs in groups.items():
        task, experiment, stage, lr, rank, source = key
        name = base_names[key]
        if len(sources_per_name[name]) > 1 and source == PEFT_SUITE_SOURCE:  # also run by peftbench
            name = f"{name} (published)"
        if len(tasks_per_name[name]) > 1:  # the same experiment run on several tasks
            name = f"{task}: {name}"
        while name in used_names:  # only hostile or odd inputs get here
            name += "'"
        used_names.add(name)
        point = Point(
            name=name,
            experiment_name=experiment,
            task=task,
            runs=sorted(runs, key=lambda r: (r.seed is None, r.seed or 0)),
            learning_rate=lr,
            sweep_stage=stage,
            conversion_rank=rank,
        )
        _aggregate(point)
        points.append(point)
    return points, warnings


def points_by_task(points: Sequence[Point]) -> dict[str, list[Point]]:
    """The points of each task, tasks in the order they first appear: results of different tasks are never
    compared with each other."""
    by_task: dict[str, list[Point]] = {}
    for point in points:
        by_task.setdefault(point.task, []).append(point)
    return by_task


def task_oriented(metric: Metric, task_points: list[Point]) -> Metric:
    """`metric` with the direction the task's result files declare: the score's `higher_is_better` and the
    forgetting measure's `forgetting_higher_is_better` (drift and forgetting: lower is better)."""
    if not task_points:
        return metric
    result = task_points[0].runs[0].result
    declared = {"test_score": result.higher_is_better, "valid_score": result.higher_is_better,
                "forgetting": result.forgetting_higher_is_better}
    return oriented(metric, declared.get(metric.name))


def memory_axis(metric: Metric, points: Sequence[Point]) -> Metric:
    """`metric`, unless it is the tensor-level `peak_memory` and no point has one (published results only): then
    the whole run's process-level peak, the memory figure those results hold, named as what it is."""
    if metric.name != "peak_memory" or any(p.mean("peak_memory") is not None for p in points):
        return metric
    fallback = METRICS["peak_memory_total"]
    return fallback if any(p.mean(fallback.name) is not None for p in points) else metric
