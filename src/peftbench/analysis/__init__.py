"""Analysis of result files: metrics registry, seed aggregation, Pareto frontiers, statistics, filters
and recommendations. The statistics API (`bootstrap_mean_ci`, `paired_bootstrap`) is shared with sweeps."""

from peftbench.analysis.stats import MeanCI, PairedComparison, bootstrap_mean_ci, paired_bootstrap

__all__ = ["MeanCI", "PairedComparison", "bootstrap_mean_ci", "paired_bootstrap"]
