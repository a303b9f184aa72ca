"""Running trials: one interface (`run_trials`), two backends (a local worker pool, Ray).

A *trial* is a JSON-able dict describing one run of one experiment; it crosses process and machine
boundaries unchanged (Ray ships it to a worker as it is):

    trial_id            unique within a batch; the result file's stem
    experiment_dir      absolute path of the experiment folder
    task                task name, e.g. "math-tiny"
    results_dir         absolute path of the results folder (shared by every worker)
    result_name         file-name stem of the result file (`<method>--<name>--lr<lr>--seed<s>`)
    overrides           training-parameter overrides (TrainConfig keys), e.g. {"optimizer_kwargs": {"lr": 1e-3}}
    seed                the run's seed
    extra_result_fields fields added to the result's `peftbench` section, e.g. {"sweep": {...}}
    force               run even when a result file exists
    keep_killed         keep existing oom/killed results instead of running them again
    save_checkpoint     keep the trained adapter
    num_threads         torch CPU threads; set by the backend (cores split fairly between workers)
    show_progress       the child's own progress bars (default off: the batch reports progress itself)
    progress_file       where the child writes its step progress (set by run_trials; see runners.progress)

`execute_trial(trial)` runs one trial through the engine's single-experiment runner, which starts its
own child process, so a crash, an OOM or a leak stays inside that child. Both backends call the same
function; they differ only in where and how many at once. This module imports nothing heavy.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from peftbench.runners.progress import PROGRESS_DIR

BACKENDS = ("local", "ray")


@dataclass
class TrialOutcome:
    """What a backend reports for one trial. The result file is the record; this is only the receipt."""

    trial_id: str
    status: str  # success | failed | oom | killed | diverged | cancelled (the result file's status)
    result_path: Optional[str]
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Trial = dict[str, Any]
TrialExecutor = Callable[[Trial], TrialOutcome]
OutcomeCallback = Callable[[TrialOutcome], None]


def available_cores() -> int:
    """CPU cores this process may use (the affinity mask, not the machine's total, where known)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def threads_per_worker(workers: int, cores: Optional[int] = None) -> int:
    """Torch threads for each of `workers` concurrent trials: the cores split evenly, at least one each."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    return max(1, (cores or available_cores()) // workers)


def execute_trial(trial: Trial) -> TrialOutcome:
    """Run one trial with the engine's single-experiment runner (a child process) and report its status."""
    from peftbench.runners.local import run_experiment

    result_path, status = run_experiment(
        trial["experiment_dir"],
        trial["task"],
        trial["results_dir"],
        overrides=trial.get("overrides") or {},
        seed=trial.get("seed"),
        force=trial.get("force", False),
        keep_killed=trial.get("keep_killed", False),
        save_checkpoint=trial.get("save_checkpoint", False),
        result_name=trial.get("result_name"),
        extra_result_fields=trial.get("extra_result_fields"),
        num_threads=trial.get("num_threads"),
        show_progress=trial.get("show_progress", False),  # the batch reports progress, not each child
        progress_file=trial.get("progress_file"),
    )
    return TrialOutcome(trial_id=trial["trial_id"], status=status, result_path=str(result_path) if result_path else None)


def guarded(execute: TrialExecutor, trial: Trial) -> TrialOutcome:
    """Call `execute`, turning an exception into a `failed` outcome so one broken trial never stops a batch."""
    try:
        return execute(trial)
    except Exception as error:  # noqa: BLE001 - any error of one trial is that trial's failure
        return TrialOutcome(trial["trial_id"], "failed", None, f"{type(error).__name__}: {error}")


def run_trials(
    trials: list[Trial],
    *,
    backend: str = "local",
    workers: int = 1,
    ray_address: Optional[str] = None,
    execute: TrialExecutor = execute_trial,
    on_done: Optional[OutcomeCallback] = None,
    description: str = "trials",
    show_progress: bool = True,
) -> list[TrialOutcome]:
    """Run `trials` with up to `workers` at once on `backend`; return their outcomes in completion order.

    A failing trial is reported as such and the others go on. Ctrl-C (KeyboardInterrupt) cancels what
    has not started, stops what is running and re-raises; finished result files are left as they are.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if not trials:
        return []

    from rich.console import Console

    from peftbench.runners.progress import BatchProgress

    outcomes: list[TrialOutcome] = []
    results_dirs = {trial.get("results_dir") for trial in trials}
    progress_root = Path(results_dirs.pop()) / PROGRESS_DIR if len(results_dirs) == 1 and None not in results_dirs else None
    progress = BatchProgress(
        [trial["trial_id"] for trial in trials], workers, description,
        console=Console(stderr=True, quiet=not show_progress),
        # under the results folder, which Ray workers share; one private folder per batch
        progress_dir=progress_root / f"{os.getpid()}-{uuid.uuid4().hex[:8]}" if progress_root else None,
    )
    trials = [{**trial, "progress_file": progress.file_for(trial["trial_id"])} for trial in trials]

    def record(outcome: TrialOutcome) -> None:
        outcomes.append(outcome)
        progress.finished(outcome.trial_id, outcome.status, outcome.result_path, outcome.error)
        if on_done is not None:
            on_done(outcome)

    progress.start()
    try:
        if backend == "local":
            from peftbench.runners.pool import run_local_pool

            run_local_pool(trials, workers=workers, execute=execute, on_done=record)
        else:
            from peftbench.runners.ray_backend import run_on_ray

            run_on_ray(trials, workers=workers, address=ray_address, execute=execute, on_done=record)
    finally:
        progress.stop()
    return outcomes
