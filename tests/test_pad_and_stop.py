"""`math` pads and decodes as the PEFT suite's scripts do for any tokenizer and model (its get_tokenizer pads
with EOS whatever the tokenizer declares; its run.py lets the model's generation_config fill what
generation_kwargs leave unset), and a run whose completions never stop says so instead of scoring a quiet 0."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from peftbench.evaluation.generation import generate_completions, generation_config_for, with_model_defaults
from peftbench.evaluation.validity import run_warnings
from peftbench.results.record import RunResult
from peftbench.tasks import get_task

ROWS = [{"query": f"q{i} " + "x " * (i % 7), "response": f" r{i} " + "y " * (i % 5) + f"#### {i}"} for i in range(40)]


def math_config(params, **overrides):
    return get_task("math").build_config(overrides={**params, "batch_size": 4, **overrides})


def stop_labels(task, config) -> tuple[list[int], list[int]]:
    """For each row of the first batch that has padding, (label at its first padding position, its pad input)."""
    tokenizer = task.load_processor(config)
    batch = next(task.train_batches(ROWS, tokenizer, config, seed=0))
    labels, ids = batch.inputs["labels"], batch.inputs["input_ids"]
    lengths = [int((row != -100).sum()) for row in labels]  # the row's tokens and its stop label
    width = ids.shape[1]
    padded = [r for r in range(len(lengths)) if lengths[r] <= width and (labels[r] != -100).sum() < width]
    assert padded, "the fixture batch should hold padded rows"
    return [int(labels[r, lengths[r] - 1]) for r in padded], [int(ids[r, -1]) for r in padded]


def test_math_pads_with_eos_although_the_tokenizer_declares_its_own_pad(math_fixture_params, tiny_model_dir):
    from transformers import AutoTokenizer

    declared = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert declared.pad_token_id not in (None, declared.eos_token_id)  # the fixture has its own <pad>
    task = get_task("math")
    config = math_config(math_fixture_params)
    assert config.pad_token == "eos" and config.decoding == "model"
    tokenizer = task.load_processor(config)
    assert tokenizer.pad_token_id == tokenizer.eos_token_id and tokenizer.padding_side == "right"
    labels, pads = stop_labels(task, config)
    assert set(labels) == set(pads) == {tokenizer.eos_token_id}  # the model learns to stop, as in the suite


def test_the_tokenizers_own_pad_is_a_choice_that_still_teaches_eos(math_fixture_params, tiny_model_dir):
    task = get_task("math")
    config = math_config(math_fixture_params, pad_token="tokenizer")
    tokenizer = task.load_processor(config)
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    labels, pads = stop_labels(task, config)
    assert set(pads) == {tokenizer.pad_token_id}  # padded with <pad>, so EOS stays visible to masks ...
    assert set(labels) == {tokenizer.eos_token_id}  # ... and the stop position is still labelled EOS


def test_model_decoding_takes_the_unset_fields_from_the_models_generation_config(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    eos = tokenizer.eos_token_id
    # a model whose generation_config asks for sampling and names more than one stop token
    model.generation_config.update(do_sample=True, temperature=0.6, top_p=0.9, eos_token_id=[eos, 7])
    suite = with_model_defaults(model, generation_config_for(10, {"max_new_tokens": 4}, tokenizer, "model"))
    assert suite.do_sample and (suite.temperature, suite.top_p) == (0.6, 0.9)
    assert suite.eos_token_id == [eos, 7] and suite.pad_token_id == eos  # run.py passes pad_token_id = EOS
    greedy = with_model_defaults(model, generation_config_for(10, {"max_new_tokens": 4}, tokenizer, "greedy"))
    assert not greedy.do_sample and greedy.eos_token_id == eos
    # both limits: run.py hands both to transformers, which applies max_new_tokens; "greedy" takes the smaller
    limits = {"max_length": 12, "max_new_tokens": 8}
    assert generation_config_for(10, limits, tokenizer, "model").max_new_tokens == 8
    assert generation_config_for(10, limits, tokenizer, "greedy").max_new_tokens == 2


@pytest.mark.parametrize("method", ["lora", "prompt_tuning"])
def test_model_decoding_samples_where_the_model_asks_and_stops_at_its_stop_tokens(tiny_model_dir, method):
    from peft import LoraConfig, PromptTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    adapter = LoraConfig(r=4) if method == "lora" else PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter).eval()
    prompts = ["Ava has 4 apples.", "Ben buys 26 more apples and then sells 3."]

    def complete(seed: int, decoding: str):
        torch.manual_seed(seed)
        return generate_completions(model, tokenizer, prompts, batch_size=2, max_prompt_length=64,
                                    generation_kwargs={"max_new_tokens": 12}, decoding=decoding)

    model.get_base_model().generation_config.update(do_sample=True, temperature=50.0, top_p=1.0)
    sampled = [complete(seed, "model").texts for seed in range(3)]
    assert len({tuple(texts) for texts in sampled}) > 1  # sampled: the seed changes the completions
    assert complete(0, "greedy").texts == complete(1, "greedy").texts  # greedy ignores the model's sampling
    # every token a stop token: each completion stops at once, none runs to the limit
    model.get_base_model().generation_config.update(do_sample=False, eos_token_id=list(range(len(tokenizer))))
    stopped = complete(0, "model")
    assert stopped.at_length_limit == 0


def test_completions_that_never_stop_are_counted(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    done = generate_completions(model, tokenizer, ["a", "b", "c"], batch_size=2, max_prompt_length=16,
                                generation_kwargs={"max_new_tokens": 3, "min_new_tokens": 3}, decoding="greedy")
    assert done.at_length_limit == 3  # min_new_tokens keeps EOS out: all three ran to the limit


def result_with(**fields) -> RunResult:
    defaults = {"test_score": 0.4, "completions_at_length_limit": 2,
                "train_curve": [{"step": s, "loss": 3.0 - s / 50} for s in range(1, 101)]}
    return RunResult(status="success", **{**defaults, **fields})


def test_run_warnings_name_the_silent_failures_and_stay_quiet_otherwise():
    assert run_warnings(result_with(), test_items=10) == []
    never_stopped = run_warnings(result_with(completions_at_length_limit=10), test_items=10)
    assert len(never_stopped) == 1 and "every test completion (10)" in never_stopped[0] and "pad_token" in never_stopped[0]
    zero = run_warnings(result_with(test_score=0.0), test_items=10)
    assert len(zero) == 1 and "is 0 although the training loss fell" in zero[0]
    flat = [{"step": s, "loss": 2.0} for s in range(1, 101)]
    assert run_warnings(result_with(test_score=0.0, train_curve=flat), test_items=10) == []  # nothing learned


def test_report_repeats_a_results_warning(tmp_path):
    from peftbench.cli import app

    fixture = Path(__file__).parent / "fixtures" / "results" / "peftbench"
    source = sorted(fixture.glob("*.json"))[0]
    document = json.loads(source.read_text())
    document["peftbench"]["run_warnings"] = ["every test completion (500) ran to the length limit <b>"]
    (tmp_path / source.name).write_text(json.dumps(document))
    result = CliRunner().invoke(app, ["report", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert any("every test completion (500) ran to the length limit" in w for w in json.loads(result.stdout)["warnings"])


def test_float32_keeps_the_checkpoints_dtype_in_math_as_the_suites_script(math_fixture_params, tmp_path):
    """The suite passes no dtype for float32, and transformers >= 5 then loads what the checkpoint stores."""
    from transformers import AutoModelForCausalLM

    bf16_copy = tmp_path / "bf16-model"
    AutoModelForCausalLM.from_pretrained(math_fixture_params["model_id"], dtype=torch.bfloat16).save_pretrained(bf16_copy)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        source = Path(math_fixture_params["model_id"]) / name
        if source.exists():
            (bf16_copy / name).write_bytes(source.read_bytes())
    task = get_task("math")
    suite = math_config(math_fixture_params, model_id=str(bf16_copy))
    assert suite.float32_loading == "checkpoint"
    assert next(task.load_model(suite, "cpu").parameters()).dtype == torch.bfloat16
    cast = math_config(math_fixture_params, model_id=str(bf16_copy), float32_loading="float32")
    assert next(task.load_model(cast, "cpu").parameters()).dtype == torch.float32


def test_a_long_prompt_keeps_its_first_tokens_as_the_suites_data_py_cuts_it(tiny_model_dir):
    """With a tokenizer that appends EOS, truncation=True would keep the EOS and cut the text before it; the suite
    slices the token ids, so a cut prompt is its first max_prompt_length tokens."""
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    eos = tokenizer.eos_token_id
    tokenizer._tokenizer.post_processor = TemplateProcessing(single=f"$A {tokenizer.eos_token}",
                                                            special_tokens=[(tokenizer.eos_token, eos)])
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    seen = []
    real_generate = model.generate
    model.generate = lambda input_ids, **kwargs: seen.append(input_ids) or real_generate(input_ids=input_ids, **kwargs)
    prompt = "Ava has 4 apples and Ben buys 26 more apples."
    full = tokenizer(prompt)["input_ids"]
    assert full[-1] == eos and len(full) > 5
    generate_completions(model, tokenizer, [prompt], batch_size=1, max_prompt_length=5,
                         generation_kwargs={"max_new_tokens": 2})
    assert seen[0][0].tolist() == full[:5]
