"""The `image-gen` task end to end on tiny random stand-ins in the real classes (tests/image_standins.py):
train, valid, test, drift, the result file field by field, the saved images; PEFT's own experiment folders
through `peftbench run --task image-gen`; bad input that must fail before training."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from peftbench.cli import app
from peftbench.config import ConfigError
from peftbench.results.reader import read_result_file
from peftbench.run.engine import execute
from peftbench.run.plan import plan_run
from peftbench.run.request import RunRequest
from peftbench.tasks.image_gen.data import split_indices

from conftest import copy_image_experiment as copy_experiment

CONFIGS = Path(__file__).parent / "fixtures" / "peft-image-gen-configs"
PEFT_DEFAULTS = json.loads((CONFIGS / "default_training_params.json").read_text())
# PEFT's documented split of its 20 photos (../shared/notes/peft-image-gen-benchmark.md)
PEFT_SPLIT = ([18, 1, 19, 8, 10, 17, 6, 13, 4, 2, 5, 14, 9, 7], [16, 11], [3, 0, 15, 12])


def test_the_split_is_peft_s():
    train, valid, test = split_indices(20, 2, 4)
    assert (train.tolist(), valid.tolist(), test.tolist()) == PEFT_SPLIT


def test_result_file_has_peft_s_image_layout(image_lora_run, image_standins):
    path, result = image_lora_run
    run_info, train_info, own = result["run_info"], result["train_info"], result["peftbench"]
    assert run_info["experiment_name"] == "lora/flux2-klein-default"
    # train_config: PEFT's keys, with its defaults where the run did not override them
    config = run_info["train_config"]
    assert set(PEFT_DEFAULTS) <= set(config)
    assert config["instance_prompts"] == PEFT_DEFAULTS["instance_prompts"]
    assert config["optimizer_kwargs"] == {"lr": 1e-4, "weight_decay": 1e-4} and config["lr_scheduler"] is None
    assert config["resolution"] == 32 and config["use_gc"] is True
    assert "query_template" not in config and "generation_kwargs" not in config  # no text parameter leaks in
    assert run_info["peft_config"]["peft_type"] == "LORA"
    # metrics: a valid entry every eval_steps, then the final entry with test similarity and drift
    metrics = train_info["metrics"]
    assert [m["step"] for m in metrics] == [2, 4, 4]
    for entry in metrics[:-1]:
        assert {"valid dino_similarity", "train loss", "train samples", "train time", "eval time"} <= set(entry)
        assert -1 <= entry["valid dino_similarity"] <= 1
    final = metrics[-1]
    assert {"test dino_similarity", "drift", "train loss", "train samples"} <= set(final)
    assert final["train samples"] == 4 * 2  # max_steps x PEFT's batch_size
    assert -1 <= final["test dino_similarity"] <= 1
    assert 0 <= final["drift"] <= 1
    assert train_info["status"] == "success" and train_info["num_trainable_params"] > 0
    assert train_info["num_total_params"] > train_info["num_trainable_params"]
    assert train_info["file_size"] == own["checkpoint_size_bytes"] > 0
    # memory as PEFT: training only (the CPU's process-level figure here); times: PEFT's and peftbench's
    assert train_info["accelerator_memory_max"] == own["peak_memory_train_bytes"]
    assert train_info["train_time"] > own["train_time_s"] > 0  # PEFT's includes caching and the final evaluation
    # the task's outputs, named in the file for the reader
    assert own["score_name"] == "dino_similarity" and own["higher_is_better"] is True
    assert "drift" in final and own["forgetting_higher_is_better"] is False  # the forgetting measure is drift
    assert own["throughput_unit"] == "images/s" and own["tokens_per_second"] is None
    assert own["throughput"] == pytest.approx(8 / own["train_time_s"])
    assert own["test_score"] == final["test dino_similarity"] and own["forgetting"] == final["drift"]
    assert own["optimizer"]["type"] == "AdamW" and own["optimizer"]["settings"]["weight_decay"] == 1e-4


def test_result_file_has_peft_s_provenance_and_memory_fields(image_lora_run):
    from importlib.metadata import version

    from peftbench.results.writer import package_checkout

    path, result = image_lora_run
    run_info, train_info = result["run_info"], result["train_info"]
    assert (run_info["peft_branch"], run_info["peft_worktree_is_dirty"]) == package_checkout("peft")
    assert isinstance(run_info["peft_branch"], str) and isinstance(run_info["peft_worktree_is_dirty"], bool)
    assert result["meta_info"]["package_info"]["diffusers-version"] == version("diffusers")
    # PEFT's per-validation memory: means over the steps since the last validation (allocator bytes: none on a CPU)
    windows = train_info["metrics"][:-1]
    for entry in windows:
        assert entry["mem allocated avg"] is None and entry["mem reserved avg"] >= 0
    # two windows of eval_steps steps cover the run: their means' mean is the run's (PEFT's reserved average)
    run_mean = sum(entry["mem reserved avg"] for entry in windows) / len(windows)
    assert int(run_mean) == pytest.approx(train_info["accelerator_memory_reserved_avg"], abs=1)


def test_run_saves_test_images_drift_pairs_and_samples(image_lora_run, image_standins):
    from PIL import Image

    path, result = image_lora_run
    images = result["peftbench"]["images"]
    folder = Path(path).parent
    test_prompts = [PEFT_DEFAULTS["instance_prompts"][i] for i in PEFT_SPLIT[2]]
    assert [item["prompt"] for item in images["test"]] == test_prompts
    for item in images["test"]:
        assert len(item["images"]) == 3 == len(item["similarity"])  # PEFT's 3 repeats per test prompt
        for name in [item["reference"], *item["images"]]:
            assert Image.open(folder / name).size[0] > 0
        assert Image.open(folder / item["images"][0]).size == (32, 32)
    drift = images["drift"]
    assert [pair["prompt"] for pair in drift] == image_standins["drift_image_prompts"]
    for pair in drift:
        base, adapter = Image.open(folder / pair["base"]), Image.open(folder / pair["adapter"])
        assert base.size == adapter.size == (32, 32)
    # drift is PEFT's: (1 - mean cosine of the pairs) / 2
    mean_cosine = sum(pair["similarity"] for pair in drift) / len(drift)
    assert result["peftbench"]["forgetting"] == pytest.approx((1 - mean_cosine) / 2)
    assert [s["prompt"] for s in images["samples"]] == image_standins["sample_image_prompts"]


def test_sample_images_come_from_one_generator_seeded_seed_plus_100000(tmp_path, monkeypatch):
    """PEFT's samples: one generator seeded seed + 100000, running on from prompt to prompt (not re-seeded)."""
    from contextlib import nullcontext
    from types import SimpleNamespace

    import torch
    from PIL import Image

    from peftbench.tasks.image_gen import generation
    from peftbench.tasks.image_gen.task import ImageGenTask

    noise_per_prompt = []

    def generate_drawing_noise(pipeline, parts, prompts, generator, config):
        noise_per_prompt.append(torch.randn(8, generator=generator))  # what the pipeline's latents would draw
        return [Image.new("RGB", (4, 4))]

    monkeypatch.setattr(generation, "generate", generate_drawing_noise)
    monkeypatch.setattr(generation, "pipeline_with", lambda parts, model: nullcontext())
    task = ImageGenTask()
    task.artifacts_dir = tmp_path / "artifacts" / "run"
    config = SimpleNamespace(seed=7, sample_image_prompts=["a photo of sks cat", "sks cat at the beach", "a dog"])
    fields = task.after_run(torch.nn.Linear(1, 1), SimpleNamespace(device=torch.device("cpu")), config)

    one_generator = torch.Generator().manual_seed(7 + 100_000)
    expected = [torch.randn(8, generator=one_generator) for _ in config.sample_image_prompts]
    assert len(noise_per_prompt) == 3
    assert all(torch.equal(drawn, wanted) for drawn, wanted in zip(noise_per_prompt, expected))
    assert [s["prompt"] for s in fields["images"]["samples"]] == config.sample_image_prompts


def run_experiment(name: str, image_standins: dict, tmp_path: Path) -> tuple[Path, dict]:
    """One of PEFT's experiment folders run by image-gen on the stand-ins: (result file, its content)."""
    experiment = copy_experiment(name, tmp_path / "experiments")
    path, status = execute(RunRequest(task="image-gen", results_dir=str(tmp_path / "results"),
                                      experiment_dir=str(experiment), overrides=dict(image_standins),
                                      show_progress=False))
    result = json.loads(Path(path).read_text())
    assert status == "success", result["peftbench"]["error_msg"]
    return Path(path), result


def test_the_peft_layout_times_mean_what_peft_s_image_script_measures(image_standins, tmp_path, monkeypatch):
    """PEFT's image-gen run.py: train_time runs from before the caches to after the test and drift, minus the
    validations (its data loads before); total_time leaves out the sample images (made after it stops); a
    validation's "train time" sums its steps' durations and its "elapsed time" counts from before the caches.
    Phases made to last at least some seconds show which side of each definition they fall on."""
    import time as time_module

    from peftbench.runners.progress import ProgressFile
    from peftbench.tasks.image_gen.task import ImageGenTask

    pause, caching_pause = 0.3, 1.5
    for cls, method, seconds in ((ImageGenTask, "load_data", pause), (ImageGenTask, "after_run", pause),
                                 (ImageGenTask, "before_training", caching_pause),
                                 (ProgressFile, "update", pause)):  # update: between steps, outside their durations
        original = getattr(cls, method)

        def paused(*args, _original=original, _seconds=seconds, **kwargs):
            time_module.sleep(_seconds)
            return _original(*args, **kwargs)

        monkeypatch.setattr(cls, method, paused)
    path, result = run_experiment("lora/flux2-klein-default", image_standins, tmp_path)
    own, phases = result["peftbench"], result["peftbench"]["time_by_phase_s"]
    assert min(phases["data"], phases["output"]) >= pause and phases["prepare"] >= caching_pause
    assert phases["checks"] > 0
    assert result["train_info"]["train_time"] == pytest.approx(phases["prepare"] + phases["train"] + phases["test"])
    assert result["run_info"]["total_time"] == pytest.approx(
        own["total_time_s"] - phases["checks"] - phases["output"])
    assert own["train_time_s"] == phases["train"] and own["eval_time_s"] == pytest.approx(phases["valid"] + phases["test"])
    # each step reports its progress (a pause) after its duration ends
    first, second = result["train_info"]["metrics"][:2]
    assert first["elapsed time"] >= phases["prepare"] + first["train time"] + first["eval time"] + 2 * pause
    assert second["elapsed time"] - first["elapsed time"] >= second["train time"] + second["eval time"] + 2 * pause


def test_full_finetuning_has_no_drift(image_standins, tmp_path):
    path, result = run_experiment("full-finetuning/flux2-klein-default", image_standins, tmp_path)
    final = result["train_info"]["metrics"][-1]
    assert math.isnan(final["drift"]) and '"drift": NaN' in Path(path).read_text()  # PEFT's: no adapter to switch off
    assert result["peftbench"]["forgetting"] is None  # peftbench's own section: strict JSON
    read = read_result_file(path)
    assert not read.problems and read.result.forgetting is None
    assert result["run_info"]["peft_config"] is None
    assert result["train_info"]["num_trainable_params"] == result["train_info"]["num_total_params"]
    # its training_params.json sets max_steps 300 and lr 5e-5; the stand-in run's --set max_steps wins
    assert result["run_info"]["train_config"]["optimizer_kwargs"] == {"lr": 5e-05, "weight_decay": 0.01}
    assert "drift" not in result["peftbench"]["images"] and len(result["peftbench"]["images"]["test"]) == 4


def test_peft_s_oft_and_lora_folders_run_with_task_image_gen(image_standins, tmp_path):
    experiments = tmp_path / "experiments"
    folders = [copy_experiment(name, experiments) for name in ("oft/flux2-klein-default", "lora/flux2-klein-default")]
    options = []
    for key, value in image_standins.items():
        options += ["--set", f"{key}={json.dumps(value)}"]
    results = tmp_path / "results"
    outcome = CliRunner().invoke(app, ["run", *map(str, folders), "--task", "image-gen", "--results", str(results),
                                       *options])
    assert outcome.exit_code == 0, outcome.output
    for stem, peft_type in (("oft--flux2-klein-default", "OFT"), ("lora--flux2-klein-default", "LORA")):
        result = json.loads((results / f"{stem}.json").read_text())
        assert result["peftbench"]["status"] == "success", result["peftbench"]["error_msg"]
        assert result["run_info"]["peft_config"]["peft_type"] == peft_type
        assert result["peftbench"]["task"] == "image-gen"
        assert "test dino_similarity" in result["train_info"]["metrics"][-1]
        assert (results / "checkpoints" / stem / "adapter_model.safetensors").exists()


# ---- bad input fails before training, naming the file and the key ----
def bad_request(image_standins, tmp_path, **overrides) -> RunRequest:
    experiment = copy_experiment("lora/flux2-klein-default", tmp_path / "experiments")
    return RunRequest(task="image-gen", results_dir=str(tmp_path / "results"), experiment_dir=str(experiment),
                      overrides={**image_standins, **overrides}, show_progress=False)


def test_a_dataset_whose_rows_do_not_match_its_prompts_fails_before_training(image_standins, tmp_path):
    from image_standins import build_dataset

    build_dataset(tmp_path / "short", 19)
    with pytest.raises(ConfigError) as error:
        plan_run(bad_request(image_standins, tmp_path, dataset_id=str(tmp_path / "short")))
    message = str(error.value)
    assert "19 rows" in message and "20 captions" in message and "instance_prompts" in message
    assert str(tmp_path / "short") in message


def test_an_undecodable_image_fails_before_training(image_standins, tmp_path):
    from image_standins import build_dataset

    build_dataset(tmp_path / "broken", 20, broken_row=7)
    with pytest.raises(ConfigError) as error:
        plan_run(bad_request(image_standins, tmp_path, dataset_id=str(tmp_path / "broken")))
    message = str(error.value)
    assert "row 7" in message and "'dataset_id'" in message and str(tmp_path / "broken") in message


def test_a_similarity_model_that_is_no_vision_model_fails_before_training(image_standins, tmp_path):
    text_encoder = Path(image_standins["model_id"]) / "text_encoder"
    with pytest.raises(ConfigError) as error:
        plan_run(bad_request(image_standins, tmp_path, dino_model_id=str(text_encoder)))
    message = str(error.value)
    assert "'dino_model_id'" in message and "qwen3" in message and "not a vision model" in message
    assert "--set" in message  # where the value came from


def test_a_missing_dataset_folder_fails_before_training(image_standins, tmp_path):
    with pytest.raises(ConfigError) as error:
        plan_run(bad_request(image_standins, tmp_path, dataset_id=str(tmp_path / "nowhere")))
    assert "'dataset_id'" in str(error.value) and str(tmp_path / "nowhere") in str(error.value)


def test_bf16_as_peft_runs_it_keeps_the_adapter_in_fp32(image_standins, tmp_path):
    from safetensors import safe_open

    experiment = copy_experiment("lora/flux2-klein-default", tmp_path / "experiments")
    path, status = execute(RunRequest(task="image-gen", results_dir=str(tmp_path / "results"), experiment_dir=str(experiment),
                                      overrides={**image_standins, "dtype": "bfloat16"}, show_progress=False))
    result = json.loads(Path(path).read_text())
    assert status == "success", result["peftbench"]["error_msg"]
    assert result["peftbench"]["precision"] == "bf16"
    assert 0 <= result["train_info"]["metrics"][-1]["drift"] <= 1
    weights = tmp_path / "results" / "checkpoints" / "lora--flux2-klein-default" / "adapter_model.safetensors"
    with safe_open(weights, "pt") as saved:  # autocast_adapter_dtype: adapter weights in fp32 on a bf16 model
        assert {str(saved.get_tensor(key).dtype) for key in saved.keys()} == {"torch.float32"}


def test_gradient_checkpointing_goes_through_diffusers_own_api(image_standins):
    import torch
    from diffusers import Flux2Transformer2DModel

    from peftbench.training.methods import enable_gradient_checkpointing

    transformer = Flux2Transformer2DModel.from_pretrained(image_standins["model_id"], subfolder="transformer")
    assert not transformer.is_gradient_checkpointing
    enable_gradient_checkpointing(transformer)
    assert transformer.is_gradient_checkpointing
    with pytest.raises(ConfigError, match="use_gc: Linear has no gradient-checkpointing API"):
        enable_gradient_checkpointing(torch.nn.Linear(2, 2))
