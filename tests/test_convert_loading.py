"""Loading for conversion and evaluation: the base model as the training run loaded it, the adapter all or nothing,
and a fidelity check that can fail."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from peftbench.adapter_loading import AdapterLoadError, load_adapter_strictly
from peftbench.cli import app
from peftbench.conversion import AdapterFolderError, ConversionFailed, RankSpec, convert_adapter_dir
from peftbench.conversion.coverage import METHOD_CASES, build_adapted_model, make_config, tiny_llama
from peftbench.conversion.fidelity import check_fidelity
from peftbench.conversion.report import ConversionReport
from peftbench.conversion.source import base_model_loader, read_adapter_config

warnings.filterwarnings("ignore", category=UserWarning)

WEIGHTS = "adapter_model.safetensors"


def _case(name):
    return next(case for case in METHOD_CASES if case.name == name)


def _saved(tmp_path: Path, case_name: str, task_type: str | None = None) -> tuple[Path, Path]:
    """(base model folder, adapter folder) of `case_name`'s perturbed adapter on the tiny model."""
    from peft import get_peft_model

    base_dir, adapter_dir = tmp_path / "base", tmp_path / case_name
    if not base_dir.exists():
        tiny_llama().save_pretrained(base_dir)
    config = make_config(_case(case_name))
    config.task_type = task_type
    _, model, _ = build_adapted_model(_case(case_name))
    adapted = get_peft_model(tiny_llama(), config)
    adapted.load_state_dict(model.state_dict(), strict=False)  # the perturbed weights, under the wanted task_type
    adapted.save_pretrained(adapter_dir)
    return base_dir, adapter_dir


def _convert(*args):
    return CliRunner().invoke(app, ["convert", *map(str, args)])


# ---------------------------------------------------------------- the strict loader
@pytest.mark.parametrize(
    "case_name",
    ["lora-modules-to-save", "vblora", "tinylora", "unilora", "lora-bias", "prompt-tuning", "prefix-tuning",
     "trainable-tokens", "oft"],
)
def test_a_complete_checkpoint_loads_strictly(tmp_path, case_name):
    fresh_base, model, _ = build_adapted_model(_case(case_name))
    model.save_pretrained(tmp_path / "adapter")
    loaded = load_adapter_strictly(fresh_base(), tmp_path / "adapter")
    input_ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=input_ids).logits, model(input_ids=input_ids).logits, atol=1e-5)


def test_the_bare_model_or_a_partial_checkpoint_is_an_error(tmp_path):
    from transformers import AutoModel, AutoModelForCausalLM

    base_dir, adapter_dir = _saved(tmp_path, "ia3")
    # the bare model (AutoModel: what a loader that ignores the task picks): no language-model head, no key matches
    with pytest.raises(AdapterLoadError, match=r"\(LlamaModel\).*6 adapter weights of the model are not in the "
                       r"checkpoint.*6 checkpoint weights have no place in the model"):
        load_adapter_strictly(AutoModel.from_pretrained(base_dir), adapter_dir)

    weights = load_file(adapter_dir / WEIGHTS)
    dropped = sorted(weights)[0]
    save_file({key: value for key, value in weights.items() if key != dropped}, adapter_dir / WEIGHTS)
    missing_one = f"1 adapter weights of the model are not in the checkpoint \\({dropped}\\)"
    with pytest.raises(AdapterLoadError, match=missing_one):
        load_adapter_strictly(AutoModelForCausalLM.from_pretrained(base_dir), adapter_dir)

    # more weights than the config builds: the config names fewer target modules than were trained
    save_file(weights, adapter_dir / WEIGHTS)
    config_file = adapter_dir / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["target_modules"], config["feedforward_modules"] = ["q_proj"], []
    config_file.write_text(json.dumps(config))
    with pytest.raises(AdapterLoadError, match="4 checkpoint weights have no place in the model"):
        load_adapter_strictly(AutoModelForCausalLM.from_pretrained(base_dir), adapter_dir)
    result = _convert(adapter_dir, "--out", tmp_path / "out", "--rank", "full", "--base-model", base_dir)
    assert result.exit_code == 2 and "have no place in the model" in result.output
    assert not (tmp_path / "out").exists()


def test_evaluate_mode_records_a_partial_checkpoint_as_failed(tmp_path, tiny_model_dir, math_fixture_params):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from peftbench.run.engine import execute
    from peftbench.run.request import RunRequest

    adapter_dir = tmp_path / "adapter"
    lora_config = LoraConfig(r=2, target_modules=["q_proj"])
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), lora_config)
    model.save_pretrained(adapter_dir)
    weights = load_file(adapter_dir / WEIGHTS)
    save_file({key: value for key, value in weights.items() if "layers.1." not in key}, adapter_dir / WEIGHTS)
    result_file, status = execute(
        RunRequest(task="math", results_dir=str(tmp_path / "results"), mode="evaluate", adapter_dir=str(adapter_dir),
                   overrides=math_fixture_params, show_progress=False)
    )
    assert status == "failed"
    error = json.loads(result_file.read_text())["peftbench"]["error_msg"]
    assert "2 adapter weights of the model are not in the checkpoint" in error and "layers.1.self_attn.q_proj" in error


# ---------------------------------------------------------------- which class loads the base model
def test_base_model_class_comes_from_provenance_never_from_task_type(tmp_path):
    base_dir, adapter_dir = _saved(tmp_path, "ia3")
    config = read_adapter_config(adapter_dir)
    assert config["task_type"] is None
    # peft records the class it wrapped when task_type is null
    loader = base_model_loader(adapter_dir, config, str(base_dir))
    assert (loader.model_class, loader.task) == ("LlamaForCausalLM", None) and "auto_mapping" in loader.source
    # without that record: the architectures of the base model's config.json
    del config["auto_mapping"]
    loader = base_model_loader(adapter_dir, config, str(base_dir))
    assert loader.model_class == "LlamaForCausalLM" and "architectures" in loader.source
    assert type(loader.load()).__name__ == "LlamaForCausalLM"
    # a peftbench checkpoint: the task of the result file beside it, whose load_model the run used
    checkpoint = tmp_path / "results" / "checkpoints" / "ia3--tiny"
    checkpoint.parent.mkdir(parents=True)
    adapter_dir.rename(checkpoint)
    result_file = tmp_path / "results" / "ia3--tiny.json"
    result_file.write_text(json.dumps({"peftbench": {"task": "math-tiny"}}))
    loader = base_model_loader(checkpoint, config, str(base_dir))
    assert loader.task == "math-tiny" and str(result_file) in loader.source
    assert type(loader.load()).__name__ == "LlamaForCausalLM"
    # an untrusted result file that names no known task is no provenance
    result_file.write_text(json.dumps({"peftbench": {"task": "../../etc"}}))
    assert base_model_loader(checkpoint, config, str(base_dir)).task is None


def test_a_base_model_without_architectures_is_an_error_naming_config_json(tmp_path):
    base_dir, adapter_dir = _saved(tmp_path, "ia3")
    model_config_file = base_dir / "config.json"
    model_config = json.loads(model_config_file.read_text())
    model_config["architectures"] = None
    model_config_file.write_text(json.dumps(model_config))
    config = read_adapter_config(adapter_dir)
    del config["auto_mapping"]
    with pytest.raises(AdapterFolderError, match="config.json: 'architectures' is \\[\\]"):
        base_model_loader(adapter_dir, config, str(base_dir))


# ---------------------------------------------------------------- the fidelity check can fail
def test_null_task_type_checkpoint_converts_with_its_effect_measured(tmp_path):
    base_dir, adapter_dir = _saved(tmp_path, "oft")
    report = convert_adapter_dir(adapter_dir, tmp_path / "lora", RankSpec(), base_model=str(base_dir))
    assert report.base_model_loaded_as.startswith("LlamaForCausalLM")
    assert report.adapter_logits_effect > 1e-2
    assert report.weight_change_view_error < 1e-5 and report.max_logits_relative_error < 1e-5


def test_an_adapter_at_its_no_op_initialisation_is_refused(tmp_path):
    from peft import get_peft_model

    base_dir = tmp_path / "base"
    tiny_llama().save_pretrained(base_dir)
    config = make_config(_case("ia3"))
    config.task_type = None
    get_peft_model(tiny_llama(), config).save_pretrained(tmp_path / "untrained")
    result = _convert(tmp_path / "untrained", "--out", tmp_path / "out", "--rank", "full", "--base-model", base_dir)
    assert result.exit_code == 2
    assert "changes none of its 6 layers' weights" in " ".join(result.output.split())
    assert not (tmp_path / "out").exists()


def test_a_view_that_disagrees_with_peft_fails_and_writes_nothing(tmp_path, monkeypatch):
    import peftbench.conversion.convert as convert_module

    base_dir, adapter_dir = _saved(tmp_path, "loha")
    read = convert_module.read_weight_change

    def half_of_the_change(*args, **kwargs):
        change = read(*args, **kwargs)
        change.delta_weight = change.delta_weight / 2
        return change

    monkeypatch.setattr(convert_module, "read_weight_change", half_of_the_change)
    result = _convert(adapter_dir, "--out", tmp_path / "out", "--rank", "full", "--base-model", base_dir)
    assert result.exit_code == 1
    assert "differs from plain peft's forward pass" in " ".join(result.output.split())
    assert not (tmp_path / "out").exists()


def _report(**measures) -> ConversionReport:
    report = ConversionReport("adapter", "OFT", "OFT", "base", "full", False, False, 8, 100)
    for key, value in measures.items():
        setattr(report, key, value)
    return report


def test_check_fidelity_bounds():
    check_fidelity(_report(adapter_logits_effect=0.1, weight_change_view_error=3e-7))
    with pytest.raises(ConversionFailed, match="moves the logits by 0 "):
        check_fidelity(_report(adapter_logits_effect=0.0, weight_change_view_error=0.0))
    with pytest.raises(ConversionFailed, match="differs from plain peft"):
        check_fidelity(_report(adapter_logits_effect=0.1, weight_change_view_error=2e-4))
    # a small adapter effect: the view must still get nine tenths of it right
    with pytest.raises(ConversionFailed, match="differs from plain peft"):
        check_fidelity(_report(adapter_logits_effect=1e-4, weight_change_view_error=2e-5))
    # a least-squares fit is approximate by design, and reported as such
    check_fidelity(_report(adapter_logits_effect=0.1, weight_change_view_error=2e-2, approximate=True))
