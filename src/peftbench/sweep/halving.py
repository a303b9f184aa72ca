"""Successive halving for a sweep's learning-rate search: the settings, the order trials start in, the studies.

The rule is Optuna's SuccessiveHalvingPruner, applied by each trial's own training loop (training.pruning) through
one Optuna study per experiment in a journal file in the results folder. One code path for both backends: a
child on this machine and a Ray task on a cluster node append to the same file (the results folder is shared
on a cluster anyway), so neither backend needs a scheduler of its own, and every trial keeps its child process.

Every experiment gets the same rule: the same number of rates, the same rungs (`min_steps` x
`reduction_factor`^k, in training steps), the same reduction factor, decided on the validation score alone.
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


@dataclass(frozen=True)
class Halving:
    """The user's settings; `min_steps` None: the experiments' validation interval (eval_steps)."""

    min_steps: Optional[int] = None
    reduction_factor: int = DEFAULT_REDUCTION_FACTOR

    def resolved(self, experiments) -> "Halving":
        """These settings checked against the experiments (SweepExperiment with max_steps and eval_steps), with
        min_steps decided: every rung must be a validation step of every experiment, and come before its end."""
        if self.reduction_factor < 2:
            raise ConfigError(f"--halving-reduction-factor must be >= 2, got {self.reduction_factor}")
        intervals = sorted({e.eval_steps for e in experiments})
        min_steps = self.min_steps
        if min_steps is None:
            if len(intervals) > 1:
                raise ConfigError(f"the experiments validate at different intervals (eval_steps {intervals}); give "
                                  "--halving-min-steps, a multiple of each, or --set eval_steps=N for all")
            min_steps = intervals[0]
        if min_steps < 1:
            raise ConfigError(f"--halving-min-steps must be >= 1, got {min_steps}")
        for experiment in experiments:
            if min_steps % experiment.eval_steps:
                raise ConfigError(
                    f"--halving-min-steps {min_steps} is not a multiple of eval_steps ({experiment.eval_steps}) of "
                    f"{experiment.path}: a rung must be a validation step; e.g. --set eval_steps={min_steps}")
            if min_steps >= experiment.max_steps:
                raise ConfigError(
                    f"the first rung ({min_steps} steps) is not before the end of {experiment.path} (max_steps "
                    f"{experiment.max_steps}): nothing could be pruned; give a smaller --halving-min-steps, with "
                    f"--set eval_steps=N to validate that often (e.g. --set eval_steps={experiment.max_steps // 4})")
        return Halving(min_steps, self.reduction_factor)

    def rungs(self, max_steps: int) -> list[int]:
        rungs, step = [], self.min_steps
        while step < max_steps:
            rungs.append(step)
            step *= self.reduction_factor
        return rungs

    def identity(self) -> dict[str, Any]:
        return {"min_steps": self.min_steps, "reduction_factor": self.reduction_factor}


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
        study = optuna.create_study(storage=storage, study_name=study_name(plan.sweep_id, experiment.key),
                                    direction="maximize" if higher_is_better else "minimize", load_if_exists=True)
        rates = start_order(plan.grid(experiment), experiment.default_lr)
        for lr in rates[len(study.trials):]:
            study.ask().set_user_attr("lr", lr)


def describe(plan, score_name: str) -> dict[str, Any]:
    """The summary's record of a halving plan's rule: which scheduler, its settings, what it decides on."""
    from importlib.metadata import version

    halving = plan.halving
    return {"scheduler": SCHEDULER, "optuna": version("optuna"), **halving.identity(),
            "min_early_stopping_rate": 0, "decided_on": f"valid {score_name}", "ties": "go on",
            "start_order": "configured rate first, then by distance from it on a log scale; experiments take turns",
            "rungs": {e.key: halving.rungs(e.max_steps) for e in plan.experiments if e.max_steps},
            "journal": plan.halving_journal.name}
