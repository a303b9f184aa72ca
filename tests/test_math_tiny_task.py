"""The math-tiny task: shipped model loads offline, defaults validate, rows come from the generator, and
every quick-suite adapter config applies to the shipped model unchanged."""

from pathlib import Path

import pytest

from peftbench.config import ConfigError
from peftbench.tasks import get_task
from peftbench.tasks.math_tiny import MathTinyTask, shipped_model_path
from peftbench.tasks.math_tiny_data import generate_rows, split_of

SUITE_DIR = Path(__file__).resolve().parents[1] / "src" / "peftbench" / "suites" / "quick"


@pytest.fixture(scope="module")
def task():
    return get_task("math-tiny")


@pytest.fixture(scope="module")
def shipped_model():
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(shipped_model_path())


def small_config(task, **overrides):
    params = {"train_size": 40, "valid_size": 10, "test_size": 20, "forgetting_size": 5, **overrides}
    return task.build_config(overrides=params)


def test_task_is_registered_and_defaults_validate(task):
    assert isinstance(task, MathTinyTask)
    config = task.build_config()
    assert Path(config.model_id) == shipped_model_path()
    assert config.test_size >= 500
    assert config.query_template == "Question: {query} Think step by step.\nAnswer:"
    task.check_inputs(config)


def test_shipped_model_is_a_small_untied_llama_with_digit_tokens(shipped_model, monkeypatch):
    from transformers import AutoTokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = shipped_model.config
    assert config.model_type == "llama"
    assert config.hidden_size % 64 == 0 and config.intermediate_size % 64 == 0
    assert not config.tie_word_embeddings
    assert (shipped_model_path() / "model.safetensors").stat().st_size <= 20 * 1024 * 1024
    names = {name.rsplit(".", 1)[-1] for name, _ in shipped_model.named_modules()}
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= names
    tokenizer = AutoTokenizer.from_pretrained(shipped_model_path())
    tokens = tokenizer.tokenize("12 + 345 = 357")
    digit_tokens = [t for t in tokens if any(c.isdigit() for c in t)]
    assert all(sum(c.isdigit() for c in t) == 1 for t in digit_tokens)
    assert len(digit_tokens) == 8


def test_load_data_uses_generated_disjoint_rows(task):
    config = small_config(task)
    data = task.load_data(config)
    assert (len(data.train), len(data.valid), len(data.test), len(data.forgetting)) == (40, 10, 20, 5)
    assert data.test == generate_rows("test", 20, seed=0)  # the same test set for every run
    assert all(row["response"].rsplit("\n", 1)[-1].startswith("#### ") for row in data.train)
    assert {"text"} == set(data.forgetting[0])
    # the first words of a test query ("<Name> has 12 apples.") never open a training query with the same chain
    assert not {row["query"] for row in data.test} & {row["query"] for row in data.train}
    assert split_of((12, (("add", 3), ("sub", 4)))) in ("train", "valid", "test")


def test_a_local_file_replaces_a_generated_split(task, tmp_path):
    import json

    path = tmp_path / "test.jsonl"
    path.write_text(json.dumps({"query": "Q?", "response": "1 + 1 = 2.\n#### 2"}) + "\n")
    data = task.load_data(small_config(task, test_data=str(path)))
    assert [(row["query"], row["response"]) for row in data.test] == [("Q?", "1 + 1 = 2.\n#### 2")]
    with pytest.raises(ConfigError, match="test_data"):
        task.check_inputs(small_config(task, test_data=str(tmp_path / "missing.jsonl")))


def test_training_batches_mask_the_prompt(task):
    config = small_config(task, batch_size=4)
    tokenizer = task.load_processor(config)
    batch = next(task.train_batches(generate_rows("train", 8, seed=0), tokenizer, config, seed=0))
    labels = batch.inputs["labels"][0]
    answer_tokens = tokenizer.decode([t for t in labels.tolist() if t != -100])
    assert "Question:" not in answer_tokens and "####" in answer_tokens


def quick_experiment_dirs():
    return sorted(p.parent for p in SUITE_DIR.rglob("training_params.json"))


@pytest.mark.parametrize("folder", quick_experiment_dirs(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_quick_suite_config_applies_to_the_shipped_model(folder, shipped_model):
    import copy

    from peft import get_peft_model

    from peftbench.experiments import build_peft_config, load_experiment

    spec = load_experiment(folder)
    peft_config = build_peft_config(spec)
    if peft_config is None:
        assert spec.method == "full-finetuning"
        return
    model = get_peft_model(copy.deepcopy(shipped_model), peft_config)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 0 < trainable < sum(p.numel() for p in shipped_model.parameters()) / 5
