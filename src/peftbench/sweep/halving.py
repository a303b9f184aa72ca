"""Successive halving for a sweep's learning-rate search: the settings, the order trials start in, the studies.

The rule is Optuna's SuccessiveHalvingPruner, applied by each trial's own training loop (training.pruning) through
one Optuna study per experiment in a journal file in the results folder. One code path for both backends: a
child on this machine and a Ray task on a cluster node append to the same file (the results folder is shared
on a cluster anyway), so neither backend needs a scheduler of its own, and every trial keeps its child process.

Every experiment gets the same rule: the same number of rates, the same rungs (`min_steps` x
`reduction_factor`^k, in training steps), the same reduction factor, decided on validation alone: by default
on the validation loss (the training loss on the validation rows, measured at the rungs; cheap, and it tells
rates apart from the first steps on), or on the validation score at validation steps (`signal` "score": a
generated score may be 0 for every rate at an early rung, and ties go on; "score-then-loss": the score, equal
scores ordered by the validation loss at the same step).
The rule is asynchronous: a trial at a rung is compared with the trials of its experiment that reached that
rung before it. So the order trials start in matters: each experiment's configured rate starts first (the
incumbent: without evidence, keep the default), then the others by their distance from it on a log scale, and
the experiments take turns, so that an experiment's trials rarely run at once and each meets its predecessors'
scores at every rung. With one worker the decisions are reproducible; with several, two trials of one experiment
that reach a rung together may be compared in either order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from peftbench.config import ConfigError

DEFAULT_REDUCTION_FACTOR = 2
SCHEDULER = "optuna.pruners.SuccessiveHalvingPruner"
SIGNALS = ("loss", "score", "score-then-loss")
DEFAULT_SIGNAL = "loss"
# with the loss signal, the default first rung leaves this many halvings before the shortest experiment's end
DEFAULT_HALVINGS = 3


@dataclass(frozen=True)
class Halving:
    """The user's settings; `min_steps` None: with the loss signal, the shortest experiment's max_steps /
    reduction_factor^DEFAULT_HALVINGS; with the score signal, the experiments' validation interval (eval_steps)."""

    min_steps: Optional[int] = None
    reduction_factor: int = DEFAULT_REDUCTION_FACTOR
    signal: str = DEFAULT_SIGNAL

    def resolved(self, experiments, task=None) -> "Halving":
        """These settings checked against the experiments (SweepExperiment with max_steps and eval_steps) and the
        task, with min_steps decided: every rung must come before each experiment's end, and with the score
        signal be one of its validation steps."""
        if self.reduction_factor < 2:
            raise ConfigError(f"--halving-reduction-factor must be >= 2, got {self.reduction_factor}")
        if self.signal not in SIGNALS:
            raise ConfigError(f"--halving-signal {self.signal!r}; valid: {', '.join(SIGNALS)}")
        if self.signal != "score" and task is not None and not task.has_validation_loss:
            raise ConfigError(f"--halving-signal {self.signal}: task {task.name} has no validation loss (its score "
                              "is generated); use --halving-signal score")
        if self.signal == "loss":
            min_steps = self.min_steps if self.min_steps is not None else max(
                1, min(e.max_steps for e in experiments) // self.reduction_factor ** DEFAULT_HALVINGS)
            return Halving(min_steps, self.reduction_factor, self.signal)._checked_before_the_end(experiments)
        intervals = sorted({e.eval_steps for e in experiments})
        min_steps = self.min_steps
        if min_steps is None:
            if len(intervals) > 1:
                raise ConfigError(f"the experiments validate at different intervals (eval_steps {intervals}); give "
                                  "--halving-min-steps, a multiple of each, or --set eval_steps=N for all")
            min_steps = intervals[0]
        for experiment in experiments:
            if min_steps % experiment.eval_steps:
                raise ConfigError(
                    f"--halving-min-steps {min_steps} is not a multiple of eval_steps ({experiment.eval_steps}) of "
                    f"{experiment.path}: with --halving-signal score a rung must be a validation step; e.g. --set "
                    f"eval_steps={min_steps}")
        return Halving(min_steps, self.reduction_factor, self.signal)._checked_before_the_end(experiments)

    def _checked_before_the_end(self, experiments) -> "Halving":
        if self.min_steps < 1:
            raise ConfigError(f"--halving-min-steps must be >= 1, got {self.min_steps}")
        for experiment in experiments:
            if self.min_steps >= experiment.max_steps:
                hint = ("" if self.signal == "loss" else ", with --set eval_steps=N to validate that often (e.g. "
                        f"--set eval_steps={experiment.max_steps // 4})")
                raise ConfigError(
                    f"the first rung ({self.min_steps} steps) is not before the end of {experiment.path} (max_steps "
                    f"{experiment.max_steps}): nothing could be pruned; give a smaller --halving-min-steps{hint}")
        return self

    @property
    def higher_is_better(self) -> Optional[bool]:
        """The rung signal's direction: False for the loss; None: the task's score direction."""
        return False if self.signal == "loss" else None

    def trial_overrides(self) -> dict[str, Any]:
        """What each search trial measures besides its experiment's config: the loss at every rung."""
        return {"valid_loss_steps": self.min_steps} if self.signal != "score" else {}

    def rungs(self, max_steps: int) -> list[int]:
        rungs, step = [], self.min_steps
        while step < max_steps:
            rungs.append(step)
            step *= self.reduction_factor
        return rungs

    def decided_on(self, score_name: str = "score") -> str:
        return {"loss": "validation loss", "score": f"validation {score_name}",
                "score-then-loss": f"validation {score_name}, equal values ordered by the validation loss"}[self.signal]

    def identity(self) -> dict[str, Any]:
        return {"min_steps": self.min_steps, "reduction_factor": self.reduction_factor, "signal": self.signal}


def start_order(grid: list[float], default_lr: float) -> list[float]:
    """The configured rate first, then by distance from it on a log scale (equal distances: smaller first; to two
    decimals of log10, since a grid's rates are rounded to three significant digits)."""
    return sorted(grid, key=lambda lr: (round(abs(math.log10(lr / default_lr)), 2), lr))


def journal_path(results_dir: Path, sweep_id: str) -> Path:
    return results_dir / f"halving-{sweep_id}.journal"


def study_name(sweep_id: str, experiment_key: str) -> str:
    return f"{sweep_id}/{experiment_key}"


def prepare_studies(plan, higher_is_better: bool, fresh: bool) -> None:
    """One Optuna study per experiment in the plan's journal, with one trial per rate in start order (so that
    trial number k is the k-th rate of `start_order`). `fresh`: a new journal (a forced sweep runs everything
    again); else an existing one is kept, and with it what its trials reported (a resumed sweep)."""
    import optuna

    from peftbench.training.pruning import journal

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = plan.halving_journal
    if fresh:
        for stale in (path, path.with_name(path.name + ".lock")):
            stale.unlink(missing_ok=True)
    storage = journal(str(path))
    for experiment in plan.experiments:
        signal_higher = plan.halving.higher_is_better
        higher = higher_is_better if signal_higher is None else signal_higher
        study = optuna.create_study(storage=storage, study_name=study_name(plan.sweep_id, experiment.key),
                                    direction="maximize" if higher else "minimize", load_if_exists=True)
        rates = start_order(plan.grid(experiment), experiment.default_lr)
        for lr in rates[len(study.trials):]:
            study.ask().set_user_attr("lr", lr)


def describe(plan, score_name: str) -> dict[str, Any]:
    """The summary's record of a halving plan's rule: which scheduler, its settings, what it decides on."""
    from importlib.metadata import version

    halving = plan.halving
    return {"scheduler": SCHEDULER, "optuna": version("optuna"), **halving.identity(),
            "min_early_stopping_rate": 0,
            "decided_on": halving.decided_on(score_name),
            "ties": "go on",
            "start_order": "configured rate first, then by distance from it on a log scale; experiments take turns",
            "rungs": {e.key: halving.rungs(e.max_steps) for e in plan.experiments if e.max_steps},
            "journal": plan.halving_journal.name}
