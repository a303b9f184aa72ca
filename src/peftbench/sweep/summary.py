"""A sweep's summary: a typed object built from the result files alone, and its JSON file sweep-summary.json.

Per experiment the "default" run (configured rate and seed) and the "tuned" runs (the rate chosen on
validation, fresh seeds) with their statistics, plus paired comparisons against the reference experiment.
The command line renders the object (cli/sweep.py); `to_dict` is the file's layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Optional

from peftbench.sweep.halving import describe
from peftbench.sweep.plan import SweepExperiment, SweepPlan
from peftbench.sweep.selection import TIE_BREAK, TrialRecord, choose_lr, read_trial, search_records
from peftbench.sweep.statistics import Paired, ScoreStats, paired, ranking, score_stats, spread

SUMMARY_FILE = "sweep-summary.json"
SUMMARY_KIND = "peftbench-sweep-summary"
SUMMARY_SCHEMA_VERSION = 1


@dataclass
class VersusReference:
    """This experiment's tuned runs against the reference's tuned runs (the fair comparison) and against the
    reference's default run (what a "new method vs default LoRA" paper reports)."""

    reference: str
    tuned: Paired
    default: Paired

    def to_dict(self) -> dict[str, Any]:
        return {"reference": self.reference, "tuned": self.tuned.to_dict(), "default": self.default.to_dict()}


@dataclass
class ExperimentSummary:
    experiment: SweepExperiment
    lr_grid: list[float]
    trials: list[TrialRecord]  # the search, at the configured seed
    default: TrialRecord  # configured rate and seed
    chosen_lr: Optional[float]
    seeds: list[int]
    tuned_runs: list[TrialRecord]  # the chosen rate, fresh seeds
    tuned: ScoreStats
    vs_reference: Optional[VersusReference] = None

    @property
    def tuned_scores(self) -> list[float]:
        return [t.test_score for t in self.tuned_runs if t.status == "success" and t.test_score is not None]

    @property
    def search_steps(self) -> dict[str, Any]:
        """Training steps the search used, against its full grid's (every rate to its end)."""
        used = sum(t.steps or 0 for t in self.trials)
        budget = len(self.lr_grid) * self.experiment.max_steps if self.experiment.max_steps else None
        return {"used": used, "full_grid": budget, "fraction": used / budget if budget else None}

    @property
    def default_score(self) -> Optional[float]:
        return self.default.test_score if self.default.status == "success" else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.experiment.method,
            "name": self.experiment.name,
            "path": str(self.experiment.path),
            "default_lr": self.experiment.default_lr,
            "default_seed": self.experiment.default_seed,
            "lr_grid": self.lr_grid,
            "trials": [t.brief() for t in self.trials],
            "search_steps": self.search_steps,
            "default": {**self.default.brief(), "in_grid": self.experiment.default_lr in self.lr_grid},
            "chosen_lr": self.chosen_lr,
            "tuned": {"lr": self.chosen_lr, "seeds": self.seeds, "runs": [t.brief() for t in self.tuned_runs],
                      "test_scores": self.tuned_scores, **self.tuned.to_dict()},
            "vs_reference": self.vs_reference.to_dict() if self.vs_reference else None,
        }


@dataclass
class SweepSummary:
    plan: SweepPlan
    score_name: str
    higher_is_better: bool
    created_at: str
    reference: Optional[str]  # "method/name"
    experiments: dict[str, ExperimentSummary]  # by "method/name"

    @property
    def not_successful(self) -> list[TrialRecord]:
        """Every run that did not succeed (missing, failed, diverged, ...), once each, by file name. A pruned
        trial is not among them: the halving rule stopped it, as it should."""
        runs = [r for e in self.experiments.values() for r in [*e.trials, e.default, *e.tuned_runs]]
        return sorted({r.path.name: r for r in runs if r.status not in ("success", "pruned")}.values(),
                      key=lambda r: r.path.name)

    @property
    def complete(self) -> bool:
        return not self.not_successful

    def ranking(self, which: str) -> list[str]:
        """Experiments best first by their "default" score or their "tuned" mean."""
        return ranking(self._scores(which), self.higher_is_better)

    def spread(self, which: str) -> Optional[float]:
        return spread(self._scores(which))

    def _scores(self, which: str) -> dict[str, Optional[float]]:
        return {key: e.default_score if which == "default" else e.tuned.mean for key, e in self.experiments.items()}

    def to_dict(self) -> dict[str, Any]:
        plan = self.plan
        return {
            "kind": SUMMARY_KIND,
            "schema_version": SUMMARY_SCHEMA_VERSION,
            "sweep_id": plan.sweep_id,
            "created_at": self.created_at,
            "task": plan.task,
            "score_name": self.score_name,
            "higher_is_better": self.higher_is_better,
            "lr_search": {"lrs": plan.lrs} if plan.lrs is not None else {"lr_trials": plan.lr_trials, "step": "10^(1/2)"},
            "seeds": plan.seeds,
            "overrides": plan.overrides,
            "selection": f"best validation score; {TIE_BREAK}; test scores are not used",
            "halving": describe(plan, self.score_name) if plan.halving else None,
            "reference": self.reference,
            "experiments": {key: entry.to_dict() for key, entry in self.experiments.items()},
            "ranking": {which: self.ranking(which) for which in ("default", "tuned")},
            "spread": {which: self.spread(which) for which in ("default", "tuned")},
            "not_successful": [r.brief() for r in self.not_successful],
            "complete": self.complete,
        }


def build_summary(plan: SweepPlan, higher_is_better: bool = True, score_name: str = "accuracy") -> SweepSummary:
    """The sweep's summary, computed from the result files alone."""
    experiments = {e.key: _experiment_summary(plan, e, higher_is_better) for e in plan.experiments}
    reference = plan.reference_experiment()
    if reference is not None:
        theirs = experiments[reference.key]
        for key, entry in experiments.items():
            if key != reference.key:
                entry.vs_reference = VersusReference(
                    reference.key,
                    paired(entry.tuned_runs, theirs.tuned_runs, f"{reference.key} tuned"),
                    paired(entry.tuned_runs, [theirs.default], f"{reference.key} default"),
                )
    return SweepSummary(plan, score_name, higher_is_better, datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        reference.key if reference else None, experiments)


def _experiment_summary(plan: SweepPlan, experiment: SweepExperiment, higher_is_better: bool) -> ExperimentSummary:
    search = search_records(plan, experiment)
    chosen = choose_lr(search, experiment.default_lr, higher_is_better)
    default_lr, default_seed = experiment.default_lr, experiment.default_seed
    default = read_trial(plan.result_path(experiment, default_lr, default_seed), default_lr, default_seed)
    seeds = plan.seed_list(experiment) if chosen is not None else []
    tuned = [read_trial(plan.result_path(experiment, chosen, s), chosen, s) for s in seeds]
    summary = ExperimentSummary(experiment, plan.grid(experiment), search, default, chosen, seeds, tuned,
                                ScoreStats(0))
    summary.tuned = score_stats(summary.tuned_scores)
    return summary
