"""Rank agreement between two scorings of the same configs, with bootstrap intervals, and its noise ceiling.

- `rank_agreement(offline, reference)`: Spearman's rho and Kendall's tau (scipy.stats) with percentile bootstrap
  intervals, resampling the configs (pairs) with replacement.
- `noise_ceiling(scores_by_seed)`: the same agreement between two independent offline runs, the seed halves
  (even-indexed seeds against odd-indexed ones, each config's mean within a half). No offline recipe can agree
  with the reference much better than it agrees with itself.
- `seed_noise(scores_by_seed)`: each config's sample sd over seeds, against the spread between configs.
- `half_of(method)`: the fixed held-in / held-out split of methods ("choose" / "report").

No torch; numpy and scipy only.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_RESAMPLES = 2000
PAIRS_PER_CHUNK = 1 << 21
CHOOSE, REPORT = "choose", "report"


def half_of(method: str) -> str:
    """The half a method belongs to, fixed by the first byte of the SHA-256 of its name: even -> "choose" (recipe
    changes are chosen on it), odd -> "report" (they are judged on it). By method, not by config, so that no
    config of a method chosen on can stand in for one of the same method reported on."""
    return CHOOSE if hashlib.sha256(method.encode()).digest()[0] % 2 == 0 else REPORT


@dataclass(frozen=True)
class Interval:
    value: float  # the point estimate on the data as given (nan with fewer than 3 pairs or no variation)
    low: float
    high: float

    def text(self, digits: int = 2) -> str:
        if math.isnan(self.value):
            return "n/a"
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


@dataclass(frozen=True)
class RankAgreement:
    n: int
    spearman: Interval
    kendall: Interval
    confidence: float
    resamples_used: int  # resamples where both statistics are defined (a resample of tied values is not)

    def to_dict(self) -> dict:
        return {"n": self.n, "confidence": self.confidence, "resamples_used": self.resamples_used,
                **{name: {"value": _json(i.value), "low": _json(i.low), "high": _json(i.high)}
                   for name, i in (("spearman", self.spearman), ("kendall", self.kendall))}}


def _json(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)


def _statistics(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho and Kendall's tau-b of each row of `x` against the same row of `y` (shape (rows, n)), as the
    columns of a (rows, 2) array: Pearson on average ranks, and tau-b from the pairs' concordance, as
    scipy.stats.spearmanr and kendalltau define them (vectorized: thousands of resamples at once). nan for a row
    without variation on one side."""
    from scipy.stats import rankdata

    rx, ry = (rankdata(v, axis=1) for v in (x, y))
    rx, ry = rx - rx.mean(axis=1, keepdims=True), ry - ry.mean(axis=1, keepdims=True)
    dx, dy = (np.sign(v[:, :, None] - v[:, None, :]) for v in (x, y))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (rx * ry).sum(axis=1) / np.sqrt((rx**2).sum(axis=1) * (ry**2).sum(axis=1))
        tau = (dx * dy).sum(axis=(1, 2)) / np.sqrt((dx**2).sum(axis=(1, 2)) * (dy**2).sum(axis=(1, 2)))
    return np.stack([rho, tau], axis=1)


def rank_agreement(offline: Sequence[float], reference: Sequence[float], *, confidence: float = 0.95,
                   n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> RankAgreement:
    """Spearman and Kendall between `offline[i]` and `reference[i]` (config i), each with a percentile bootstrap
    interval over configs: `n_resamples` resamples of the n pairs with replacement; resamples in which either side
    has no variation are left out (counted in `resamples_used`)."""
    from scipy.stats import kendalltau, spearmanr

    x, y = np.asarray(offline, dtype=float), np.asarray(reference, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"rank_agreement needs two equally long sequences (got {x.size} and {y.size})")
    nan = Interval(math.nan, math.nan, math.nan)
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:  # no order on one side: rank agreement is undefined
        return RankAgreement(int(x.size), nan, nan, confidence, 0)
    rho, tau = float(spearmanr(x, y).statistic), float(kendalltau(x, y).statistic)
    rows = np.random.default_rng(seed).integers(0, x.size, size=(n_resamples, x.size))
    per_chunk = max(1, PAIRS_PER_CHUNK // x.size**2)  # Kendall's pair matrices: rows x n x n
    draws = np.concatenate([_statistics(x[rows[i:i + per_chunk]], y[rows[i:i + per_chunk]])
                            for i in range(0, n_resamples, per_chunk)])
    draws = draws[~np.isnan(draws).any(axis=1)]
    if len(draws) == 0:
        return RankAgreement(int(x.size), Interval(rho, math.nan, math.nan), Interval(tau, math.nan, math.nan),
                             confidence, 0)
    tail = (1 - confidence) / 2
    (rho_low, tau_low), (rho_high, tau_high) = np.quantile(draws, [tail, 1 - tail], axis=0)
    return RankAgreement(int(x.size), Interval(rho, float(rho_low), float(rho_high)),
                         Interval(tau, float(tau_low), float(tau_high)), confidence, len(draws))


@dataclass(frozen=True)
class NoiseCeiling:
    """Agreement between the two seed halves of the offline runs, over configs run with at least two seeds."""

    halves: tuple[tuple[int, ...], tuple[int, ...]]  # the seeds of each half
    agreement: RankAgreement

    @property
    def mean_of_all_seeds(self) -> float:
        """Spearman-Brown: the expected split-half agreement of two runs each twice as long (all the seeds); and
        its square root, `bound_vs_noise_free_reference`, bounds the correlation of the all-seed mean with a
        noise-free reference. Classical test theory for Pearson's r, an approximation for ranks."""
        r = self.agreement.spearman.value
        return math.nan if math.isnan(r) or r <= -1 else 2 * r / (1 + r)

    @property
    def bound_vs_noise_free_reference(self) -> float:
        reliability = self.mean_of_all_seeds
        return math.nan if math.isnan(reliability) or reliability < 0 else math.sqrt(reliability)


def seed_halves(seeds: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    ordered = sorted(seeds)
    return tuple(ordered[0::2]), tuple(ordered[1::2])


def noise_ceiling(scores_by_seed: Mapping[str, Mapping[int, float]], **bootstrap) -> NoiseCeiling | None:
    """The rank agreement between the seed halves. Seeds are halved once over all configs (even-indexed seeds
    of the sorted union against odd-indexed ones); a config counts when it has a score in both halves. None
    when fewer than two seeds were run."""
    seeds = sorted({seed for scores in scores_by_seed.values() for seed in scores})
    if len(seeds) < 2:
        return None
    first, second = seed_halves(seeds)
    pairs = [(np.mean([s[i] for i in first if i in s]), np.mean([s[i] for i in second if i in s]))
             for s in scores_by_seed.values()
             if any(i in s for i in first) and any(i in s for i in second)]
    a, b = (np.array([pair[k] for pair in pairs], dtype=float) for k in (0, 1))
    return NoiseCeiling((first, second), rank_agreement(a, b, **bootstrap))


@dataclass(frozen=True)
class SeedNoise:
    n_configs: int  # configs with two seeds or more
    median_sd: float
    max_sd: float
    spread: float  # best minus worst config mean (all configs)

    @property
    def spread_per_sd(self) -> float:
        return self.spread / self.median_sd if self.median_sd > 0 else math.inf


def seed_sd(scores: Mapping[int, float]) -> float:
    """Sample sd (ddof 1) of one config's scores over seeds; nan with one seed."""
    values = list(scores.values())
    return float(np.std(values, ddof=1)) if len(values) >= 2 else math.nan


def seed_noise(scores_by_seed: Mapping[str, Mapping[int, float]]) -> SeedNoise:
    sds = [sd for sd in map(seed_sd, scores_by_seed.values()) if not math.isnan(sd)]
    means = [float(np.mean(list(s.values()))) for s in scores_by_seed.values() if s]
    return SeedNoise(
        n_configs=len(sds),
        median_sd=float(np.median(sds)) if sds else math.nan,
        max_sd=float(np.max(sds)) if sds else math.nan,
        spread=float(max(means) - min(means)) if means else math.nan,
    )
