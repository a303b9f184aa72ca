"""The metrics registry: every measurement that can be an axis, its direction, its unit and where it is read.

Friendly names (`test_score`, `peak_memory`, ...) are what users type on the command line and in filter
expressions. Each metric names its source: a field of the run's RunResult (`result.<field>`, which the reader
fills from peftbench's own section or from the PEFT suite's layout alike), a key below one (`result.extra.
harness.mean_difference`), or a field of the joined inference measurement (`inference.<field>`); with several,
the first that holds a value. A new axis is one line below (analysis/runs.py reads it; nothing else names it).

Memory figures are of different kinds and never share an axis: `peak_memory` is peftbench's tensor-level peak
(bytes of live tensors in training), which the PEFT suite does not measure, so a published result has none;
the suite's `accelerator_memory_max` (peak reserved accelerator memory of the whole run) is `peak_memory_total`,
the process-level figure peftbench records beside it (RSS on CPU, reserved on CUDA: `peak_memory_kind`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

Direction = Literal["max", "min"]
Unit = Literal["score", "bytes", "seconds", "count", "rate", "loss", "percent"]


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    direction: Direction
    unit: Unit
    help: str
    # where the value is read (see the module's docstring): a dotted path, or several tried in order
    source: str | tuple[str, ...] = ()
    # Deterministic measurements (sizes, parameter counts) need no error bars: two runs of the same
    # config give the same number, so any difference between two configs is real.
    exact: bool = False

    @property
    def sources(self) -> tuple[str, ...]:
        return (self.source,) if isinstance(self.source, str) else self.source

    @property
    def valid_range(self) -> tuple[float, float]:
        return UNIT_RANGES[self.unit]

    def in_range(self, value: float) -> bool:
        low, high = UNIT_RANGES[self.unit]
        return low <= value <= high

    @property
    def higher_is_better(self) -> bool:
        return self.direction == "max"

    def better(self, a: float, b: float) -> bool:
        """Whether value `a` is strictly better than `b` on this metric."""
        return a > b if self.higher_is_better else a < b

    def advantage(self, a: float, b: float) -> float:
        """How much better `a` is than `b`, positive when better, in the metric's own unit."""
        return a - b if self.higher_is_better else b - a


# The physically possible values per unit, generously. A value outside is not a measurement but a corrupt or
# hostile file (a test score of 1e308, memory of -5 B): the reader drops it with a warning, so that it can
# neither win a comparison nor break a table or a plot.
UNIT_RANGES: dict[str, tuple[float, float]] = {
    "score": (-1.0, 1.0),  # accuracy is in [0, 1]; DINO similarity, a cosine, in [-1, 1]
    "bytes": (0.0, 2.0**60),  # up to 1 EiB
    "seconds": (0.0, 1e8),  # up to three years
    "count": (0.0, 1e15),
    "rate": (0.0, 1e12),
    "loss": (-1e6, 1e6),  # forgetting is a loss difference, so it may be negative
    "percent": (-100.0, 1e6),  # an overhead: a time can shrink by at most 100%
}

METRICS: dict[str, Metric] = {
    metric.name: metric
    for metric in [
        Metric("test_score", "test score", "max", "score", "headline test score (accuracy, DINO similarity)",
               source="result.test_score"),
        Metric("valid_score", "valid score", "max", "score", "last validation score", source="result.valid_score"),
        Metric("peak_memory", "peak tensor memory", "min", "bytes",
               "peak bytes of live tensors while training, as torch.cuda.max_memory_allocated (peftbench runs only)",
               source="result.peak_memory_train_allocated_bytes"),
        Metric("peak_memory_process", "peak RSS/reserved", "min", "bytes",
               "process-level peak while training: RSS on CPU, reserved on CUDA", source="result.peak_memory_train_bytes"),
        Metric("peak_memory_total", "peak RSS/reserved (whole run)", "min", "bytes",
               "process-level peak of the whole run: RSS on CPU, reserved on CUDA (the PEFT suite's accelerator_memory_max)",
               source="result.peak_memory_total_bytes"),
        Metric("memory_reserved_avg", "avg reserved memory", "min", "bytes", "mean reserved accelerator memory",
               source="result.memory_reserved_avg"),
        Metric("memory_reserved_99th", "99th pct reserved memory", "min", "bytes", "99th percentile of memory",
               source="result.memory_reserved_99th"),
        Metric("train_time", "train time", "min", "seconds", "training time without evaluation",
               source=("result.train_time_s", "result.suite_train_time_s")),
        Metric("eval_time", "eval time", "min", "seconds", "evaluation time", source="result.eval_time_s"),
        Metric("total_time", "total time", "min", "seconds", "wall time of the whole run", source="result.total_time_s"),
        Metric("tokens_per_second", "tokens/s", "max", "rate", "training throughput of text tasks",
               source="result.tokens_per_second"),
        Metric("throughput", "throughput", "max", "rate", "training throughput in the task's unit (tokens/s, images/s)",
               source=("result.throughput", "result.tokens_per_second")),
        Metric("file_size", "file size", "min", "bytes", "adapter checkpoint size on disk",
               source="result.checkpoint_size_bytes", exact=True),
        Metric("trainable_params", "trainable params", "min", "count", "trainable parameters",
               source="result.trainable_params", exact=True),
        Metric("total_params", "total params", "min", "count", "all parameters of the model",
               source="result.total_params", exact=True),
        Metric("forgetting", "forgetting", "min", "loss", "loss increase on held-out base text (image: drift)",
               source="result.forgetting"),
        Metric("harness_change", "harness change", "max", "score",
               "lm-eval score with the adapter minus without it, mean over the run's harness tasks",
               source="result.extra.harness.mean_difference"),
        Metric("final_train_loss", "final train loss", "min", "loss", "train loss of the last logged step",
               source="result.final_train_loss"),
        # `peftbench infer`, joined by result name from RESULTS/inference/ (results/inference_record.py)
        Metric("inference_overhead", "inference overhead", "min", "percent",
               "generation time against the base model, in %, served the cheapest way: merged where the method can",
               source="inference.inference_overhead_pct"),
        Metric("inference_overhead_unmerged", "inference overhead (unmerged)", "min", "percent",
               "generation time against the base model, in %, with the adapter un-merged (as peft serves it)",
               source="inference.modes.unmerged.overhead_pct"),
        Metric("inference_overhead_converted", "inference overhead (as LoRA)", "min", "percent",
               "generation time against the base model, in %, of the adapter converted to LoRA, un-merged",
               source="inference.modes.converted.overhead_pct"),
    ]
}

ALIASES = {
    "score": "test_score",
    "accuracy": "test_score",
    "test_accuracy": "test_score",
    "memory": "peak_memory",
    "peak_memory_train": "peak_memory",
    "allocated": "peak_memory",
    "rss": "peak_memory_process",
    "reserved": "peak_memory_process",
    "time": "train_time",
    "size": "file_size",
    "checkpoint_size": "file_size",
    "params": "trainable_params",
    "drift": "forgetting",
    # the PEFT suite's and peftbench's own field names
    "dino_similarity": "test_score",
    "accelerator_memory_max": "peak_memory_total",
    "peak_memory_train_allocated_bytes": "peak_memory",
    "peak_memory_train_bytes": "peak_memory_process",
    "peak_memory_total_bytes": "peak_memory_total",
    "accelerator_memory_reserved_avg": "memory_reserved_avg",
    "accelerator_memory_reserved_99th": "memory_reserved_99th",
    "train_time_s": "train_time",
    "eval_time_s": "eval_time",
    "total_time_s": "total_time",
    "checkpoint_size_bytes": "file_size",
    "num_trainable_params": "trainable_params",
    "num_total_params": "total_params",
    "train_loss": "final_train_loss",
    "overhead": "inference_overhead",
    "inference_overhead_pct": "inference_overhead",
}


def oriented(metric: Metric, higher_is_better: bool | None) -> Metric:
    """`metric` with the direction a task's result files give it (None: the registry's)."""
    if higher_is_better is None or metric.higher_is_better == higher_is_better:
        return metric
    return replace(metric, direction="max" if higher_is_better else "min")


def get_metric(name: str) -> Metric:
    """The metric called `name` (or one of its aliases); a clear error listing the valid names otherwise."""
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    key = ALIASES.get(key, key)
    if key not in METRICS:
        raise KeyError(f"unknown metric {name!r}; valid metrics: {', '.join(METRICS)}")
    return METRICS[key]


def _format_scaled(value: float, steps: list[tuple[float, str]]) -> str:
    scale, suffix = next(((scale, suffix) for scale, suffix in steps if abs(value) >= scale), steps[-1])
    scaled = value / scale
    digits = 0 if abs(scaled) >= 100 else 1 if abs(scaled) >= 10 else 2
    return f"{scaled:.{digits}f} {suffix}".rstrip()


def format_value(metric: Metric, value: float | None) -> str:
    """A human-readable value: GiB/MiB for bytes, s/min/h for times, M/k for counts."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if metric.unit == "bytes":
        return _format_scaled(value, [(2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB"), (1, "B")])
    if metric.unit == "seconds":
        if abs(value) >= 3600:
            return f"{value / 3600:.2f} h"
        if abs(value) >= 120:
            return f"{value / 60:.1f} min"
        return f"{value:.3g} s"
    if metric.unit == "count":
        return _format_scaled(value, [(1e9, "B"), (1e6, "M"), (1e3, "k"), (1, "")])
    if metric.unit == "rate":
        return f"{value:,.0f}/s"
    if metric.unit == "percent":
        return f"{value:+.1f}%"
    return f"{value:.4g}" if metric.unit == "loss" else f"{value:.3f}"


# [scale, suffix, smallest value that uses it] per unit, largest first (as format_value chooses them).
AXIS_UNITS: dict[str, list[tuple[float, str, float]]] = {
    "bytes": [(2**40, "TiB", 2**40), (2**30, "GiB", 2**30), (2**20, "MiB", 2**20), (2**10, "KiB", 2**10), (1, "B", 0)],
    "seconds": [(3600, "h", 7200), (60, "min", 120), (1, "s", 0)],
    "count": [(1e9, "B", 1e9), (1e6, "M", 1e6), (1e3, "k", 1e3), (1, "", 0)],
}


def axis_unit(metric: Metric, values: list[float]) -> tuple[float, str]:
    """One readable unit for a plot axis, chosen from the largest value: (scale to divide by, suffix)."""
    steps = AXIS_UNITS.get(metric.unit)
    if not steps:
        return 1.0, ""
    largest = max((abs(v) for v in values), default=0.0)
    scale, suffix, _ = next(step for step in steps if largest >= step[2])
    return float(scale), suffix
