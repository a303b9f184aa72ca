"""Successive halving of a sweep's trials, as each trial's training loop sees it: report the rung signal (the
validation loss every valid_loss_steps, or the validation score at every validation, or the score with the loss
measured at the same step breaking its ties), stop when the rule says so.

The rule is Optuna's `SuccessiveHalvingPruner` (asynchronous successive halving, Li et al. 2020), not ours. All
trials of one experiment share one Optuna study in a journal file in the results folder (a file every child can
append to, on one machine or on a Ray cluster's shared folder), created by the sweep (peftbench.sweep.halving)
with one trial per learning rate. A trial reaching a rung (min_steps x reduction_factor^k steps) goes on only if
its signal is in the best 1/reduction_factor of the values every trial of its study has reached that rung with
so far (ties go on); else it stops there, with status "pruned".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional

# signal "score-then-loss": what the validation loss weighs beside the score. A loss below 100 moves the value by
# less than 1e-4, less than one item of a score over up to 10,000 items: it orders equal scores only.
TIE_BREAK_WEIGHT = 1e-6


def score_then_loss(score: float, loss: float, higher_is_better: bool) -> float:
    """The value signal "score-then-loss" reports: the score, moved by the loss the way a better score moves."""
    return score - (1.0 if higher_is_better else -1.0) * TIE_BREAK_WEIGHT * loss


@dataclass(frozen=True)
class HalvingRule:
    """Where a trial's study is and the rule its study prunes by. Plain data: it travels in the trial's request."""

    storage: str  # the journal file
    study: str
    trial: int  # the number of this trial (its learning rate's) in the study
    min_steps: int
    reduction_factor: int
    # what the rungs compare: "loss" (validation loss, lower is better), "score", or "score-then-loss" (the score,
    # equal scores ordered by the validation loss measured at the same step)
    signal: str = "score"

    def pruner(self):
        import optuna

        return optuna.pruners.SuccessiveHalvingPruner(min_resource=self.min_steps,
                                                      reduction_factor=self.reduction_factor)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def journal(path: str):
    """The Optuna storage of a journal file (a lock file beside it, so that processes may append at once)."""
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    return JournalStorage(JournalFileBackend(path))


class RungCheck:
    """Called after each validation with (step, kind, value): reports the value of the rule's signal to the
    trial's study and answers whether the trial stops here; the other kind of validation is not its concern, but
    for "score-then-loss", whose loss at a step comes before its score (training.train). The last step only
    reports (a finished trial is never pruned)."""

    def __init__(self, rule: HalvingRule, max_steps: int) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = journal(rule.storage)
        study = optuna.load_study(study_name=rule.study, storage=storage, pruner=rule.pruner())
        study_id = storage.get_study_id_from_name(rule.study)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, rule.trial)
        self._trial = optuna.trial.Trial(study, trial_id)
        self._study = study
        self._max_steps = max_steps
        self._signal = rule.signal
        # a trial run again after a failure has its earlier validations (the same, at the same seed) in the study
        self._reported = set(storage.get_trial(trial_id).intermediate_values)
        self._losses: dict[int, float] = {}  # "score-then-loss": step -> validation loss
        self._higher_is_better = study.direction == optuna.study.StudyDirection.MAXIMIZE

    def __call__(self, step: int, kind: str, value: float) -> bool:
        import optuna

        if self._signal == "score-then-loss":
            if kind == "loss":
                self._losses[step] = value
                return False
            # a step without a loss (no rung): the score alone
            value = score_then_loss(value, self._losses.get(step, 0.0), self._higher_is_better)
        elif kind != self._signal:
            return False
        if step in self._reported:  # passed this rung before (a pruned trial never reruns)
            return False
        self._trial.report(value, step)
        if step >= self._max_steps:
            self._study.tell(self._trial, value, state=optuna.trial.TrialState.COMPLETE)
            return False
        if self._trial.should_prune():
            self._study.tell(self._trial, state=optuna.trial.TrialState.PRUNED)
            return True
        return False


def rung_check(rule: Optional[dict[str, Any]], max_steps: int):
    """The training loop's `stop_after_validation` for a trial of a halving sweep; None for any other run."""
    return RungCheck(HalvingRule(**rule), max_steps) if rule else None
