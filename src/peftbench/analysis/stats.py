"""Bootstrap statistics: confidence intervals over seeds and paired comparisons over test items.

Public API (also used by the sweep selection):
- `bootstrap_mean_ci(values)`: mean and percentile bootstrap 95% interval of a handful of seed results.
- `paired_bootstrap(a_correct, b_correct)`: the score difference between two methods evaluated on the
  same test items, its 95% interval and the probability that A is better (resampling items, so both
  methods see the same resampled test set: far tighter than comparing two unpaired intervals).
- `mean_per_item(runs)`: per test item, the mean over several runs (seeds) of one method.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_RESAMPLES = 2000


@dataclass(frozen=True)
class MeanCI:
    mean: float
    low: float
    high: float
    n: int
    confidence: float

    @property
    def has_spread(self) -> bool:
        """A single value has no measured spread: its interval is the value itself."""
        return self.n >= 2


@dataclass(frozen=True)
class PairedComparison:
    mean_difference: float  # mean(a) - mean(b)
    low: float
    high: float
    prob_a_better: float  # share of resamples where A's mean is above B's (ties count half)
    n_items: int
    confidence: float

    @property
    def significant(self) -> bool:
        """The interval of the difference excludes zero."""
        return self.low > 0 or self.high < 0


def mean_per_item(runs: Sequence[Sequence[float] | None]) -> np.ndarray | None:
    """Per test item, the mean correctness over `runs`; None unless every run has per-item results, all of
    one length."""
    if not runs or any(not items for items in runs) or len({len(items) for items in runs}) != 1:
        return None
    return np.mean(np.asarray(runs, dtype=float), axis=0)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


# Drawing every resample's item indices at once takes n_resamples x n integers: 44.7 GiB for 3,000,000 test
# items. A resample's mean depends only on how often each distinct value was drawn, so data with few distinct
# values (0/1 correctness, its mean over a few seeds, any discrete score) is resampled by those counts: the same
# bootstrap, in memory and time independent of n. Other data is resampled in chunks of bounded size, up to a
# bounded number of draws in all; beyond that (over about 67,000 items with as many distinct values) the means
# are drawn from the normal distribution that the bootstrap's means follow at that size (central limit theorem).
MAX_DISTINCT_VALUES_BY_COUNTS = 4096
MAX_INDICES_PER_CHUNK = 1 << 22
MAX_INDICES_IN_ALL = 1 << 27


def _bootstrap_means(data: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """The means of `n_resamples` bootstrap resamples (n items drawn with replacement) of the 1-d `data`."""
    values, counts = np.unique(data, return_counts=True)
    if values.size <= MAX_DISTINCT_VALUES_BY_COUNTS:
        drawn = rng.multinomial(data.size, counts / data.size, size=n_resamples)
        return drawn @ values / data.size
    if data.size * n_resamples > MAX_INDICES_IN_ALL:
        return rng.normal(data.mean(), data.std() / np.sqrt(data.size), size=n_resamples)
    rows = max(1, MAX_INDICES_PER_CHUNK // data.size)
    return np.concatenate([
        data[rng.integers(0, data.size, size=(min(rows, n_resamples - start), data.size))].mean(axis=1)
        for start in range(0, n_resamples, rows)
    ])


def bootstrap_mean_ci(
    values: Sequence[float], *, confidence: float = 0.95, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> MeanCI:
    """Mean of `values` with a percentile bootstrap confidence interval.

    With one value the interval is degenerate (low == high == mean); check `.has_spread`.
    """
    data = np.asarray(values, dtype=float)
    if data.ndim != 1 or data.size == 0:
        raise ValueError("bootstrap_mean_ci needs a non-empty 1-d sequence of numbers")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    mean = float(data.mean())
    if data.size == 1:
        return MeanCI(mean, mean, mean, 1, confidence)
    means = _bootstrap_means(data, n_resamples, _rng(seed))
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return MeanCI(mean, float(low), float(high), int(data.size), confidence)


def paired_bootstrap(
    a_correct: Sequence[float],
    b_correct: Sequence[float],
    *,
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> PairedComparison:
    """Paired bootstrap over test items of mean(a) - mean(b).

    `a_correct[i]` and `b_correct[i]` are the two methods' correctness (0/1, or a mean over seeds) on
    the same test item i.
    """
    a = np.asarray(a_correct, dtype=float)
    b = np.asarray(b_correct, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(
            f"paired_bootstrap needs two equally long, non-empty sequences (got {a.size} and {b.size} items)"
        )
    differences = a - b
    resampled = _bootstrap_means(differences, n_resamples, _rng(seed))
    tail = (1 - confidence) / 2
    low, high = np.quantile(resampled, [tail, 1 - tail])
    prob = float(np.mean(resampled > 0) + 0.5 * np.mean(resampled == 0))
    return PairedComparison(float(differences.mean()), float(low), float(high), prob, int(a.size), confidence)
