"""Pareto frontiers: checked against an independent brute-force computation, plus ties and missing values."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from peftbench.analysis.metrics import get_metric
from peftbench.analysis.pareto import pareto_frontier
from peftbench.catalog.benchmarks import published_results_dir

# every published MetaMathQA result of the PEFT suite, unchanged (tests/fixtures/results/README.md)
PUBLISHED = published_results_dir()  # shipped in the package


def brute_force_frontier(points: dict[str, dict[str, float]], senses: dict[str, int]) -> set[str]:
    """Independent reference: sense +1 = higher is better, -1 = lower is better; written without the module's code."""
    frontier = set()
    for name, p in points.items():
        beaten = False
        for other, q in points.items():
            if other == name:
                continue
            signed_q = [senses[m] * q[m] for m in senses]
            signed_p = [senses[m] * p[m] for m in senses]
            if all(a >= b for a, b in zip(signed_q, signed_p)) and any(a > b for a, b in zip(signed_q, signed_p)):
                beaten = True
                break
        if not beaten:
            frontier.add(name)
    return frontier


@pytest.mark.parametrize("metrics", [["test_score", "peak_memory"], ["test_score", "peak_memory", "forgetting", "file_size"]])
@pytest.mark.parametrize("seed", range(8))
def test_frontier_matches_brute_force_on_random_points(metrics, seed):
    rng = random.Random(seed)
    # Coarse integer grids force many ties on single metrics and some exact duplicates.
    points = {f"p{i}": {m: float(rng.randint(0, 6)) for m in metrics} for i in range(rng.randint(1, 40))}
    senses = {m: 1 if get_metric(m).higher_is_better else -1 for m in metrics}
    result = pareto_frontier(points, metrics)
    assert set(result.frontier) == brute_force_frontier(points, senses)
    assert set(result.frontier) | set(result.dominated_by) == set(points)
    for name, domination in result.dominated_by.items():
        assert domination.by in result.frontier
        assert all(margin >= 0 for margin in domination.margins.values())
        assert any(margin > 0 for margin in domination.margins.values())
        for m, margin in domination.margins.items():
            assert margin == pytest.approx(senses[m] * (points[domination.by][m] - points[name][m]))


def test_frontier_order_and_directions():
    points = {
        "cheap-bad": {"peak_memory": 10.0, "test_score": 0.1},
        "mid": {"peak_memory": 20.0, "test_score": 0.5},
        "expensive-good": {"peak_memory": 30.0, "test_score": 0.6},
        "dominated": {"peak_memory": 25.0, "test_score": 0.4},
    }
    result = pareto_frontier(points, ["peak_memory", "test_score"])
    assert result.frontier == ["cheap-bad", "mid", "expensive-good"]  # best first on the first metric
    assert result.dominated_by["dominated"].by == "mid"
    assert result.dominated_by["dominated"].margins == pytest.approx({"peak_memory": 5.0, "test_score": 0.1})


def test_ties_are_all_on_the_frontier_and_listed():
    points = {
        "a": {"test_score": 0.5, "peak_memory": 10.0},
        "b": {"test_score": 0.5, "peak_memory": 10.0},
        "c": {"test_score": 0.4, "peak_memory": 12.0},
    }
    result = pareto_frontier(points, ["test_score", "peak_memory"])
    assert set(result.frontier) == {"a", "b"}
    assert result.ties == [["a", "b"]]
    assert result.dominated_by["c"].n_dominators == 2


def test_missing_values_are_left_out_and_listed():
    points = {
        "complete": {"test_score": 0.5, "peak_memory": 10.0},
        "no-memory": {"test_score": 0.9, "peak_memory": None},
        "no-score": {"peak_memory": 1.0},
    }
    result = pareto_frontier(points, ["test_score", "peak_memory"])
    assert result.frontier == ["complete"]
    assert result.missing == {"no-memory": ["peak_memory"], "no-score": ["test_score"]}


def test_metric_aliases_and_directions():
    assert get_metric("test accuracy").name == "test_score"
    assert get_metric("num_trainable_params").name == "trainable_params"
    assert get_metric("Drift").name == "forgetting"
    assert get_metric("accelerator_memory_max").direction == "min"
    assert get_metric("tokens_per_second").higher_is_better


def test_bad_metric_lists_are_clear_errors():
    with pytest.raises(ValueError, match="at least two"):
        pareto_frontier({}, ["test_score"])
    with pytest.raises(KeyError, match="valid metrics"):
        pareto_frontier({}, ["test_score", "speed"])


def test_published_metamathqa_frontier_matches_an_independent_reading():
    from peftbench.analysis.comparison import compare_results
    from peftbench.analysis.runs import load_results

    loaded = load_results([PUBLISHED])
    assert len(loaded.runs) == 63 and not loaded.warnings
    comparison = compare_results(loaded)
    # Read the raw files here, without peftbench's reader, and compute the frontier by brute force.
    raw = {}
    for path in PUBLISHED.glob("*.json"):
        data = json.loads(path.read_text())
        raw[data["run_info"]["experiment_name"]] = {
            "peak_memory": data["train_info"]["accelerator_memory_max"],
            "test_score": data["train_info"]["metrics"][-1]["test accuracy"],
        }
    expected = brute_force_frontier(raw, {"peak_memory": -1, "test_score": 1})
    assert set(comparison.pair.frontier.frontier) == expected
    assert "lora/llama-3.2-3B-rank64-rslora" in expected  # a sanity anchor from the published numbers
