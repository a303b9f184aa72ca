"""`peftbench convert` as a user runs it: adapter folders in, a LoRA folder out that plain peft loads elsewhere."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings

import pytest
from typer.testing import CliRunner

from peftbench.cli import app
from peftbench.conversion import parse_rank_spec
from peftbench.conversion.coverage import METHOD_CASES, build_adapted_model
from waiting import SAFETY_NET_S

warnings.filterwarnings("ignore", category=UserWarning)


def _save_adapter(tmp_path, case_name):
    """Write the tiny base model and a perturbed adapter of `case_name` as save_pretrained folders."""
    case = next(case for case in METHOD_CASES if case.name == case_name)
    fresh_base, model, _ = build_adapted_model(case)
    base_dir, adapter_dir = tmp_path / "base", tmp_path / f"adapter-{case_name}"
    fresh_base().save_pretrained(base_dir)
    model.save_pretrained(adapter_dir)
    config_file = adapter_dir / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = str(base_dir)
    config_file.write_text(json.dumps(config))
    return base_dir, adapter_dir


def _convert(*args):
    return CliRunner().invoke(app, ["convert", *map(str, args)])


# Run in a fresh interpreter with nothing from peftbench: what a serving user does with the output.
LOAD_WITH_PLAIN_PEFT = textwrap.dedent(
    """
    import json, sys, torch
    from transformers import AutoModelForCausalLM
    from peft import PeftModel
    base_dir, pairs = sys.argv[1], sys.argv[2:]
    ids = torch.randint(0, 128, (3, 24), generator=torch.Generator().manual_seed(5))
    results = {}
    with torch.no_grad():
        for original_dir, lora_dir in zip(pairs[::2], pairs[1::2]):
            original = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), original_dir)
            converted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), lora_dir)
            reference = original.eval()(input_ids=ids).logits
            error = (converted.eval()(input_ids=ids).logits - reference).norm() / reference.norm()
            results[lora_dir] = {"error": float(error), "type": type(converted.base_model).__name__}
    print(json.dumps(results))
    """
)

ALL_LINEAR_MODULES = {
    f"model.layers.{index}.{block}.{name}"
    for index in range(2)
    for block, name in [
        ("self_attn", "q_proj"), ("self_attn", "k_proj"), ("self_attn", "v_proj"), ("self_attn", "o_proj"),
        ("mlp", "gate_proj"), ("mlp", "up_proj"), ("mlp", "down_proj"),
    ]
}


def test_oft_and_dora_convert_to_folders_that_plain_peft_loads_in_another_process(tmp_path):
    pairs = []
    for case_name in ("oft", "dora"):
        base_dir, adapter_dir = _save_adapter(tmp_path, case_name)
        out_dir = tmp_path / f"lora-{case_name}"
        result = _convert(adapter_dir, "--out", out_dir, "--rank", "full", "--json")
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["max_logits_relative_error"] <= 1e-4
        assert report["adapter_logits_effect"] > 1e-3
        assert {layer["module"] for layer in report["layers"]} == ALL_LINEAR_MODULES

        config = json.loads((out_dir / "adapter_config.json").read_text())
        assert config["peft_type"] == "LORA"
        assert config["use_dora"] is False and not config["modules_to_save"]
        assert set(config["target_modules"]) == ALL_LINEAR_MODULES
        assert (out_dir / "adapter_model.safetensors").is_file()
        pairs += [str(adapter_dir), str(out_dir)]

    completed = subprocess.run(
        [sys.executable, "-c", LOAD_WITH_PLAIN_PEFT, str(base_dir), *pairs],
        capture_output=True, text=True, timeout=SAFETY_NET_S, check=True,
    )
    loaded = json.loads(completed.stdout.strip().splitlines()[-1])
    assert set(loaded) == set(pairs[1::2])
    for outcome in loaded.values():
        assert outcome["type"] == "LoraModel"
        assert outcome["error"] <= 1e-4


def test_rank_8_table_and_no_overwrite(tmp_path):
    _, adapter_dir = _save_adapter(tmp_path, "loha")
    out_dir = tmp_path / "lora8"
    result = _convert(adapter_dir, "--out", out_dir, "--rank", "8", "--no-measure")
    assert result.exit_code == 0, result.output
    assert "energy" in result.stdout and "model.layers.1.mlp.down_proj" in result.stdout
    assert json.loads((out_dir / "adapter_config.json").read_text())["r"] == 8
    again = _convert(adapter_dir, "--out", out_dir, "--rank", "8", "--no-measure")
    assert again.exit_code == 2 and "--overwrite" in again.output


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("no_folder", "not a folder"),
        ("no_config", "adapter_config.json: missing"),
        ("bad_json", "adapter_config.json: not valid JSON"),
        ("bad_type", "key 'peft_type' is 'NOT_A_METHOD'"),
        ("no_weights", "adapter_model.safetensors: missing"),
        ("bad_weights", "adapter_model.safetensors: not a readable safetensors file"),
        ("prompt_tuning", "PROMPT_TUNING is a prompt-learning method"),
        ("xlora", "XLORA cannot be converted"),
        ("trainable_tokens", "'trainable_token_indices' trains embedding rows"),
    ],
)
def test_broken_or_unconvertible_folders_are_refused_naming_the_file(tmp_path, breakage, message):
    adapter_dir = tmp_path / "adapter"
    adapter_dir.mkdir()
    config = {"peft_type": "LORA", "r": 4, "target_modules": ["q_proj"], "base_model_name_or_path": "unused"}
    (adapter_dir / "adapter_model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    if breakage == "no_folder":
        adapter_dir = tmp_path / "nowhere"
    elif breakage == "bad_json":
        (adapter_dir / "adapter_config.json").write_text('{"peft_type": "LORA",')
    elif breakage == "bad_weights":
        (adapter_dir / "adapter_model.safetensors").write_bytes(b"garbage")
    elif breakage == "no_weights":
        (adapter_dir / "adapter_model.safetensors").unlink()
    if breakage not in ("no_config", "bad_json", "no_folder"):
        overrides = {
            "bad_type": {"peft_type": "NOT_A_METHOD"},
            "prompt_tuning": {"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 8},
            "xlora": {"peft_type": "XLORA"},
            "trainable_tokens": {"trainable_token_indices": [1, 2]},
        }
        (adapter_dir / "adapter_config.json").write_text(json.dumps({**config, **overrides.get(breakage, {})}))
    result = _convert(adapter_dir, "--out", tmp_path / "out", "--rank", "8")
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "out").exists()


def test_rank_spec_parsing():
    assert parse_rank_spec("8").fixed_rank == 8
    assert parse_rank_spec("0.9").energy_fraction == 0.9
    assert parse_rank_spec("1.0").energy_fraction == 1.0
    assert parse_rank_spec("full").is_full
    for bad in ("0", "1.5", "-3", "eight", "0.0"):
        with pytest.raises(ValueError, match="--rank"):
            parse_rank_spec(bad)


def test_evaluate_writes_a_converted_result_named_beside_the_original(tmp_path, monkeypatch):
    """--evaluate hands the converted folder to the engine (evaluate mode) with a `conversion` block.

    The engine's own tests cover evaluate mode itself (a child process on the task); here it is recorded.
    """
    calls = []

    def fake_run_request(request):
        calls.append(request)
        return request.result_file(), "success", False

    monkeypatch.setattr("peftbench.runners.isolated.run_request", fake_run_request)
    base_dir, adapter_dir = _save_adapter(tmp_path, "loha")
    checkpoint = adapter_dir.rename(tmp_path / "loha--rank4")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "loha--rank4.json").write_text("{}")
    result = _convert(
        checkpoint, "--out", tmp_path / "lora", "--rank", "0.9", "--json", "--no-measure",
        "--evaluate", "--task", "math-tiny", "-r", tmp_path / "results", "--set", "test_size=20",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["evaluation"]["status"] == "success"
    (call,) = calls
    assert call.mode == "evaluate" and call.adapter_dir == str(tmp_path / "lora") and call.task == "math-tiny"
    assert call.result_stem == "loha-as-lora--rank4-e0.9" and call.force and not call.save_checkpoint
    assert call.overrides == {"test_size": 20, "model_id": str(base_dir)}
    conversion = call.result_fields()["conversion"]
    assert conversion["source_result"] == str(tmp_path / "results" / "loha--rank4.json")
    assert conversion["source_peft_type"] == "LOHA" and conversion["rank"] == "energy 0.9"
    assert 0.9 <= conversion["energy_kept_min"] <= 1.0
    assert len(conversion["layer_ranks"]) == 14


def test_evaluate_needs_a_task(tmp_path):
    result = _convert(tmp_path, "--out", tmp_path / "out", "--rank", "8", "--evaluate")
    assert result.exit_code == 2 and "--evaluate needs --task" in result.output


def test_the_table_keeps_names_and_numbers_whole_and_shows_only_columns_that_differ():
    import io

    from rich.console import Console

    from peftbench.conversion.report import ConversionReport, LayerReport, render_table

    def layer(name, how, bias_changed=False):
        return LayerReport(module=name, rank=16, energy_kept=0.76, delta_relative_error=0.49, delta_norm=1.77,
                           bias_changed=bias_changed, how=how, nonlinearity=0.0)

    def shown(layers) -> str:
        report = ConversionReport(source_adapter="a", peft_type="OFT", method="OFT", base_model="b", rank_spec="16",
                                  vllm=False, approximate=False, lora_rank=16, lora_parameters=1, layers=layers)
        screen = io.StringIO()
        Console(file=screen, width=80).print(render_table(report))
        return screen.getvalue()

    long_name = "model.layers.27.self_attn.q_proj"
    uniform = shown([layer(long_name, "identity probe"), layer("model.layers.27.mlp.down_proj", "identity probe")])
    assert long_name in uniform and "0.7600" in uniform and "4.90e-01" in uniform
    assert "how" not in uniform.splitlines()[2] and "probe for every layer" in uniform and "no bias changed" in uniform
    mixed = shown([layer(long_name, "identity probe"), layer("lm_head", "least-squares fit", bias_changed=True)])
    header = next(line for line in mixed.splitlines() if "module" in line)
    assert "how" in header and "bias" in header and "changed" in mixed and "fit" in mixed
    assert "0.7600" in mixed and "4.90e-01" in mixed


def test_evaluate_reports_the_converted_score_beside_the_originals(tmp_path):
    from pathlib import Path

    from peftbench.cli.convert import _scores

    fixture = Path(__file__).parent / "fixtures" / "results" / "peftbench" / "lora--rank8--seed0.json"
    original = json.loads(fixture.read_text())
    (tmp_path / "original.json").write_text(json.dumps(original))
    converted = json.loads(fixture.read_text())
    converted["peftbench"]["test_score"] = 0.25
    converted["peftbench"]["conversion"] = {"source_result": str(tmp_path / "original.json")}
    (tmp_path / "converted.json").write_text(json.dumps(converted))
    assert _scores(tmp_path / "converted.json") == {
        "score_name": "accuracy", "test_score": 0.25, "source_test_score": original["peftbench"]["test_score"]}
    converted["peftbench"]["conversion"] = {"source_result": str(tmp_path / "gone.json")}
    (tmp_path / "converted.json").write_text(json.dumps(converted))
    assert _scores(tmp_path / "converted.json") == {"score_name": "accuracy", "test_score": 0.25}
    assert _scores(tmp_path / "missing.json") == {}


def _refuse_model_loading(monkeypatch):
    """A refusal must come before the conversion: loading the base model fails the test."""
    import peftbench.conversion.convert as convert_module

    def no_loading(*args, **kwargs):
        raise AssertionError("the base model was loaded before --out was checked")

    monkeypatch.setattr(convert_module, "base_model_loader", no_loading)


def _tree(folder):
    return {path.relative_to(folder): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.mark.parametrize("where", ["the source", "its parent", "inside it"])
def test_out_that_is_holds_or_is_inside_the_source_is_refused_before_converting(tmp_path, monkeypatch, where):
    """`convert R/checkpoints/lora--rank16 --out R --overwrite` once left R holding only the converted files."""
    results = tmp_path / "R"
    adapter_dir = results / "checkpoints" / "lora--rank16"
    adapter_dir.mkdir(parents=True)
    (adapter_dir / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    (adapter_dir / "adapter_model.safetensors").write_bytes(b"weights")
    (results / "lora--rank16.json").write_text("{}")
    before = _tree(results)
    out = {"the source": adapter_dir, "its parent": results, "inside it": adapter_dir / "lora8"}[where]
    _refuse_model_loading(monkeypatch)
    result = _convert(adapter_dir, "--out", out, "--rank", "8", "--overwrite")
    assert result.exit_code == 2, result.output
    assert f"--out {out}" in " ".join(result.output.split()) and "source adapter" in result.output
    assert _tree(results) == before


def test_out_naming_a_file_is_refused_before_converting(tmp_path, monkeypatch):
    _, adapter_dir = _save_adapter(tmp_path, "loha")
    out = tmp_path / "notes.txt"
    out.write_text("mine")
    _refuse_model_loading(monkeypatch)
    for extra in ([], ["--overwrite"]):
        result = _convert(adapter_dir, "--out", out, "--rank", "8", *extra)
        assert result.exit_code == 2, result.output
        assert "exists and is not a folder" in result.output and str(out) in " ".join(result.output.split())
    result = _convert(adapter_dir, "--out", out / "lora", "--rank", "8")
    assert result.exit_code == 2, result.output
    assert f"{out} is a file, not a folder" in " ".join(result.output.split())
    assert out.read_text() == "mine"


def test_overwrite_replaces_only_a_previous_conversion_output(tmp_path, monkeypatch):
    _, adapter_dir = _save_adapter(tmp_path, "loha")
    out_dir = tmp_path / "lora8"
    assert _convert(adapter_dir, "--out", out_dir, "--rank", "8", "--no-measure").exit_code == 0
    again = _convert(adapter_dir, "--out", out_dir, "--rank", "4", "--no-measure", "--overwrite")
    assert again.exit_code == 0, again.output
    assert json.loads((out_dir / "adapter_config.json").read_text())["r"] == 4

    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    (out_dir / "mine.txt").write_text("added by hand")
    _refuse_model_loading(monkeypatch)
    for folder, named in ((precious, "thesis.tex"), (out_dir, "mine.txt")):
        result = _convert(adapter_dir, "--out", folder, "--rank", "8", "--overwrite")
        assert result.exit_code == 2, result.output
        assert "not a previous conversion's output" in " ".join(result.output.split()) and named in result.output
    assert (precious / "thesis.tex").read_text() == "years of work" and (out_dir / "mine.txt").exists()


def test_a_rank_above_a_layers_size_is_reported_with_the_rank_used(tmp_path):
    _, adapter_dir = _save_adapter(tmp_path, "loha")
    out_dir = tmp_path / "lora"
    result = _convert(adapter_dir, "--out", out_dir, "--rank", "100000", "--no-measure", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    notes = [note for note in report["notes"] if "--rank 100000" in note]
    assert len(notes) == 1
    first = report["layers"][0]
    assert f"{first['module']} (rank {first['rank']}" in notes[0] and first["rank"] < 100000
    recorded = json.loads((out_dir / "conversion_report.json").read_text())
    assert recorded["notes"] == report["notes"]


def test_a_full_disk_while_writing_is_an_error_and_leaves_a_previous_output_as_it_was(tmp_path, monkeypatch):
    import errno

    import safetensors.torch

    _, adapter_dir = _save_adapter(tmp_path, "loha")
    out_dir = tmp_path / "lora8"
    assert _convert(adapter_dir, "--out", out_dir, "--rank", "8", "--no-measure").exit_code == 0
    before = _tree(out_dir)

    def no_space(tensors, filename, metadata=None):
        raise OSError(errno.ENOSPC, "No space left on device", filename)

    monkeypatch.setattr(safetensors.torch, "save_file", no_space)
    result = _convert(adapter_dir, "--out", out_dir, "--rank", "4", "--no-measure", "--overwrite")
    assert result.exit_code == 1, result.output
    assert "No space left on device" in result.output and "unchanged" in result.output
    assert _tree(out_dir) == before
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(["base", adapter_dir.name, "lora8"])
