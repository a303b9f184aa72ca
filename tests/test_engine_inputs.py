"""Engine: configs, experiment folders, bad input, answer scoring, atomic writes (no model is built here)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from peftbench.config import ConfigError, build_train_config, parse_set_options
from peftbench.evaluation.answers import extract_answer, is_correct
from peftbench.experiments import discover_experiments, load_experiment
from peftbench.results.writer import write_json_atomic
from peftbench.tasks import get_task
from peftbench.tasks.text_config import TextTrainConfig

from conftest import FIXTURES, MATH_FIXTURES
from peftbench.validity.protocol import PUBLISHED_METAMATHQA_EXPERIMENTS as PUBLISHED_SUITE
from peftbench.run.request import RunRequest
from waiting import SAFETY_NET_S


def math_defaults():
    return get_task("math").default_params()


def build_text_config(*args, **kwargs):
    return build_train_config(*args, config_class=TextTrainConfig, **kwargs)


def test_suite_experiment_loads_unchanged_and_merges_nested_kwargs():
    spec = load_experiment(FIXTURES / "experiments/lora/llama-3.2-3B-rank32-lorafa")
    assert (spec.method, spec.name, spec.peft_type) == ("lora", "llama-3.2-3B-rank32-lorafa", "LORA")
    config = build_text_config(math_defaults(), spec.training_params, str(spec.training_params_path))
    assert config.optimizer_type == "lora-fa"
    assert config.optimizer_kwargs == {"r": 32, "lora_alpha": 64, "lr": 1e-4, "weight_decay": 0.1}
    # a partial optimizer_kwargs keeps the task default's other keys (the PEFT suite's merge)
    config = build_text_config(math_defaults(), {"optimizer_kwargs": {"lr": 5e-4}})
    assert config.optimizer_kwargs == {"lr": 5e-4, "weight_decay": 0.1}


def test_full_finetuning_folder_has_no_adapter_config():
    spec = load_experiment(FIXTURES / "experiments/full-finetuning/llama-3.2-3B-lr_0.00001")
    assert spec.adapter_config is None and spec.peft_type is None
    request = RunRequest(task="math", results_dir="results", experiment_dir=str(spec.path))
    assert request.result_stem == "full-finetuning--llama-3.2-3B-lr_0.00001"


def test_set_options_parse_json_values_and_dotted_keys():
    params = parse_set_options(["max_steps=20", "optimizer_kwargs.lr=1e-3", "query_template=Q: {query} A:", "use_gc=true"])
    assert params == {
        "max_steps": 20, "optimizer_kwargs": {"lr": 1e-3}, "query_template": "Q: {query} A:", "use_gc": True,
    }
    config = build_text_config(math_defaults(), {}, overrides=params)
    assert config.max_steps == 20 and config.optimizer_kwargs == {"lr": 1e-3, "weight_decay": 0.1}


def test_unknown_set_key_is_named_with_a_suggestion():
    with pytest.raises(ConfigError) as error:
        build_text_config(math_defaults(), overrides=parse_set_options(["max_step=20"]))
    message = str(error.value)
    assert "'max_step'" in message and "--set" in message and "Did you mean 'max_steps'" in message


def test_a_key_of_optimizer_kwargs_given_alone_points_at_it():
    with pytest.raises(ConfigError) as error:
        get_task("math").build_config(None, overrides=parse_set_options(["lr=1e-3"]))
    assert "unknown training parameter 'lr' in --set. Did you mean 'optimizer_kwargs.lr'?" in str(error.value)


def test_the_valid_keys_offered_are_the_tasks_own():
    image_only = {"resolution", "guidance_scale", "instance_prompts"}
    assert not image_only & set(TextTrainConfig.__dataclass_fields__)  # keys of image generation's config only
    with pytest.raises(ConfigError) as error:
        get_task("math").build_config(None, overrides=parse_set_options(["max_step=20"]))
    valid = set(str(error.value).partition("Valid keys: ")[2].split(", "))
    assert "query_template" in valid and not image_only & valid
    with pytest.raises(ConfigError) as error:
        get_task("image-tiny").build_config(None, overrides=parse_set_options(["max_step=20"]))
    valid = set(str(error.value).partition("Valid keys: ")[2].split(", "))
    assert image_only <= valid and "query_template" not in valid


def test_unknown_training_params_key_names_key_and_file(tmp_path):
    folder = tmp_path / "lora" / "typo"
    shutil.copytree(FIXTURES / "experiments/lora/llama-3.2-3B-rank32", folder)
    (folder / "training_params.json").write_text(json.dumps({"learning_rate": 1e-3}))
    spec = load_experiment(folder)
    with pytest.raises(ConfigError) as error:
        get_task("math").build_config(spec.training_params, str(spec.training_params_path))
    assert "'learning_rate'" in str(error.value) and str(folder / "training_params.json") in str(error.value)


def test_malformed_json_names_file_and_line(tmp_path):
    folder = tmp_path / "lora" / "broken"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text('{\n  "peft_type": "LORA",\n  "r": 8,,\n}\n')
    with pytest.raises(ConfigError) as error:
        load_experiment(folder)
    assert str(folder / "adapter_config.json") in str(error.value) and "line 3" in str(error.value)


def test_unknown_peft_type_lists_valid_types(tmp_path):
    folder = tmp_path / "lorax" / "x"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORAX", "r": 8}))
    with pytest.raises(ConfigError) as error:
        load_experiment(folder)
    assert "'LORAX'" in str(error.value) and "LORA" in str(error.value) and "PROMPT_TUNING" in str(error.value)


def test_a_config_that_trains_no_parameter_of_the_model_is_refused():
    """The PEFT suite's OSF config keeps 2944 of q_proj's singular directions (Llama-3B's 3072 less 128): on the
    tiny model's 256-wide layers every trainable tensor is empty, and a run would score the base model."""
    from peftbench.experiments import build_peft_config
    from peftbench.training.methods import wrap_model

    task = get_task("math-tiny")
    config = task.build_config({}, "test", {})
    spec = load_experiment(PUBLISHED_SUITE / "osf" / "llama-3.2-3B-rank128")
    model = task.load_model(config, "cpu")
    with pytest.raises(ConfigError, match="osf/llama-3.2-3B-rank128/adapter_config.json trains no parameter of the "
                                          "base model .*: its 84 trainable tensors are all empty"):
        wrap_model(model, build_peft_config(spec), None, config, source=str(spec.path / "adapter_config.json"))


def test_invalid_value_is_named():
    with pytest.raises(ConfigError, match="dtype"):
        build_text_config(math_defaults(), {"dtype": "float8"})
    with pytest.raises(ConfigError, match="query_template"):
        build_text_config(math_defaults(), {"query_template": "no placeholder"})


def test_missing_data_file_fails_before_loading(tmp_path):
    task = get_task("math")
    config = build_text_config(task.default_params(), overrides={"train_data": str(tmp_path / "nope.jsonl")})
    with pytest.raises(ConfigError) as error:
        task.check_inputs(config)
    assert "train_data" in str(error.value) and "nope.jsonl" in str(error.value)


def test_math_task_loads_local_files_with_the_suite_filter():
    task = get_task("math")
    config = build_text_config(task.default_params(), overrides={
        "train_data": str(MATH_FIXTURES / "metamath_train.jsonl"),
        "valid_data": str(MATH_FIXTURES / "gsm8k_train.jsonl"),
        "test_data": str(MATH_FIXTURES / "gsm8k_test.jsonl"),
        "forgetting_data": str(MATH_FIXTURES / "finewiki.jsonl"),
        "valid_size": 5, "forgetting_size": 3,
    })
    data = task.load_data(config)
    assert len(data.train) == 40  # the 41st row is longer than 1300 characters and dropped
    assert all(len(f"{row['query']} {row['response']}") <= 1300 for row in data.train)
    assert len(data.valid) == 5 and len(data.test) == 8 and len(data.forgetting) == 3
    assert {"query", "response"} <= set(data.valid[0]) and "####" in data.valid[0]["response"]
    assert task.load_data(config).valid == data.valid  # the valid sample is fixed


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        (" 3 + 4 = 7.\n#### 7", "so 7\n#### 7", True),
        ("The answer is: 7.", "#### 7", True),
        ("The answer is 1,200", "#### 1200", True),
        ("The answer is: 0.5", "The answer is: 1/2", True),
        ("#### 8", "#### 7", False),
        ("7", "#### 7", False),  # no final-answer marker: not counted
    ],
)
def test_answer_extraction_and_numeric_comparison(prediction, reference, expected):
    assert is_correct(prediction, reference) is expected


def test_reference_without_answer_is_an_error():
    assert extract_answer("no answer here") is None
    with pytest.raises(ValueError):
        is_correct("#### 1", "no answer here")


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "r.json"
    write_json_atomic(target, {"a": 1, "loss": float("nan")})
    assert json.loads(target.read_text()) == {"a": 1, "loss": None}
    with pytest.raises(TypeError):
        write_json_atomic(target, {"bad": object.__new__(type("X", (), {"__str__": None}))})
    assert json.loads(target.read_text()) == {"a": 1, "loss": None}  # old file intact
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_discovery_ignores_checkpoint_folders(tmp_path):
    shutil.copytree(FIXTURES / "experiments", tmp_path / "experiments")
    checkpoint = tmp_path / "experiments" / "checkpoints" / "lora--x"
    checkpoint.mkdir(parents=True)
    (checkpoint / "adapter_config.json").write_text("{}")
    (checkpoint / "adapter_model.safetensors").write_bytes(b"0")
    found = discover_experiments(tmp_path / "experiments")
    assert checkpoint not in found and len(found) == 5


def test_valid_sample_is_the_peft_suites(tmp_path):
    """The suite draws valid rows with np.random.seed(0); np.random.shuffle(arange(n)); first valid_size."""
    import numpy as np

    rows = [{"question": f"q{i}", "answer": f"#### {i}"} for i in range(30)]
    source = tmp_path / "gsm8k_train.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    task = get_task("math")
    config = build_text_config(task.default_params(), overrides={"valid_data": str(source), "valid_size": 6})
    np.random.seed(0)
    expected = np.arange(30)
    np.random.shuffle(expected)
    valid = task.split_rows("valid", str(source))[: config.valid_size]  # load_data keeps valid_size of them
    assert [row["query"] for row in valid] == [f"q{i}" for i in expected[:6]]


def test_cpu_peak_memory_separates_training_from_the_whole_run():
    import torch

    from peftbench.training.memory import PeakMemoryMeter

    meter = PeakMemoryMeter(torch.device("cpu"))
    meter.start_run()
    meter.start_training()
    during_training = bytearray(96 * 2**20)  # touched pages count in RSS
    del during_training
    meter.end_training()
    after_training = bytearray(192 * 2**20)
    del after_training
    report = meter.report()
    assert report.peak_memory_kind == "cpu_rss" and report.peak_memory_train_allocated_bytes is None
    assert 90 * 2**20 <= report.peak_memory_train_bytes < 160 * 2**20  # about the 96 MiB, not the 192 MiB after it
    assert report.peak_memory_total_bytes >= 180 * 2**20


# the PEFT suite's MetaMathQA experiment folders, unchanged (tests/fixtures/peft-metamathqa-configs/README.md)
PEFT_SUITE_EXPERIMENTS = FIXTURES / "peft-metamathqa-configs"


def test_every_peft_suite_experiment_folder_loads_unchanged():
    from peftbench.experiments import build_peft_config

    folders = discover_experiments(PEFT_SUITE_EXPERIMENTS)
    assert len(folders) > 50
    for folder in folders:
        spec = load_experiment(folder)
        build_text_config(math_defaults(), spec.training_params, str(spec.training_params_path))
        peft_config = build_peft_config(spec)
        assert (peft_config is None) == (spec.method == "full-finetuning"), folder


def test_a_folder_of_experiments_is_not_taken_for_full_finetuning():
    with pytest.raises(ConfigError) as error:
        load_experiment(FIXTURES / "experiments" / "lora")
    assert "not an experiment folder" in str(error.value) and "llama-3.2-3B-rank32" in str(error.value)


def _within_deadline(function, deadline_s: float = SAFETY_NET_S):
    """`function()`'s outcome (its value or the exception it raised), failing if it has not finished within the
    deadline: a safety net for a read that would wait for ever (a FIFO with no writer)."""
    import threading

    outcome: list = []

    def call() -> None:
        try:
            outcome.append(function())
        except BaseException as error:  # noqa: BLE001 - handed to the test
            outcome.append(error)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(deadline_s)
    assert outcome, f"still reading after {deadline_s:.0f} s: the read waits for ever"
    return outcome[0]


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_a_config_or_result_that_is_not_a_regular_file_is_refused_not_read(tmp_path, kind):
    import os

    from peftbench.results.reader import read_result_file

    experiment = tmp_path / "lora" / "bad"
    shutil.copytree(FIXTURES / "experiments/lora/llama-3.2-3B-rank32", experiment)
    targets = [experiment / "training_params.json", tmp_path / "result.json"]
    for target in targets:
        target.unlink(missing_ok=True)
        if kind == "fifo":
            os.mkfifo(target)
        else:
            target.symlink_to("/dev/zero")
    error = _within_deadline(lambda: load_experiment(experiment))
    assert isinstance(error, ConfigError) and "training_params.json" in str(error) and "not a regular file" in str(error)
    read = _within_deadline(lambda: read_result_file(tmp_path / "result.json"))
    assert read.result is None and "not a regular file" in read.error
    # convert's provenance lookup reads the result beside a checkpoint folder the same way
    from peftbench.conversion.source import training_result_of

    (tmp_path / "checkpoints" / "result").mkdir(parents=True)
    assert _within_deadline(lambda: training_result_of(tmp_path / "checkpoints" / "result")) is None


def test_a_result_file_over_the_limit_is_not_read(tmp_path, monkeypatch):
    from peftbench import config
    from peftbench.results.reader import read_result_file

    path = tmp_path / "result.json"
    path.write_text(json.dumps({"run_info": {}, "train_info": {}, "padding": "x" * 2000}))
    monkeypatch.setattr(config.read_untrusted_text, "__defaults__", (1000,))
    assert "larger than" in read_result_file(path).error


def test_trust_remote_code_needs_the_users_own_command_line(tmp_path):
    """A training_params.json (or a task file) someone sent must not run a model repository's code."""
    experiment = tmp_path / "lora" / "remote"
    shutil.copytree(FIXTURES / "experiments/lora/llama-3.2-3B-rank32", experiment)
    (experiment / "training_params.json").write_text(json.dumps({"trust_remote_code": True}))
    spec = load_experiment(experiment)
    source = str(spec.training_params_path)
    with pytest.raises(ConfigError) as error:
        build_text_config(math_defaults(), spec.training_params, source)
    assert source in str(error.value) and "--set trust_remote_code=true" in str(error.value)
    with pytest.raises(ConfigError, match="the task's defaults"):
        build_text_config({**math_defaults(), "trust_remote_code": True})
    asked = build_text_config(math_defaults(), spec.training_params, source, overrides={"trust_remote_code": True})
    assert asked.trust_remote_code is True
