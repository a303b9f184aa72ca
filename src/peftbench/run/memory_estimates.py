"""`peftbench memory`'s work: each experiment planned as a run would be, then traced without its weights."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftbench.config import ConfigError
from peftbench.run.plan import RunPlan, plan_run
from peftbench.run.request import RunRequest
from peftbench.training.memory_estimate import (
    MemoryEstimate, batch_shapes, check_text_task, estimate_training_memory, load_model_config, load_tokenizer_if_any,
)


@dataclass
class EstimateFailure:
    """An experiment that got no estimate: bad input (exit code 2) or a method that cannot be traced (1)."""

    experiment_name: str
    message: str
    exit_code: int


def prepare_estimates(task_name: str, experiments: list[Path], overrides: dict[str, Any]) -> list[RunPlan]:
    """The plans of `experiments`, each checked as `peftbench memory` needs it; ConfigError on bad input."""
    prepared = [plan_run(RunRequest(task=task_name, results_dir=".", experiment_dir=str(path), overrides=overrides))
                for path in experiments]
    for run in prepared:
        check_text_task(run.task)
        load_model_config(run.config)
    return prepared


def estimate_prepared_run(run: RunPlan) -> MemoryEstimate | EstimateFailure:
    """The estimate of one prepared run, or why there is none."""
    try:
        tokenizer = load_tokenizer_if_any(run.task, run.config)
        shapes = batch_shapes(run.task, run.config, tokenizer)
        with warnings.catch_warnings():  # peft's and transformers' remarks on a model without weights
            warnings.simplefilter("ignore")
            return estimate_training_memory(run.spec, run.task, run.config, shapes, tokenizer)
    except ConfigError as error:
        return EstimateFailure(run.experiment_name, f"{run.experiment_name}: {error}", exit_code=2)
    except Exception as error:  # e.g. a method whose initialisation needs the weights' values
        first_line = (str(error).splitlines() or [""])[0][:200]
        why = ("this method computes shapes from tensor values (nonzero, bincount, a clustering of the weights), "
               "which a model without data cannot give" if _needs_values(error)
               else "`peftbench run` with track_memory measures it instead")
        return EstimateFailure(run.experiment_name, (
            f"{run.experiment_name}: could not be traced without the model's weights ({type(error).__name__}: "
            f"{first_line}); {why}"), exit_code=1)


def _needs_values(error: Exception) -> bool:
    """Whether tracing stopped at a shape or value only data could give: fake tensors' own errors, or torch's
    meta kernels saying so (nonzero's)."""
    from torch._subclasses.fake_tensor import DataDependentOutputException, DynamicOutputShapeException

    return (isinstance(error, (DataDependentOutputException, DynamicOutputShapeException))
            or "data-independent" in str(error) or "data-dependent" in str(error))
