"""Every peft method on a tiny model: converts exactly at full rank, or is refused with a reason."""

from __future__ import annotations

import warnings

import pytest
import torch

from peftbench.conversion import ConversionRefused, RankSpec, convert_peft_model
from peftbench.conversion.coverage import METHOD_CASES, build_adapted_model, logits_error_of
from peftbench.conversion.fidelity import logits_relative_error, model_outputs, probe_input_ids

FULL_RANK_TOLERANCE = 1e-4

warnings.filterwarnings("ignore", category=UserWarning)


def _case(name):
    return next(case for case in METHOD_CASES if case.name == name)


def test_every_peft_type_is_covered_by_a_case():
    from peft.utils.peft_types import PeftType

    covered = {case.peft_type for case in METHOD_CASES}
    # refused by their peft_type alone (tests/test_convert_cli.py checks those messages)
    refused_by_type = {"XLORA", "MULTITASK_PROMPT_TUNING", "ADAPTION_PROMPT", "CPT", "CARTRIDGE"}
    missing = {member.value for member in PeftType} - covered - refused_by_type
    assert not missing, f"peft types without a conversion case: {sorted(missing)}"


@pytest.mark.parametrize(
    "case", [case for case in METHOD_CASES if case.expect == "converts"], ids=lambda case: case.name
)
def test_full_rank_conversion_reproduces_logits(case):
    fresh_base, model, original = build_adapted_model(case)
    converted = convert_peft_model(model, original, RankSpec())
    input_ids = probe_input_ids(model, seed=2, batch_size=4, length=32)
    adapter_effect = logits_relative_error(model_outputs(fresh_base(), input_ids), model_outputs(model, input_ids))
    assert adapter_effect > 1e-3, "the test adapter must change the model, or the check proves nothing"
    assert logits_error_of(converted, fresh_base(), model) <= FULL_RANK_TOLERANCE
    assert not converted.report.approximate
    assert converted.lora_config.use_dora is False
    assert all(layer.delta_relative_error < 1e-6 for layer in converted.report.layers)
    assert {layer.how for layer in converted.report.layers} <= {"peft formula", "identity probe"}


def test_peft_formula_is_used_where_exact_and_the_probe_catches_where_it_is_not():
    _, loha, loha_original = build_adapted_model(_case("loha"))
    assert {layer.how for layer in convert_peft_model(loha, loha_original, RankSpec()).report.layers} == {
        "peft formula"
    }
    # peft declares DoRA convertible but its formula leaves out the magnitude vector: the probe rejects the
    # formula and the identity pass takes over
    _, dora, dora_original = build_adapted_model(_case("dora"))
    dora_layer = dora.base_model.model.model.layers[0].self_attn.q_proj
    assert dora_layer.supports_lora_conversion("default")
    report = convert_peft_model(dora, dora_original, RankSpec()).report
    assert {layer.how for layer in report.layers} == {"identity probe"}


@pytest.mark.parametrize(
    "case", [case for case in METHOD_CASES if case.expect == "refused"], ids=lambda case: case.name
)
def test_unconvertible_methods_are_refused_with_a_reason(case):
    _, model, original = build_adapted_model(case)
    with pytest.raises(ConversionRefused, match="prompt|embedding|not a torch.nn.Linear|cannot be converted"):
        convert_peft_model(model, original, RankSpec(), fit="least-squares")


def test_non_linear_adapter_is_refused_unless_least_squares_fit_is_asked():
    fresh_base, model, original = build_adapted_model(_case("lily"))
    with pytest.raises(ConversionRefused, match="not linear in its input.*--fit least-squares"):
        convert_peft_model(model, original, RankSpec())
    fitted = convert_peft_model(model, original, RankSpec(), fit="least-squares")
    assert fitted.report.approximate
    assert any(layer.how == "least-squares fit" for layer in fitted.report.layers)
    # the fit is an approximation, but much closer than dropping the adapter
    input_ids = probe_input_ids(model, seed=2, batch_size=4, length=32)
    adapter_effect = logits_relative_error(model_outputs(fresh_base(), input_ids), model_outputs(model, input_ids))
    assert logits_error_of(fitted, fresh_base(), model) < 0.5 * adapter_effect


def test_pissa_delta_is_relative_to_the_original_base_weights():
    """PiSSA rewrites the base weights; converting its lora_B @ lora_A alone (as peft does) is wrong."""
    fresh_base, model, original = build_adapted_model(_case("pissa"))
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    assert not torch.equal(layer.get_base_layer().weight, original["model.layers.0.self_attn.q_proj.weight"])
    converted = convert_peft_model(model, original, RankSpec(fixed_rank=16))
    assert logits_error_of(converted, fresh_base(), model) <= FULL_RANK_TOLERANCE


def test_energy_fraction_picks_the_smallest_rank_per_layer():
    _, model, original = build_adapted_model(_case("oft"))
    converted = convert_peft_model(model, original, RankSpec(energy_fraction=0.5))
    ranks = {layer.module: layer.rank for layer in converted.report.layers}
    assert len(set(ranks.values())) > 1, "OFT layers differ; the energy rule should give different ranks"
    config = converted.lora_config
    for layer in converted.report.layers:
        assert layer.energy_kept >= 0.5
        assert config.rank_pattern.get(layer.module, config.r) == layer.rank
        assert config.alpha_pattern.get(layer.module, config.lora_alpha) == layer.rank
        singular_values = converted_singular_values(model, original, layer.module)
        energy = singular_values**2
        assert energy[: layer.rank - 1].sum() / energy.sum() < 0.5  # one direction fewer is not enough


def converted_singular_values(model, original, module_name):
    from peftbench.conversion.delta import read_weight_change

    layer = model.base_model.model.get_submodule(module_name)
    change = read_weight_change(layer, original[f"{module_name}.weight"], None, torch.Generator().manual_seed(0))
    return torch.linalg.svdvals(change.delta_weight)


def test_vllm_rounds_to_one_allowed_rank_and_refuses_bias_changes():
    fresh_base, model, original = build_adapted_model(_case("loha"))
    converted = convert_peft_model(model, original, RankSpec(fixed_rank=5), vllm=True)
    assert converted.lora_config.r == 8 and converted.lora_config.lora_alpha == 8
    assert not converted.lora_config.rank_pattern
    assert {layer.rank for layer in converted.report.layers} == {8}
    plain = convert_peft_model(model, original, RankSpec(fixed_rank=8))
    # rounding up keeps 8 directions: the same adapter as asking for rank 8
    assert logits_error_of(converted, fresh_base(), model) == pytest.approx(
        logits_error_of(plain, fresh_base(), model), rel=1e-3
    )
    _, model_with_bias, original_with_bias = build_adapted_model(_case("lora-bias"))
    with pytest.raises(ConversionRefused, match="vLLM does not load LoRA biases"):
        convert_peft_model(model_with_bias, original_with_bias, RankSpec(fixed_rank=8), vllm=True)
    with_bias = convert_peft_model(model_with_bias, original_with_bias, RankSpec())
    assert with_bias.lora_config.lora_bias
    _, model_with_head, original_with_head = build_adapted_model(_case("lora-modules-to-save"))
    with pytest.raises(ConversionRefused, match="modules_to_save"):
        convert_peft_model(model_with_head, original_with_head, RankSpec(fixed_rank=8), vllm=True)
