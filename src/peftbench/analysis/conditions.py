"""Experimental conditions that must be equal for a comparison to be fair, and the warning when they differ.

A condition is a property of a run that moves scores or costs but is not the method: the precision it computed
in, the hardware it ran on, which tokens the loss covered, the order of the training batches, the kernel of
its fp32 linear layers on a CPU. Results compared
under different conditions compare the conditions as much as the methods, so `report` and `recommend` warn,
naming the runs. One mechanism serves every condition: CONDITIONS maps a name to a function that reads it
from a run; adding a condition is one entry.

A key absent from a result file means the behaviour of the code that wrote it: peftbench results from before a
key existed trained with the loss on the completion and shuffled batches; the PEFT suite's published results
train on the whole sequence, in its own batch order, on hardware they do not record. A training-parameter
condition applies to a task only where at least one of its results records the key (an image-generation task
has no `loss_on`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from peftbench.analysis.points import Point, points_by_task
from peftbench.analysis.runs import RunView

UNKNOWN_HARDWARE = "unknown (not recorded)"
PUBLISHED_HARDWARE = "published (not recorded)"


def run_precision(run: RunView) -> str:
    from peftbench.hardware import precision_name

    if run.result.precision:
        return run.result.precision
    config = run.result.train_config
    dtype = config.get("dtype") if isinstance(config.get("dtype"), str) else None
    return precision_name(dtype, config.get("use_amp") is True)


def run_hardware(run: RunView) -> str:
    if run.source != "peftbench":
        return PUBLISHED_HARDWARE
    hardware = run.result.hardware or {}
    name = hardware.get("name") if isinstance(hardware.get("name"), str) else None
    device = hardware.get("device") if isinstance(hardware.get("device"), str) else None
    if name and device == "cpu":
        flags = hardware.get("flags")
        flags = [f for f in flags if isinstance(f, str)] if isinstance(flags, list) else []
        capability = hardware.get("torch_cpu_capability")
        if isinstance(capability, str):  # the kernels torch used: an emulated older CPU differs here
            flags.append(f"torch {capability}")
        return f"CPU {name}" + (f" ({' '.join(flags)})" if flags else "")
    if name:
        return f"GPU {name}"
    if run.result.device and run.result.device != "cpu":  # older peftbench results: the CUDA device name only
        return f"GPU {run.result.device}"
    return UNKNOWN_HARDWARE


class _TrainConfigKey:
    """A training parameter as a condition, with the value that a result without the key trained with."""

    def __init__(self, key: str, peftbench_default: str, published_default: str) -> None:
        self.key, self.peftbench_default, self.published_default = key, peftbench_default, published_default

    def applies(self, runs: Sequence[RunView]) -> bool:
        return any(self.key in run.result.train_config for run in runs)

    def __call__(self, run: RunView) -> str:
        value = run.result.train_config.get(self.key)
        if isinstance(value, str) and value:
            return value
        return self.peftbench_default if run.source == "peftbench" else self.published_default


CONDITIONS: dict[str, Callable[[RunView], str]] = {
    "precision": run_precision,
    "hardware": run_hardware,
    "loss_on": _TrainConfigKey("loss_on", "completion", "sequence"),
    "batch_order": _TrainConfigKey("batch_order", "shuffled", "peft"),
    # results written before these keys padded with the tokenizer's own pad token and decoded greedily
    "pad_token": _TrainConfigKey("pad_token", "tokenizer", "eos"),
    "decoding": _TrainConfigKey("decoding", "greedy", "model"),
    # the fp32 kernel moves the time axis (and the last digits of losses); results before the key used torch's
    "cpu_matmul": _TrainConfigKey("cpu_matmul", "torch", "torch"),
}

# How many point names a warning lists per value before "and N more".
NAMES_SHOWN = 4


@dataclass(frozen=True)
class ConditionWarning:
    """Compared results differ in one condition: which values, and which points have each."""

    task: str
    condition: str
    names_by_value: dict[str, list[str]]

    def __str__(self) -> str:
        parts = []
        for value, names in self.names_by_value.items():
            shown = ", ".join(names[:NAMES_SHOWN])
            more = f" and {len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else ""
            parts.append(f"{value!r} in {shown}{more}")
        return (
            f"task {self.task}: results differ in {self.condition} ({'; '.join(parts)}); "
            f"a comparison across {self.condition} is not fair"
        )


def condition_warnings(points: Sequence[Point]) -> list[ConditionWarning]:
    """One warning per task and condition where the compared points' runs do not all share one value."""
    warnings = []
    for task, task_points in points_by_task(points).items():
        task_runs = [run for point in task_points for run in point.runs]
        for condition, read in CONDITIONS.items():
            if hasattr(read, "applies") and not read.applies(task_runs):
                continue
            names_by_value: dict[str, list[str]] = {}
            for point in task_points:
                for value in dict.fromkeys(read(run) for run in point.runs):
                    names_by_value.setdefault(value, []).append(point.name)
            if len(names_by_value) > 1:
                warnings.append(ConditionWarning(task, condition, names_by_value))
    return warnings
