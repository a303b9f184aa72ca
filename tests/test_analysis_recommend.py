"""Recommendations under constraints, and parsing the limits users type."""

from __future__ import annotations

from pathlib import Path

import pytest

from peftbench.analysis.metrics import get_metric
from peftbench.analysis.points import build_points
from peftbench.analysis.recommend import (
    Constraint,
    ConstraintError,
    parse_count,
    parse_duration,
    parse_size,
    recommend,
)
from peftbench.analysis.runs import load_results

RESULTS = Path(__file__).parent / "fixtures" / "results"
GiB = 2**30


@pytest.mark.parametrize(
    ("text", "expected"),
    [("20GB", 20 * GiB), ("20 GiB", 20 * GiB), ("512MB", 512 * 2**20), ("1.5g", 1.5 * GiB), ("100", 100), ("2KiB", 2048)],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize(("text", "expected"), [("30m", 1800), ("90s", 90), ("1.5h", 5400), ("1h30m", 5400), ("45", 45), ("1h 5min", 3900)])
def test_parse_duration(text, expected):
    assert parse_duration(text) == expected


def test_parse_count():
    assert parse_count("10M") == 1e7 and parse_count("500k") == 5e5 and parse_count("1.5B") == 1.5e9


@pytest.mark.parametrize(
    ("parser", "text"),
    [(parse_size, "20 parsecs"), (parse_size, "-5GB"), (parse_size, ""), (parse_duration, "soon"),
     (parse_duration, "30x"), (parse_duration, "1" * 60 + "!"), (parse_count, "many")],
)  # fmt: skip
def test_unparseable_limits_name_the_option_and_show_valid_forms(parser, text):
    with pytest.raises(ConstraintError, match=r"--opt .*(e\.g\.|use)"):
        parser(text, "--opt")


def _published_points():
    points, _ = build_points(load_results([RESULTS / "published"]).runs)
    return points


def test_best_under_a_memory_limit_with_runner_up_and_why():
    # published results' memory (the whole run's reserved peak, the limit's axis for them): miss 18.9 GiB, shira 20.2, lora 20.8, tinylora 18.7, ia3 21.6, full fine-tuning 36.2
    result = recommend(_published_points(), [Constraint(get_metric("peak_memory"), 20.5 * GiB)], "test_score")
    assert result.best.name == "shira/llama-3.2-3B-lr_0.0003-random_seed_42"
    assert result.runner_up.name == "miss/llama-3.2-3B-default"
    assert {name for name, _ in result.excluded} == {
        "lora/llama-3.2-3B-rank32", "ia3/llama-3.2-3B-default", "full-finetuning/llama-3.2-3B-lr_0.00001"
    }
    why = " ".join(result.reasons)
    assert "highest test score (0.510)" in why and "peak RSS/reserved (whole run) <= 20.5 GiB" in why
    assert "noise is not measured" in why  # single runs: say so


def test_priority_forgetting_and_min_score():
    points = _published_points()
    lowest = recommend(points, [], "forgetting")
    assert lowest.best.name == "ia3/llama-3.2-3B-default"  # forgetting 0.019, the lowest of the six
    assert lowest.runner_up.name == "full-finetuning/llama-3.2-3B-lr_0.00001"  # 0.030
    assert any("--min-score" in reason for reason in lowest.reasons)
    useful = recommend(points, [Constraint(get_metric("test_score"), 0.45, at_least=True)], "forgetting")
    assert useful.best.name == "full-finetuning/llama-3.2-3B-lr_0.00001"
    assert useful.best.mean("test_score") >= 0.45


def test_runner_up_within_noise_is_said():
    points, _ = build_points(load_results([RESULTS / "peftbench"]).runs)
    points = [p for p in points if p.name in ("lora/rank8", "vera/default")]
    result = recommend(points, [], "test_score")
    assert result.best.name == "lora/rank8" and result.difference.verdict == "noise"
    assert any("within noise" in reason and "paired bootstrap" in reason for reason in result.reasons)


def test_impossible_constraints_name_the_closest_option():
    result = recommend(_published_points(), [Constraint(get_metric("peak_memory"), 1 * GiB)], "test_score")
    assert result.best is None
    assert "no point meets" in result.reasons[0]
    assert "tinylora/llama-3.2-3B-default" in result.reasons[1]  # the least memory available
