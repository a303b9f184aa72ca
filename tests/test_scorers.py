"""Built-in scorers of task files (evaluation/scorers.py): what each accepts and rejects."""

from __future__ import annotations

from pathlib import Path

import pytest

from peftbench.config import ConfigError
from peftbench.evaluation.scorers import load_scorer


def score(metric: str, prediction: str, target: str, **args) -> float:
    return load_scorer(metric, args, Path("."), "task.yaml")(prediction, target, {})


def test_exact_match_and_its_normalisations():
    assert score("exact_match", "  Paris \n", "Paris") == 1
    assert score("exact_match", "paris", "Paris") == 0
    assert score("exact_match", "paris!", "Paris", ignore_case=True, ignore_punctuation=True) == 1
    assert score("exact_match", "Answer: Paris", "Paris", regexes_to_ignore=["^Answer: "]) == 1


def test_last_number():
    assert score("last_number", "3 apples and 1,000 pears, so 1,250", "#### 1250") == 1
    assert score("last_number", "so 12.50", "12.5") == 1
    assert score("last_number", "no number", "7") == 0
    assert score("last_number", "7 then 8", "7") == 0


def test_regex_and_contains():
    assert score("regex", "The label is: spam.", "spam", pattern=r"label is: (\w+)") == 1
    assert score("regex", "nothing", "spam", pattern=r"label is: (\w+)") == 0
    assert score("contains", "I think it is Blue.", "blue", ignore_case=True) == 1
    assert score("contains", "I think it is Blue.", "blue") == 0


def test_rouge_gives_partial_credit():
    assert score("rouge", "the cat sat on the mat", "the cat sat on the mat") == pytest.approx(1)
    partial = score("rouge", "the cat sat", "the cat sat on the mat")
    assert 0 < partial < 1
    with pytest.raises(ConfigError, match="variant"):
        score("rouge", "a", "a", variant="rouge9")


def test_bad_metric_arguments_name_the_key():
    with pytest.raises(ConfigError, match="metric_args.*pattern"):
        score("regex", "a", "a")  # pattern is required
    with pytest.raises(ConfigError, match="metric_args.pattern"):
        score("regex", "a", "a", pattern="(")
    with pytest.raises(ConfigError, match="metric_args"):
        score("contains", "a", "a", ignore_punctuation=True)


def test_f1_is_squads_token_overlap_after_normalisation():
    assert score("f1", "The Cat sat!", "cat sat") == pytest.approx(1)  # articles, case, punctuation ignored
    # 2 shared tokens of 3 predicted and 4 expected: precision 2/3, recall 1/2
    assert score("f1", "cat sat down", "cat sat on mats") == pytest.approx(2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2))
    assert score("f1", "dog", "cat") == 0
    assert score("f1", "cat cat", "cat") == pytest.approx(2 * 0.5 * 1 / 1.5)  # tokens count with multiplicity
    assert score("f1", "the", "") == 1  # both empty after normalisation


def test_final_answer_is_the_suites_gsm8k_scoring():
    assert score("final_answer", "3 + 4 = 7.\n#### 7", "so 7 in all\n#### 7") == 1
    assert score("final_answer", "The answer is: 1,250", "#### 1250") == 1
    assert score("final_answer", "7 apples", "#### 7") == 0  # no answer delimiter in the prediction
