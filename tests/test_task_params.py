"""Task-declared parameters: every PEFT config (MetaMathQA and image-gen, shipped as fixtures) loads unchanged
under its task; unknown keys are errors naming the file and the closest valid key of that task; values are
checked against their declared types; the engine's shared config holds no task's field."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from peftbench.config import ConfigError, TrainConfig, describe_params, parse_set_options
from peftbench.experiments import build_peft_config, discover_experiments, load_experiment
from peftbench.tasks import available_tasks, get_task
from peftbench.tasks.image_gen.config import ImageGenConfig
from peftbench.tasks.image_gen.task import ImageGenTask
from peftbench.tasks.text_config import TextTrainConfig

FIXTURES = Path(__file__).parent / "fixtures"
IMAGE_CONFIGS = FIXTURES / "peft-image-gen-configs"


def all_config_classes() -> set[type]:
    return {get_task(name).config_class for name in available_tasks()}
MATH_CONFIGS = FIXTURES / "peft-metamathqa-configs"


def test_every_peft_image_gen_config_loads_unchanged():
    task = get_task("image-gen")
    folders = discover_experiments(IMAGE_CONFIGS / "experiments")
    assert len(folders) == 33  # every folder of ../shared/peft-method-comparison/image-gen/experiments
    for folder in folders:
        spec = load_experiment(folder)
        config = task.build_config(spec.training_params, str(spec.training_params_path))
        assert isinstance(config, ImageGenConfig)
        assert (build_peft_config(spec) is None) == (spec.method == "full-finetuning"), folder


def test_every_peft_metamathqa_config_loads_unchanged():
    task = get_task("math")
    folders = discover_experiments(MATH_CONFIGS)
    assert len(folders) >= 70
    with_params = 0
    for folder in folders:
        spec = load_experiment(folder)
        with_params += bool(spec.training_params)
        config = task.build_config(spec.training_params, str(spec.training_params_path))
        assert isinstance(config, TextTrainConfig)
        build_peft_config(spec)
    assert with_params >= 10  # the folders' training_params.json are shipped too


def test_image_defaults_are_peft_s_file_and_a_subclass_reads_another():
    peft_defaults = json.loads((IMAGE_CONFIGS / "default_training_params.json").read_text())
    assert ImageGenTask().default_params() == peft_defaults
    config = ImageGenTask().build_config()
    assert {key: getattr(config, key) for key in peft_defaults} == peft_defaults


def test_a_task_with_its_own_defaults_file_finds_the_folders_beside_it(tmp_path):
    peft_defaults = json.loads((IMAGE_CONFIGS / "default_training_params.json").read_text())
    local = {**peft_defaults, "model_id": "./generator", "dataset_id": "./concept", "resolution": 64}
    (tmp_path / "default_training_params.json").write_text(json.dumps(local))

    class OtherImages(ImageGenTask):  # what image-tiny is: the same task, another defaults file
        name = "other-images"
        defaults_file = tmp_path / "default_training_params.json"

    config = OtherImages().build_config()
    assert config.model_id == str(tmp_path / "generator") and config.dataset_id == str(tmp_path / "concept")
    assert config.dino_model_id == "facebook/dinov2-base" and config.resolution == 64


def test_peft_s_shallow_merge_of_optimizer_kwargs_is_kept_for_image_gen():
    task = get_task("image-gen")
    spec = load_experiment(IMAGE_CONFIGS / "experiments" / "ia3" / "flux2-klein-default")
    config = task.build_config(spec.training_params, str(spec.training_params_path))
    assert config.optimizer_kwargs == {"lr": 1e-3}  # weight_decay 1e-4 dropped: AdamW's default applies, as in PEFT
    # --set stays key by key: it changes one entry
    config = task.build_config(spec.training_params, "x", overrides=parse_set_options(["optimizer_kwargs.weight_decay=0"]))
    assert config.optimizer_kwargs == {"lr": 1e-3, "weight_decay": 0}
    # the text tasks merge key by key, as documented for them
    assert get_task("math").build_config({"optimizer_kwargs": {"lr": 5e-4}}).optimizer_kwargs == {
        "lr": 5e-4, "weight_decay": 0.1}


def test_unknown_keys_name_the_file_and_the_closest_key_of_the_task(tmp_path):
    folder = tmp_path / "lora" / "typo"
    shutil.copytree(IMAGE_CONFIGS / "experiments" / "lora" / "flux2-klein-default", folder)
    (folder / "training_params.json").write_text(json.dumps({"resolutoin": 256}))
    spec = load_experiment(folder)
    with pytest.raises(ConfigError) as error:  # by the task's config, which names the file
        get_task("image-gen").build_config(spec.training_params, str(spec.training_params_path))
    assert str(folder / "training_params.json") in str(error.value) and "Did you mean 'resolution'" in str(error.value)
    # a text task's key is not an image-gen key, and the reverse
    with pytest.raises(ConfigError, match="unknown training parameter 'query_template' in --set"):
        get_task("image-gen").build_config(overrides={"query_template": "{query}"})
    with pytest.raises(ConfigError, match="unknown training parameter 'resolution' in training_params.json"):
        get_task("math").build_config({"resolution": 256})
    with pytest.raises(ConfigError, match="Did you mean 'max_steps'"):
        get_task("image-gen").build_config(overrides=parse_set_options(["max_step=3"]))


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("resolution", "big", "'resolution': 'big' (must be an integer)"),
    ("instance_prompts", "one caption", "must be a list of strings"),
    ("text_encoder_out_layers", [1.5], "must be a list of integers"),
    ("guidance_scale", True, "must be a number"),
    ("weighting_scheme", "cosine", "valid: none, sigma_sqrt, logit_normal, mode"),
])
def test_image_values_are_checked_against_their_declared_types(key, value, expected):
    with pytest.raises(ConfigError) as error:
        get_task("image-gen").build_config(overrides={key: value})
    assert expected in str(error.value) and "from --set" in str(error.value)


def test_the_shared_config_holds_no_task_s_field():
    shared = {f.name for f in dataclasses.fields(TrainConfig)}
    for config_class in all_config_classes():
        own = {f.name for f in dataclasses.fields(config_class)} - shared
        assert own and not own & shared
    assert not {"query_template", "generation_kwargs", "max_seq_length", "resolution", "dino_model_id"} & shared


def test_every_parameter_has_a_help_line_and_a_type():
    for config_class in all_config_classes():
        for described in describe_params(config_class):
            assert described["help"] and described["type"], (config_class.__name__, described["name"])


def test_image_gen_builds_the_train_config_peft_recorded_in_its_published_results():
    """PEFT's own record of each run's merged config (run_info.train_config) is what image-gen builds from the same
    experiment folder: the shallow merge of ia3's `{"lr": 1e-3}` included."""
    task = get_task("image-gen")
    published = sorted((FIXTURES / "results" / "peft-image-gen").glob("*.json"))
    assert len(published) == 5
    for path in published:
        recorded = json.loads(path.read_text())["run_info"]["train_config"]
        spec = load_experiment(IMAGE_CONFIGS / "experiments" / recorded_name(path))
        built = task.build_config(spec.training_params, str(spec.training_params_path)).to_dict()
        assert {key: built[key] for key in recorded} == recorded, path.name


def recorded_name(path: Path) -> str:
    return path.stem.replace("--", "/")


def test_list_params_shows_each_task_s_own_parameters():
    from typer.testing import CliRunner

    from peftbench.cli import app

    runner = CliRunner()
    image = runner.invoke(app, ["list", "--params", "image-gen"], env={"COLUMNS": "200"})
    assert image.exit_code == 0, image.output
    assert "dino_model_id" in image.output and '"facebook/dinov2-base"' in image.output
    assert "query_template" not in image.output
    text = runner.invoke(app, ["list", "--params", "math"], env={"COLUMNS": "200"})
    assert "query_template" in text.output and "dino_model_id" not in text.output
    bad = runner.invoke(app, ["list", "--params", "nope"])
    assert bad.exit_code == 2 and "unknown task 'nope'" in bad.output
