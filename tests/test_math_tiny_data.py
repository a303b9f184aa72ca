"""The math-tiny generator: deterministic, split-disjoint, and in the `math` task's answer format."""

import random
import re

import pytest

from peftbench.evaluation.answers import extract_answer, is_correct
from peftbench.tasks import math_tiny_data as data


def test_rows_are_deterministic_from_the_seed():
    assert data.generate_rows("train", 50, seed=3) == data.generate_rows("train", 50, seed=3)
    assert data.generate_rows("train", 50, seed=3) != data.generate_rows("train", 50, seed=4)
    assert data.pretraining_corpus(30, seed=1) == data.pretraining_corpus(30, seed=1)


def test_splits_never_share_a_number_chain():
    chains = {split: {p.number_chain for p in data.generate_problems(split, 400, seed=0)} for split in data.SPLITS}
    assert not chains["test"] & chains["train"]
    assert not chains["test"] & chains["valid"]
    assert not chains["valid"] & chains["train"]
    # the split is a property of the chain, not of the seed: other seeds fall in the same split
    other_seed_train = {p.number_chain for p in data.generate_problems("train", 400, seed=7)}
    assert not chains["test"] & other_seed_train


def _chains_in_worked_stories(documents):
    """Number chains of the worked stories, read back from their recaps."""
    chains = set()
    for document in documents:
        if "\n" not in document:
            continue
        recap = document.split("\n", 1)[1]
        steps = re.findall(r"(\d+) ([-+*]) (\d+) = (\d+)", recap)
        if steps:
            symbol_to_kind = {symbol: kind for kind, symbol in data.SYMBOL.items()}
            chains.add((int(steps[0][0]), tuple((symbol_to_kind[s], int(n)) for _, s, n, _ in steps)))
    return chains


def test_pretraining_corpus_holds_no_test_problem_and_no_answer_format():
    documents = data.pretraining_corpus(3000, seed=0)
    story_chains = _chains_in_worked_stories(documents)
    assert len(story_chains) > 200  # the check below must look at real stories
    assert all(data.split_of(chain) == "train" for chain in story_chains)
    text = "\n".join(documents)
    for marker in ("####", "Question:", "Answer:"):
        assert marker not in text


def test_worked_stories_are_about_half_of_the_corpus():
    documents = data.pretraining_corpus(2000, seed=0)
    worked = sum(1 for d in documents if "\n" in d)
    assert 0.45 < worked / len(documents) < 0.55


def test_solution_restates_the_relevant_sentences_in_order_and_skips_the_distractor():
    problems = [p for p in data.generate_problems("test", 100, seed=0) if p.distractor is not None]
    assert problems
    for problem in problems:
        response = problem.as_row()["response"]
        assert response.startswith(" ")  # appended to "...Answer:" as it is (see Problem.as_row)
        assert problem.distractor not in response
        position = 0
        for sentence in problem.relevant_sentences():  # each found after the one before it (same text may repeat)
            position = response.index(sentence, position) + len(sentence)


def test_solution_steps_are_correct_and_end_in_the_answer_line():
    for problem in data.generate_problems("test", 200, seed=0):
        row = problem.as_row()
        assert row["response"].endswith(f"\n#### {problem.answer}")
        assert extract_answer(row["response"]) == str(problem.answer)
        assert is_correct(row["response"], row["response"])
        for a, symbol, b, result in re.findall(r"(\d+) ([-+*]) (\d+) = (\d+)", row["response"]):
            assert eval_step(int(a), symbol, int(b)) == int(result)
        assert 0 <= problem.answer <= data.MAX_RESULT
        assert 2 <= len(problem.operations) <= 3
        assert row["query"].endswith("?")


def eval_step(a, symbol, b):
    return {"+": a + b, "-": a - b, "*": a * b}[symbol]


def test_problems_vary_in_templates_and_distractors():
    problems = data.generate_problems("train", 300, seed=0)
    assert len({p.start_template for p in problems}) == len(data.START_TEMPLATES)
    assert len({p.question_template for p in problems}) == len(data.QUESTION_TEMPLATES)
    with_distractor = sum(p.distractor is not None for p in problems) / len(problems)
    assert 0.35 < with_distractor < 0.65
    assert {kind for p in problems for kind, _ in p.operations} == {"add", "sub", "mul"}


def test_unknown_split_is_a_clear_error():
    with pytest.raises(ValueError, match="valid splits: train, valid, test"):
        data.generate_rows("training", 5, seed=0)


def test_random_problem_is_reproducible_from_its_rng():
    assert data.random_problem(random.Random(5)) == data.random_problem(random.Random(5))
