"""Running a sweep: the learning-rate search, then the seeds at each chosen rate, then the summary file.

Both phases go through runners.batch.run_trials, on the local pool or Ray. Resume: a trial whose result
exists with a final status is not run again (the engine's rule, runners.isolated.should_skip); a pruned one is
final in a halving sweep only (sweep.halving).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from peftbench.results.writer import write_json_atomic
from peftbench.runners.batch import TrialExecutor, TrialOutcome, execute_trial, run_trials
from peftbench.run.request import RunRequest
from peftbench.sweep.plan import SweepPlan
from peftbench.sweep.selection import chosen_lrs
from peftbench.sweep.summary import SUMMARY_FILE, SweepSummary, build_summary


@dataclass
class SweepRun:
    summary: SweepSummary
    summary_path: Path
    ran: list[TrialOutcome]  # trials run by this invocation (resumed ones are not here)
    skipped: int  # trials already finished before this invocation


def run_sweep(
    plan: SweepPlan,
    *,
    backend: str = "local",
    workers: int = 1,
    ray_address: Optional[str] = None,
    force: bool = False,
    keep_killed: bool = False,
    execute: Optional[TrialExecutor] = None,
    higher_is_better: bool = True,
    score_name: str = "accuracy",
    show_progress: bool = True,
) -> SweepRun:
    """Run the search, select on validation, run the seeds and write the summary.

    Ctrl-C propagates as KeyboardInterrupt; every finished result file stays, no summary is written,
    and running the same sweep again resumes it. `execute` runs one trial (default: the engine's
    child-process runner, `peftbench.runners.batch.execute_trial`).
    """
    from peftbench.runners.isolated import existing_status, should_skip  # the engine's rule: what is final
    from peftbench.tasks import get_task

    task_identity = get_task(plan.task).name  # a result of another task (or task file version) is no skip
    ran: list[TrialOutcome] = []
    skipped = 0

    def finished(trial: RunRequest) -> bool:
        if not should_skip(trial.result_file(), force, keep_killed, task_identity):
            return False
        # pruned is final under the halving rule that pruned it; a full grid runs that trial to its end
        return plan.halving is not None or existing_status(trial.result_file()) != "pruned"

    def run_missing(trials: list[RunRequest], description: str) -> None:
        nonlocal skipped
        # the sweep decides what runs (the resume rule); the engine must not skip it
        todo = [replace(t, force=True) for t in trials if not finished(t)]
        skipped += len(trials) - len(todo)
        ran.extend(run_trials(todo, backend=backend, workers=workers, ray_address=ray_address,
                              execute=execute or execute_trial,
                              description=description, show_progress=show_progress))

    plan.results_dir.mkdir(parents=True, exist_ok=True)
    if plan.halving is not None:
        from peftbench.sweep.halving import prepare_studies

        prepare_studies(plan, higher_is_better, fresh=force)
    with _backend_session(backend, ray_address):  # Ray starts once for both phases
        run_missing(plan.search_trials(), "lr search")
        run_missing(plan.seed_trials(chosen_lrs(plan, higher_is_better)), "seeds")
    summary = build_summary(plan, higher_is_better, score_name)
    summary_path = plan.results_dir / SUMMARY_FILE
    write_json_atomic(summary_path, summary.to_dict())
    return SweepRun(summary, summary_path, ran, skipped)


def _backend_session(backend: str, ray_address: Optional[str]):
    if backend != "ray":
        return contextlib.nullcontext()
    from peftbench.runners.ray_backend import ray_session

    return ray_session(ray_address)
