"""Reading a sweep's trials from their result files, and choosing each experiment's rate on validation only."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from peftbench.sweep.plan import SweepExperiment, SweepPlan

ERROR_CHARS = 600  # of a failed run's error message kept in the summary (the result file has all of it)
TIE_BREAK = "ties: the rate closest to the configured one on a log scale, then the smaller rate"


@dataclass
class TrialRecord:
    """One trial as its result file tells it (status "missing" when there is no usable file)."""

    path: Path
    lr: float
    seed: int
    status: str
    error: str = ""
    valid_score: Optional[float] = None
    test_score: Optional[float] = None
    per_item_correct: Optional[list[float]] = None
    steps: Optional[int] = None  # training steps done (a pruned trial's: where it stopped)

    def brief(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "seed": self.seed,
            "status": self.status,
            "valid_score": self.valid_score,
            "test_score": self.test_score,
            "steps": self.steps,
            "result_file": self.path.name,
            **({"error": self.error[-ERROR_CHARS:]} if self.error else {}),  # the end of a traceback says most
        }


def read_trial(path: Path, lr: float, seed: int) -> TrialRecord:
    """A trial's result file, through the results reader (untrusted JSON: parsed and type-checked there)."""
    from peftbench.analysis.runs import run_view
    from peftbench.results.reader import read_result_file

    read = read_result_file(path)
    if read.missing:
        return TrialRecord(path, lr, seed, "missing")
    if read.status is None:
        return TrialRecord(path, lr, seed, "unreadable", read.error or "no status in the result file")
    result = read.result
    steps = result.steps if isinstance(result.steps, int) and not isinstance(result.steps, bool) else None
    if result.status == "pruned":  # its last validation score, which the halving rule stopped it on
        valid = result.valid_score if isinstance(result.valid_score, (int, float)) else None
        return TrialRecord(path, lr, seed, result.status, result.error_msg, valid_score=valid, steps=steps)
    if result.status != "success":
        return TrialRecord(path, lr, seed, result.status, result.error_msg, steps=steps)
    run, _warning = run_view(read)  # the scores as the analysis reads them (out-of-range values left out)
    if run is None:
        return TrialRecord(path, lr, seed, "unreadable", "not a usable result file")
    return TrialRecord(path, lr, seed, result.status, result.error_msg, valid_score=run.metrics["valid_score"],
                       test_score=run.metrics["test_score"], per_item_correct=run.per_item_correct, steps=steps)


def choose_lr(trials: list[TrialRecord], default_lr: float, higher_is_better: bool = True) -> Optional[float]:
    """The rate of the best successful trial by validation score (see TIE_BREAK); None if none succeeded.

    Test scores are deliberately not an argument of the decision. A pruned trial never ran to its end: it is
    not a candidate, whatever its last validation score.
    """
    scored = [t for t in trials if t.status == "success" and t.valid_score is not None]
    if not scored:
        return None
    sign = 1.0 if higher_is_better else -1.0
    best = max(sign * t.valid_score for t in scored)
    tied = [t for t in scored if math.isclose(sign * t.valid_score, best, rel_tol=0, abs_tol=1e-12)]
    return min(tied, key=lambda t: (abs(math.log(t.lr / default_lr)), t.lr)).lr


def search_records(plan: SweepPlan, experiment: SweepExperiment) -> list[TrialRecord]:
    return [read_trial(plan.result_path(experiment, lr, experiment.default_seed), lr, experiment.default_seed)
            for lr in plan.grid(experiment)]


def chosen_lrs(plan: SweepPlan, higher_is_better: bool) -> dict[str, Optional[float]]:
    return {e.key: choose_lr(search_records(plan, e), e.default_lr, higher_is_better) for e in plan.experiments}
