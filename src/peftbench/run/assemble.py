"""The run's result: `new_result` (who, what, which config, before anything is measured) and `fill`, which copies
what a phase measured into it by the names of RunResult's fields: a phase names its figures as the result does
(TrainOutcome, MemoryReport, the dicts the phases return), and nothing here lists them one by one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, Optional

from peftbench.hardware import precision_name
from peftbench.results.record import RunResult
from peftbench.run.plan import RunPlan

RESULT_FIELDS = frozenset(item.name for item in dataclasses.fields(RunResult))


def now_utc() -> str:
    return dt.datetime.now(tz=dt.timezone.utc).replace(microsecond=0).isoformat()


def new_result(plan: RunPlan, status: str, created_at: Optional[str] = None, error_msg: str = "") -> RunResult:
    """The result of a run before it has measured anything: who, what, which config."""
    task, config = plan.task, plan.config
    return RunResult(
        task=task.name, method=plan.method, name=plan.name, experiment_name=plan.experiment_name,
        seed=config.seed, status=status, error_msg=error_msg, created_at=created_at or now_utc(),
        git_commit=plan.git_commit, train_config=config.to_dict(), score_name=task.score_name,
        higher_is_better=task.higher_is_better, forgetting_name=task.forgetting_name,
        forgetting_higher_is_better=task.forgetting_higher_is_better,
        throughput_unit=f"{task.throughput_unit}/s", suite_memory_scope=task.suite_memory_scope,
        model_id=config.model_id, extra={**task.provenance(), **plan.request.result_fields()},
        precision=precision_name(config.dtype, config.use_amp), hardware=plan.hardware,
    )


def fill(result: RunResult, measured: Any) -> None:
    """Copy into `result` every value of `measured` (a dict, or a dataclass) whose name is a field of RunResult;
    a dict's `extra` is added to the result's. Other names (a phase's working values) are left out."""
    values = measured if isinstance(measured, dict) else {
        item.name: getattr(measured, item.name) for item in dataclasses.fields(measured)
    }
    for name, value in values.items():
        if name == "extra":
            result.extra.update(value)
        elif name in RESULT_FIELDS:
            setattr(result, name, value)


def memory_log_summary(memory_log: list[int]) -> dict[str, Optional[int]]:
    """The mean and 99th percentile of the memory sampled during training: the PEFT suite's reserved-memory
    figures."""
    if not memory_log:
        return {"memory_reserved_avg": None, "memory_reserved_99th": None}
    ordered = sorted(memory_log)
    index = min(len(ordered) - 1, max(0, round(0.99 * (len(ordered) - 1))))
    return {"memory_reserved_avg": int(sum(memory_log) / len(memory_log)), "memory_reserved_99th": int(ordered[index])}


def peft_config_dict(peft_config) -> Optional[dict[str, Any]]:
    if peft_config is None:
        return None
    return {k: (sorted(v) if isinstance(v, set) else v) for k, v in peft_config.to_dict().items()}


def item_predictions(test) -> list[dict[str, Any]]:
    """Each test item's input, prediction, target and score, for people to read (the report shows some)."""
    if not test.targets:
        return []
    inputs = test.inputs or [None] * len(test.targets)
    return [
        {"input": text, "prediction": prediction, "target": target, "score": score}
        for text, prediction, target, score in zip(inputs, test.predictions, test.targets, test.per_item_correct)
    ]
