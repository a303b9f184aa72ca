"""General ability after fine-tuning, measured with lm-evaluation-harness (the optional `lm-eval` package).

The trained model object is wrapped in lm-eval's HFLM and evaluated on the requested harness tasks twice:
with the adapter active and with it disabled (for full fine-tuning: the base model before training). The
scores and their differences go into the result file (`peftbench.harness`), and the report reads the mean
difference as the metric `harness_change` (forgetting as measured by standard benchmarks).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, ContextManager, Optional

from peftbench.config import ConfigError

# Numbers in lm-eval's per-task results that are not scores.
NOT_SCORES = ("sample_len", "samples")
INSTALL_HINT = "lm-eval is not installed: pip install 'peftbench[harness]' (or pip install lm-eval)"


def check_harness(task_names: list[str], include_path: Optional[str]) -> None:
    """Before anything loads: lm-eval imports and knows every task name (searching `include_path` too)."""
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise ConfigError(f"--harness-tasks {','.join(task_names)}: {INSTALL_HINT}") from None
    manager = TaskManager(include_path=include_path)
    unknown = [name for name in task_names if name not in manager.all_tasks]
    if unknown:
        where = f" (nor in {include_path})" if include_path else " (give --harness-include for your own task YAMLs)"
        raise ConfigError(f"--harness-tasks: unknown lm-eval task(s) {', '.join(unknown)}{where}")


def harness_scores(model, tokenizer, task_names: list[str], *, include_path: Optional[str], batch_size: int,
                   max_length: int, limit: Optional[int]) -> dict[str, dict[str, float]]:
    """Per task, lm-eval's metrics (`acc`, `acc_norm`, `exact_match`, ...) of `model` as it is now."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    was_training = model.training
    model.eval()
    wrapped = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length)
    output = lm_eval.simple_evaluate(
        model=wrapped, tasks=list(task_names), limit=limit, log_samples=False, bootstrap_iters=0,
        task_manager=TaskManager(include_path=include_path),
    )
    model.train(was_training)
    scores: dict[str, dict[str, float]] = {}
    for task, values in output["results"].items():
        # lm-eval names a metric "<metric>,<filter>"; standard errors are left out (bootstrap_iters=0)
        scores[task] = {
            key.split(",")[0] if key.endswith(",none") else key: float(value)
            for key, value in values.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and "_stderr" not in key
            and key.split(",")[0] not in NOT_SCORES
        }
    return scores


def measure_harness(model, tokenizer, task_names: list[str], *, include_path: Optional[str], batch_size: int,
                    max_length: int, limit: Optional[int], adapter_disabled: Optional[Callable[[], ContextManager]],
                    reference: Optional[dict[str, dict[str, float]]] = None) -> dict[str, Any]:
    """Scores after training, without the adapter (or `reference`, measured before full fine-tuning), and
    their differences; `mean_difference` averages each task's first metric (after minus before)."""
    tic = time.perf_counter()
    kwargs = dict(include_path=include_path, batch_size=batch_size, max_length=max_length, limit=limit)
    after = harness_scores(model, tokenizer, task_names, **kwargs)
    if reference is None:
        with adapter_disabled() if adapter_disabled is not None else contextlib.nullcontext():
            reference = harness_scores(model, tokenizer, task_names, **kwargs)
    tasks: dict[str, Any] = {}
    for task, metrics in after.items():
        tasks[task] = {
            metric: {"after": value, "before": reference.get(task, {}).get(metric),
                     "difference": value - reference[task][metric] if metric in reference.get(task, {}) else None}
            for metric, value in metrics.items()
        }
    headline = [next(iter(m.values()))["difference"] for m in tasks.values() if m]
    headline = [d for d in headline if d is not None]
    return {
        "tasks": tasks, "limit": limit,
        "mean_difference": sum(headline) / len(headline) if headline else None,
        "time_s": time.perf_counter() - tic,
    }
