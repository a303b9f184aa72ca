"""`peftbench infer` below the command line: the base model once, then each target, each in its own child
process (runners.isolated.run_in_child: warm forks, signals forwarded), one result file each.

Everything that can be checked without a model is checked first (task, settings, prompts, results folder);
a target that cannot be measured gets a `failed` result naming its folder, and the others are still measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from peftbench.inference.settings import InferenceSettings
from peftbench.inference.targets import InferenceTarget
from peftbench.results.inference_record import (
    BASE_STEM,
    InferenceResult,
    inference_path,
    read_inference_file,
    write_inference,
)


@dataclass
class InferenceOutcome:
    label: str  # "base model" or "<method>/<name>"
    path: Path
    result: Optional[InferenceResult]  # None: skipped without reading
    skipped: bool = False

    @property
    def status(self) -> str:
        return self.result.status if self.result is not None else "failed"


def check_inference(task_name: str, overrides: dict[str, Any], settings_overrides: dict[str, Any],
                    results_dir: Path) -> InferenceSettings:
    """Task, its parameters, the inference settings and the results folder, before any model loads
    (ConfigError naming what is wrong)."""
    from peftbench.results.writer import check_writable
    from peftbench.tasks import get_task

    task = get_task(task_name)
    config = task.build_config({}, "the task's defaults", overrides, "--task-set")
    task.check_inputs(config)
    settings = InferenceSettings.build(task.inference_params, settings_overrides)
    check_writable(results_dir / "inference")
    return settings


def measure_all(targets: list[InferenceTarget], *, task_name: str, results_dir: Path, overrides: dict[str, Any],
                settings_overrides: dict[str, Any], num_threads: Optional[int], force: bool,
                on_start: Callable[[str], None] = lambda label: None,
                on_done: Callable[[InferenceOutcome], None] = lambda outcome: None) -> list[InferenceOutcome]:
    """Measure the base model once (PEFT's absolute figures, when any target needs measuring), then each target;
    existing successful results of the same task are kept unless `force`."""
    job = {"job": "infer", "task": task_name, "overrides": overrides, "settings": settings_overrides,
           "num_threads": num_threads}
    outcomes: list[InferenceOutcome] = []
    todo = []
    for target in targets:
        path = inference_path(results_dir, target.stem)
        existing, _ = read_inference_file(path)
        if not force and existing is not None and existing.status == "success" and existing.task == task_name:
            outcomes.append(InferenceOutcome(f"{target.method}/{target.name}", path, existing, skipped=True))
            on_done(outcomes[-1])
        else:
            todo.append(target)
    if not todo:
        return outcomes
    on_start("base model")
    base = _measure_one({**job, "target": None}, inference_path(results_dir, BASE_STEM), "base model")
    outcomes.append(base)
    on_done(base)
    for target in todo:
        label = f"{target.method}/{target.name}"
        on_start(label)
        path = inference_path(results_dir, target.stem)
        outcome = _measure_one({**job, "target": target.to_dict()}, path, label)
        outcomes.append(outcome)
        on_done(outcome)
    return outcomes


def _measure_one(job: dict[str, Any], path: Path, label: str) -> InferenceOutcome:
    from peftbench.runners.isolated import died_without_result, run_in_child
    from peftbench.runners.oom import oom_kill_count

    path.parent.mkdir(parents=True, exist_ok=True)
    before = path.stat().st_mtime_ns if path.exists() else None
    oom_kills_before = oom_kill_count()
    ended = run_in_child({**job, "result_file": str(path)}, echo=True)
    written = path.exists() and path.stat().st_mtime_ns != before
    if not written:
        status, message = died_without_result(ended, oom_kills_before)
        target = InferenceTarget(**job["target"]) if job.get("target") else None
        _write_failed(path, job, target, message, status)
    if ended.interrupt is not None:
        raise ended.interrupt
    return InferenceOutcome(label, path, read_inference_file(path)[0])


def _write_failed(path: Path, job: dict[str, Any], target: Optional[InferenceTarget], message: str,
                  status: str = "failed") -> None:
    result = InferenceResult(
        task=job["task"], status=status, error_msg=message, adapter_state=target.state if target else "base",
        method=target.method if target else "", name=target.name if target else "",
        experiment_name=f"{target.method}/{target.name}" if target else "", source=target.folder if target else "",
    )
    write_inference(path, result)
