"""One trial of a batch, as the batch and its backends see it: the receipt a backend reports (`TrialOutcome`),
the executor it calls for each request, and how the CPU cores are shared between trials running at once.
runners/batch.py picks a backend; the backends (local_backend.py, ray_backend.py) take their interface from here,
not from the batch that calls them.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional

from peftbench.run.request import RunRequest


@dataclass
class TrialOutcome:
    """What a backend reports for one trial. The result file is the record; this is only the receipt."""

    result_stem: str  # the trial's result file stem: unique within a batch
    status: str  # success | failed | oom | killed | diverged | cancelled | pruned (the result file's status)
    result_path: Optional[str]
    error: str = ""
    skipped: bool = False  # an existing final result was kept; `status` is that result's

    @property
    def recorded(self) -> bool:
        """Whether a result file holds this trial's outcome (not when the file could not be written)."""
        return self.result_path is not None

    @property
    def unfinished(self) -> bool:
        """A trial that ran and did not end in a final result (success, diverged, pruned): it failed, was stopped or
        its result could not be written. The next run of the same command runs it again. A kept result is final."""
        from peftbench.runners.isolated import FINAL_STATUSES

        return not self.skipped and (self.status not in FINAL_STATUSES or not self.recorded)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


TrialExecutor = Callable[[RunRequest], TrialOutcome]
OutcomeCallback = Callable[[TrialOutcome], None]


def available_cores() -> int:
    """CPU cores this process may use (the affinity mask, not the machine's total, where known)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def user_thread_limit() -> Optional[int]:
    """The OMP_NUM_THREADS the user set (its first level), or None: torch honours it as its thread count."""
    first_level = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(first_level) if first_level.isdigit() and int(first_level) > 0 else None


def threads_per_worker(workers: int, cores: Optional[int] = None) -> int:
    """Torch threads for each of `workers` concurrent trials: the cores split evenly, at least one each, and
    no more than OMP_NUM_THREADS where the user set it (a share given to torch would override it)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    share = max(1, (cores or available_cores()) // workers)
    return min(share, user_thread_limit() or share)


def guarded(execute: TrialExecutor, request: RunRequest) -> TrialOutcome:
    """Call `execute`, turning an exception into a `failed` outcome so one broken trial never stops a batch."""
    try:
        return execute(request)
    except Exception as error:  # noqa: BLE001 - any error of one trial is that trial's failure
        return TrialOutcome(request.result_stem, "failed", None, f"{type(error).__name__}: {error}")
