"""Bootstrap statistics and the noise verdicts built on them."""

from __future__ import annotations

import numpy as np
import pytest

from peftbench.analysis.stats import bootstrap_mean_ci, paired_bootstrap


def test_bootstrap_mean_ci_brackets_the_mean_and_is_reproducible():
    values = [0.60, 0.64, 0.71]
    ci = bootstrap_mean_ci(values)
    assert ci.mean == pytest.approx(np.mean(values))
    assert min(values) <= ci.low <= ci.mean <= ci.high <= max(values)
    assert ci.has_spread and ci.n == 3
    assert bootstrap_mean_ci(values) == ci  # seeded: same input, same interval


def test_bootstrap_interval_narrows_with_more_data():
    rng = np.random.default_rng(0)
    small = bootstrap_mean_ci(rng.normal(0, 1, 10))
    large = bootstrap_mean_ci(rng.normal(0, 1, 1000))
    assert (large.high - large.low) < (small.high - small.low) / 3


def test_single_value_has_no_spread():
    ci = bootstrap_mean_ci([0.5])
    assert (ci.low, ci.mean, ci.high, ci.has_spread) == (0.5, 0.5, 0.5, False)


def test_bootstrap_rejects_empty_input():
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_mean_ci([])


def test_paired_bootstrap_identical_methods_are_not_different():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 2, 300)
    result = paired_bootstrap(a, a)
    assert result.mean_difference == 0 and not result.significant
    assert result.prob_a_better == pytest.approx(0.5)


def test_paired_bootstrap_detects_a_real_difference():
    rng = np.random.default_rng(2)
    b = rng.integers(0, 2, 400)
    a = b.copy()
    a[b == 0] = rng.random((b == 0).sum()) < 0.3  # A fixes ~30% of B's mistakes and breaks nothing
    result = paired_bootstrap(a, b)
    assert result.mean_difference > 0 and result.significant and result.prob_a_better > 0.99
    reverse = paired_bootstrap(b, a)
    assert reverse.high < 0 and reverse.prob_a_better < 0.01


def test_pairing_is_tighter_than_unpaired_intervals():
    """Two methods that agree on most items: their separate intervals overlap, the paired one does not."""
    rng = np.random.default_rng(3)
    b = rng.integers(0, 2, 200)
    a = b.copy()
    a[np.flatnonzero(b == 0)[:14]] = 1  # 14 more right answers out of 200, nothing else changes
    separate_a, separate_b = bootstrap_mean_ci(a), bootstrap_mean_ci(b)
    assert separate_a.low < separate_b.high  # unpaired: looks like noise
    assert paired_bootstrap(a, b).significant  # paired: a real improvement


def test_paired_bootstrap_needs_equal_lengths():
    with pytest.raises(ValueError, match="equally long"):
        paired_bootstrap([1, 0, 1], [1, 0])


@pytest.mark.parametrize(("distinct", "n", "n_resamples"), [("0/1 correctness", 3_000_000, 2000),
                                                             ("a continuous score", 200_000, 200),
                                                             ("a continuous score", 3_000_000, 2000)])
def test_bootstrap_of_many_items_keeps_to_the_analytic_interval_in_bounded_memory(distinct, n, n_resamples):
    """Every way of resampling (by counts of distinct values, in chunks, and the normal limit for the largest)
    gives the bootstrap's interval, about ±1.96 standard errors; none holds n_resamples x n numbers (44.7 GiB
    for 3,000,000 items)."""
    import tracemalloc

    rng = np.random.default_rng(3)
    a = (rng.random(n) < 0.5).astype(float) if distinct == "0/1 correctness" else rng.random(n)
    b = (rng.random(n) < 0.48).astype(float) if distinct == "0/1 correctness" else rng.random(n) * 0.98
    tracemalloc.start()
    try:
        comparison = paired_bootstrap(a, b, n_resamples=n_resamples)
        interval = bootstrap_mean_ci(a, n_resamples=n_resamples)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**28, peak  # a few copies of the data and bounded chunks; all at once: n_resamples x n x 8 bytes
    for low, high, values in ((comparison.low, comparison.high, a - b), (interval.low, interval.high, a)):
        half_width = 1.96 * values.std() / np.sqrt(n)
        assert (high - low) / 2 == pytest.approx(half_width, rel=0.25)
        assert low < values.mean() < high
