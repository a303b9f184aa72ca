"""Running a batch of runs: one interface (`run_trials`), two backends (a local worker pool, Ray).

A batch is a list of RunRequests (run.request), one result file each. `execute_trial(request)` runs one
of them through `runners.isolated.run_request`, which starts its own child process, so a crash, an OOM or a
leak stays inside that child. Both backends call the same function; they differ only in where and how many at
once (the trial's interface they share: runners/trial.py). This module imports nothing heavy.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Optional

from peftbench.runners.progress import PROGRESS_DIR
from peftbench.run.request import RunRequest
from peftbench.runners.trial import OutcomeCallback, TrialExecutor, TrialOutcome

BACKENDS = ("local", "ray")


def execute_trial(request: RunRequest) -> TrialOutcome:
    """Run one request in a child process (runners.isolated) and report its status."""
    from peftbench.runners.isolated import run_request

    return _outcome(request, *run_request(request))


def execute_planned(plan) -> TrialOutcome:
    """`execute_trial` for a request planned already (run.plan.plan_batch): the run as it was planned."""
    from peftbench.runners.isolated import run_plan

    return _outcome(plan.request, *run_plan(plan))


def _outcome(request: RunRequest, result_path: Optional[Path], status: str, skipped: bool) -> TrialOutcome:
    return TrialOutcome(request.result_stem, status, str(result_path) if result_path else None, skipped=skipped)


def run_trials(
    trials: list[RunRequest],
    *,
    backend: str = "local",
    workers: int = 1,
    ray_address: Optional[str] = None,
    execute: TrialExecutor = execute_trial,
    on_done: Optional[OutcomeCallback] = None,
    description: str = "trials",
    show_progress: bool = True,
    share_cores: bool = True,
) -> list[TrialOutcome]:
    """Run `trials` with up to `workers` at once on `backend`; return their outcomes in completion order.

    With `share_cores`, a trial without `num_threads` gets an even share of the cores (else torch's default:
    local backend only; a Ray task always gets its share).

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
    results_dirs = {trial.results_dir for trial in trials}
    progress_root = Path(results_dirs.pop()) / PROGRESS_DIR if len(results_dirs) == 1 else None
    progress = BatchProgress(
        [trial.result_stem for trial in trials], workers, description,
        console=Console(stderr=True, quiet=not show_progress),
        # under the results folder, which Ray workers share; one private folder per batch
        progress_dir=progress_root / f"{os.getpid()}-{uuid.uuid4().hex[:8]}" if progress_root else None,
    )
    trials = [replace(trial, progress_file=progress.file_for(trial.result_stem)) for trial in trials]

    def record(outcome: TrialOutcome) -> None:
        outcomes.append(outcome)
        progress.finished(outcome.result_stem, outcome.status, outcome.result_path, outcome.error, outcome.skipped)
        if on_done is not None:
            on_done(outcome)

    progress.start()
    try:
        if backend == "local":
            from peftbench.runners.local_backend import run_local_pool

            run_local_pool(trials, workers=workers, execute=execute, on_done=record, share_cores=share_cores)
        else:
            from peftbench.runners.ray_backend import run_on_ray

            run_on_ray(trials, workers=workers, address=ray_address, execute=execute, on_done=record)
    finally:
        progress.stop()
    return outcomes
