"""`math` trains as the PEFT suite's MetaMathQA script does by default (loss_on "sequence", batch_order "peft"),
and keeps peftbench's own choices (loss_on "completion", batch_order "shuffled") as parameters."""

from __future__ import annotations

import itertools
import json
import math
import re

import pytest
import torch

from peftbench.config import ConfigError
from peftbench.tasks import get_task

ROWS = [{"query": f"q{i} " + "x " * (i % 7), "response": f" r{i} " + "y " * (i % 5) + f"#### {i}"} for i in range(90)]


@pytest.fixture(scope="module")
def task():
    return get_task("math")


def config_for(task, params, **overrides):
    return task.build_config(None, overrides={**params, "batch_size": 2, **overrides})


def test_math_defaults_are_the_suites(task, math_fixture_params):
    config = config_for(task, math_fixture_params)
    assert (config.loss_on, config.batch_order) == ("sequence", "peft")


@pytest.mark.parametrize("key", ["loss_on", "batch_order"])
def test_bad_values_are_rejected_with_the_valid_ones(task, math_fixture_params, key):
    with pytest.raises(ConfigError, match=f"'{key}'.*valid"):
        config_for(task, math_fixture_params, **{key: "answer"})


def test_peft_order_is_file_order_one_pass_with_the_remainder_twice(task, math_fixture_params):
    config = config_for(task, math_fixture_params)  # buckets of 2 * 20 = 40 rows: 40, 40, then 10 twice
    tokenizer = task.load_processor(config)
    batches = list(task.train_batches(ROWS, tokenizer, config, seed=0))
    assert len(batches) == 20 + 20 + 5 + 5  # and then the iterator ends: one pass
    def row_numbers(batch_list):
        texts = [tokenizer.decode(b.inputs["input_ids"][r], skip_special_tokens=True) for b in batch_list for r in range(2)]
        return sorted(int(re.search(r"q(\d+)", text).group(1)) for text in texts)

    assert row_numbers(batches[:20]) == list(range(40))  # the first bucket: the first 40 rows of the file
    assert row_numbers(batches[40:45]) == list(range(80, 90))
    for repeated, original in zip(batches[45:], batches[40:45]):
        assert torch.equal(repeated.inputs["input_ids"], original.inputs["input_ids"])
    lengths = [int((b.inputs["input_ids"] != tokenizer.pad_token_id).sum(1).max()) for b in batches[:20]]
    assert lengths == sorted(lengths, reverse=True)  # long to short within a bucket
    # the seed does not change the order (the suite never shuffles)
    other = list(itertools.islice(task.train_batches(ROWS, tokenizer, config, seed=5), 3))
    assert all(torch.equal(a.inputs["input_ids"], b.inputs["input_ids"]) for a, b in zip(batches, other))


def test_sequence_labels_cover_the_row_and_the_first_padding_token(task, math_fixture_params):
    config = config_for(task, math_fixture_params)
    tokenizer = task.load_processor(config)
    batch = next(task.train_batches(ROWS[:40], tokenizer, config, seed=0))
    ids, labels = batch.inputs["input_ids"], batch.inputs["labels"]
    mask = ids != tokenizer.pad_token_id  # no pad token inside the fixture's texts
    assert batch.inputs["num_items_in_batch"] == int(mask.sum())
    short = int(mask.sum(1).argmin())
    length = int(mask[short].sum())
    prompt_and_response = ROWS[0]  # any row: no EOS is appended to the text's tokens
    assert tokenizer.eos_token_id not in tokenizer(task.prompt(prompt_and_response["query"], config)
                                                   + prompt_and_response["response"])["input_ids"]
    assert torch.equal(labels[short, : length + 1], ids[short, : length + 1])
    assert ids[short, length] == tokenizer.pad_token_id  # the first padding token is labelled (as the suite)
    assert (labels[short, length + 1 :] == -100).all()


def test_sequence_loss_is_the_sum_over_the_non_padding_count(task, math_fixture_params):
    config = config_for(task, math_fixture_params)
    tokenizer = task.load_processor(config)
    model = task.load_model(config, "cpu")
    batch = next(task.train_batches(ROWS[:40], tokenizer, config, seed=0))
    ids = batch.inputs["input_ids"]
    mask = (ids != tokenizer.pad_token_id).long()
    assert (mask == 0).any(), "the batch should hold padding"
    # the batch goes to the model without an attention mask; the reference masks the padding
    assert "attention_mask" not in batch.inputs
    loss = task.compute_loss(model, batch)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    logits = model(input_ids=ids, attention_mask=mask).logits
    token_losses = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), batch.inputs["labels"][:, 1:].reshape(-1),
        ignore_index=-100, reduction="sum",
    )
    reference = token_losses / int(mask.sum())
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
    reference.backward()
    for grad, parameter in zip(grads, model.parameters()):
        torch.testing.assert_close(grad, parameter.grad, rtol=1e-4, atol=1e-6)


def test_completion_masks_the_prompt_and_appends_eos(task, math_fixture_params):
    config = config_for(task, math_fixture_params, loss_on="completion", batch_order="shuffled")
    tokenizer = task.load_processor(config)
    batch = next(task.train_batches(ROWS[:40], tokenizer, config, seed=0))
    assert "num_items_in_batch" not in batch.inputs
    labels = batch.inputs["labels"][0]
    labelled = [t for t in labels.tolist() if t != -100]
    assert labelled[-1] == tokenizer.eos_token_id
    assert "Question" not in tokenizer.decode(labelled) and "####" in tokenizer.decode(labelled)


def test_shuffled_order_depends_on_the_seed_and_never_ends(task, math_fixture_params):
    config = config_for(task, math_fixture_params, batch_order="shuffled")
    tokenizer = task.load_processor(config)
    first = list(itertools.islice(task.train_batches(ROWS, tokenizer, config, seed=0), 150))
    other = list(itertools.islice(task.train_batches(ROWS, tokenizer, config, seed=1), 150))
    assert len(first) == 150  # 90 rows, batch 2: past three epochs and counting
    assert any(not torch.equal(a.inputs["input_ids"], b.inputs["input_ids"]) for a, b in zip(first, other))


def test_suite_forgetting_measure_is_unshifted(task, math_fixture_params):
    """The suite's loss compares the logits at each position with the token at that same position."""
    from peftbench.evaluation.forgetting import mean_token_loss, peft_suite_token_loss

    config = config_for(task, math_fixture_params)
    tokenizer = task.load_processor(config)
    model = task.load_model(config, "cpu")
    text = "Cleo starts with 6 apples. Cleo gives away 1 apples."
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    logits = model(input_ids=ids).logits[0]
    expected = torch.nn.functional.cross_entropy(logits, ids[0]).item()
    assert peft_suite_token_loss(model, tokenizer, [text], batch_size=1, max_length=64) == pytest.approx(expected, rel=1e-5)
    assert mean_token_loss(model, tokenizer, [text], batch_size=1, max_length=64) != pytest.approx(expected, rel=1e-3)


def test_training_ends_with_the_pass_and_the_result_names_the_settings(task, math_fixture_params, experiments_copy, tmp_path):
    from peftbench.run.engine import execute
    from peftbench.run.request import RunRequest

    overrides = {**math_fixture_params, "max_steps": 40, "eval_steps": 40, "valid_size": 0}
    request = RunRequest(task="math", results_dir=str(tmp_path), mode="train",
                         experiment_dir=str(experiments_copy / "lora" / "llama-3.2-3B-rank32"),
                         overrides=overrides, save_checkpoint=False, show_progress=False)
    path, status = execute(request)
    result = json.loads(path.read_text())
    assert status == "success"
    rows = len(task.load_data(config_for(task, math_fixture_params)).train)
    assert rows < 4 * 20  # one partial bucket, which the suite's iterator yields twice, then it ends
    assert result["peftbench"]["steps"] == 2 * math.ceil(rows / 4) < 40
    assert result["run_info"]["train_config"]["loss_on"] == "sequence"
    assert result["run_info"]["train_config"]["batch_order"] == "peft"
    own = result["peftbench"]
    # the suite's train_time also counts data loading, the forgetting losses and the test generation
    assert own["train_time_s"] + own["eval_time_s"] < result["train_info"]["train_time"] < own["total_time_s"]


def test_under_the_suites_order_the_seed_changes_nothing_as_in_the_suite(experiments_copy, math_fixture_params, tmp_path):
    from peftbench.run.engine import execute
    from peftbench.run.request import RunRequest

    def losses(seed: int) -> list[float]:
        request = RunRequest(task="math", results_dir=str(tmp_path / str(seed)), mode="train", seed=seed,
                             experiment_dir=str(experiments_copy / "lora" / "llama-3.2-3B-rank32"),
                             overrides={**math_fixture_params, "max_steps": 3, "valid_size": 0, "test_size": 1},
                             save_checkpoint=False, show_progress=False)
        path, _ = execute(request)
        return [point["loss"] for point in json.loads(path.read_text())["peftbench"]["train_curve"]]

    assert losses(1) == losses(2)
