"""A sweep's statistics, computed by analysis.stats: the tuned runs' mean, sd and bootstrap interval, and paired
comparisons over test items against the reference experiment."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any, Optional

from peftbench.sweep.selection import TrialRecord


@dataclass
class ScoreStats:
    """Test scores of the seed runs: count, mean, sample standard deviation and 95% bootstrap interval."""

    n: int
    mean: Optional[float] = None
    sd: Optional[float] = None
    ci95: Optional[list[float]] = None  # None with fewer than two runs: no measured spread

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_stats(values: list[float]) -> ScoreStats:
    from peftbench.analysis.stats import bootstrap_mean_ci

    if not values:
        return ScoreStats(0)
    ci = bootstrap_mean_ci(values)
    return ScoreStats(len(values), ci.mean, statistics.stdev(values) if len(values) >= 2 else None,
                      [ci.low, ci.high] if ci.has_spread else None)


@dataclass
class Paired:
    """Runs against reference runs over the same test items (analysis.stats.paired_bootstrap), or why not."""

    against: str
    mean_difference: Optional[float] = None
    ci95: Optional[list[float]] = None
    probability_of_improvement: Optional[float] = None
    n_items: Optional[int] = None
    error: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"against": self.against, "error": self.error}
        return {key: value for key, value in asdict(self).items() if key != "error"}


def paired(runs: list[TrialRecord], reference_runs: list[TrialRecord], label: str) -> Paired:
    from peftbench.analysis.stats import mean_per_item, paired_bootstrap

    mine, theirs = (mean_per_item([r.per_item_correct for r in group if r.status == "success"])
                    for group in (runs, reference_runs))
    if mine is None or theirs is None or len(mine) != len(theirs):
        return Paired(label, error="per-item test results missing or of different lengths")
    comparison = paired_bootstrap(mine, theirs)
    return Paired(label, comparison.mean_difference, [comparison.low, comparison.high], comparison.prob_a_better,
                  comparison.n_items)


def ranking(scores: dict[str, Optional[float]], higher_is_better: bool) -> list[str]:
    known = [(key, score) for key, score in scores.items() if score is not None]
    return [key for key, _ in sorted(known, key=lambda item: item[1], reverse=higher_is_better)]


def spread(scores: dict[str, Optional[float]]) -> Optional[float]:
    known = [s for s in scores.values() if s is not None]
    return max(known) - min(known) if len(known) >= 2 else None
