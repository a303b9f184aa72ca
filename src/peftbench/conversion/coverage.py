"""Which peft methods convert to LoRA, measured: one tiny-model adapter per method, converted at several ranks.

Shared by the tests (every convertible method must reproduce logits at full rank) and by
benchmarks/bench_conversion.py (the coverage table, side by side with peft's own `convert_to_lora`).
Each adapter is made non-trivial: many methods start as an exact no-op, so every trainable adapter parameter
is perturbed with seeded noise before converting.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from peftbench.conversion.convert import ConvertedAdapter, convert_peft_model
from peftbench.conversion.fidelity import logits_relative_error, model_outputs, probe_input_ids
from peftbench.conversion.lowrank import RankSpec
from peftbench.conversion.refusals import ConversionRefused

ATTENTION_TARGETS = ["q_proj", "v_proj"]
ALL_LINEAR_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass(frozen=True)
class MethodCase:
    """A peft method (or a LoRA variant) on the tiny model: the config class's peft_type and its arguments."""

    name: str
    peft_type: str
    kwargs: dict
    expect: str = "converts"  # "converts" | "refused" | "approximate" (converts only with --fit least-squares)


# Arguments chosen for hidden size 64 (block sizes must divide it) and to make each adapter non-trivial.
METHOD_CASES = [
    MethodCase("lora", "LORA", {"r": 4, "target_modules": ALL_LINEAR_TARGETS}),
    MethodCase("lora-rslora", "LORA", {"r": 4, "use_rslora": True, "target_modules": ATTENTION_TARGETS}),
    MethodCase("lora-bias", "LORA", {"r": 4, "lora_bias": True, "target_modules": ATTENTION_TARGETS}),
    MethodCase(
        "lora-modules-to-save", "LORA", {"r": 4, "target_modules": ATTENTION_TARGETS, "modules_to_save": ["lm_head"]}
    ),
    MethodCase("dora", "LORA", {"r": 4, "use_dora": True, "target_modules": ALL_LINEAR_TARGETS}),
    MethodCase("pissa", "LORA", {"r": 4, "init_lora_weights": "pissa", "target_modules": ATTENTION_TARGETS}),
    MethodCase("olora", "LORA", {"r": 4, "init_lora_weights": "olora", "target_modules": ATTENTION_TARGETS}),
    MethodCase(
        "bd-lora",
        "LORA",
        {
            "r": 4,
            "target_modules": ["q_proj", "o_proj"],
            "use_bdlora": {"target_modules_bd_a": ["q_proj"], "target_modules_bd_b": ["o_proj"], "nblocks": 2},
        },
    ),
    MethodCase("adalora", "ADALORA", {"r": 4, "total_step": 10, "target_modules": ATTENTION_TARGETS}),
    MethodCase("loha", "LOHA", {"r": 4, "target_modules": ALL_LINEAR_TARGETS}),
    MethodCase("lokr", "LOKR", {"r": 4, "target_modules": ALL_LINEAR_TARGETS}),
    MethodCase("oft", "OFT", {"oft_block_size": 8, "r": 0, "target_modules": ALL_LINEAR_TARGETS}),
    MethodCase("boft", "BOFT", {"boft_block_size": 8, "target_modules": ATTENTION_TARGETS}),
    MethodCase("hra", "HRA", {"r": 4, "target_modules": ATTENTION_TARGETS}),
    MethodCase("ia3", "IA3", {"target_modules": ["q_proj", "v_proj", "down_proj"], "feedforward_modules": ["down_proj"]}),
    MethodCase("vera", "VERA", {"r": 8, "target_modules": ATTENTION_TARGETS}),
    MethodCase("fourierft", "FOURIERFT", {"n_frequency": 100, "target_modules": ATTENTION_TARGETS}),
    MethodCase("vblora", "VBLORA", {"r": 4, "vector_length": 16, "num_vectors": 32, "target_modules": ATTENTION_TARGETS}),
    MethodCase("randlora", "RANDLORA", {"r": 8, "target_modules": ATTENTION_TARGETS}),
    MethodCase("miss", "MISS", {"r": 8, "target_modules": ATTENTION_TARGETS}),
    MethodCase("shira", "SHIRA", {"r": 4, "target_modules": ATTENTION_TARGETS}),
    MethodCase("c3a", "C3A", {"block_size": 16, "target_modules": ATTENTION_TARGETS}),
    MethodCase("road", "ROAD", {"target_modules": ATTENTION_TARGETS}),
    MethodCase("waveft", "WAVEFT", {"target_modules": ATTENTION_TARGETS}),
    MethodCase("osf", "OSF", {"target_modules": ATTENTION_TARGETS}),
    MethodCase("delora", "DELORA", {"r": 4, "target_modules": ATTENTION_TARGETS}),
    MethodCase("gralora", "GRALORA", {"r": 8, "target_modules": ATTENTION_TARGETS}),
    MethodCase("hira", "HIRA", {"target_modules": ATTENTION_TARGETS}),
    # Lily mixes its B experts with a router on the input, averaged over the batch: not linear in the input.
    MethodCase("lily", "LILY", {"target_modules": ATTENTION_TARGETS}, expect="approximate"),
    MethodCase("beft", "BEFT", {"target_modules": ATTENTION_TARGETS}),
    MethodCase("glora", "GLORA", {"target_modules": ATTENTION_TARGETS}),
    MethodCase("frod", "FROD", {"target_modules": ATTENTION_TARGETS}),
    MethodCase("deft", "DEFT", {"target_modules": ATTENTION_TARGETS}),
    MethodCase("pvera", "PVERA", {"target_modules": ATTENTION_TARGETS}),
    MethodCase("unilora", "UNILORA", {"target_modules": ATTENTION_TARGETS}),
    MethodCase("tinylora", "TINYLORA", {"target_modules": ATTENTION_TARGETS}),
    MethodCase("adamss", "ADAMSS", {"r": 16, "num_subspaces": 4, "target_modules": ATTENTION_TARGETS}),
    MethodCase("psoft", "PSOFT", {"target_modules": ATTENTION_TARGETS}),
    # ShadowPEFT wraps whole decoder blocks with a parallel network: no linear layer's weight changes.
    MethodCase("shadow", "SHADOW", {}, expect="refused"),
    MethodCase("supertuning", "SUPERTUNING", {"target_modules": ATTENTION_TARGETS}),
    # peft's PEANuT applies its ReLU network to weights, not to the input, so its layers stay linear in x.
    MethodCase("peanut-relu", "PEANUT", {"target_modules": ATTENTION_TARGETS, "act_fn": "relu"}),
    MethodCase("ln-tuning", "LN_TUNING", {}, expect="refused"),
    MethodCase("trainable-tokens", "TRAINABLE_TOKENS", {"token_indices": [1, 2, 3]}, expect="refused"),
    MethodCase("prompt-tuning", "PROMPT_TUNING", {"num_virtual_tokens": 4}, expect="refused"),
    MethodCase("prefix-tuning", "PREFIX_TUNING", {"num_virtual_tokens": 4}, expect="refused"),
    MethodCase("p-tuning", "P_TUNING", {"num_virtual_tokens": 4, "encoder_hidden_size": 32}, expect="refused"),
    MethodCase("poly", "POLY", {"target_modules": ATTENTION_TARGETS}, expect="refused"),
]


def tiny_llama(seed: int = 0):
    """A random Llama-architecture causal LM, hidden 64, 2 layers (a few hundred thousand parameters)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=128,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).eval()


def make_config(case: MethodCase):
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
    from peft.tuners.lora.config import BdLoraConfig

    kwargs = dict(case.kwargs)
    if isinstance(kwargs.get("use_bdlora"), dict):
        kwargs["use_bdlora"] = BdLoraConfig(**kwargs["use_bdlora"])
    if case.peft_type in ("LN_TUNING",):
        kwargs.setdefault("target_modules", ["input_layernorm"])
    config_class = PEFT_TYPE_TO_CONFIG_MAPPING[case.peft_type]
    return config_class(task_type="CAUSAL_LM", **kwargs)


@torch.no_grad()
def perturb_adapter(model, seed: int = 0, scale: float = 0.05) -> None:
    """Add seeded noise to every trainable adapter parameter, so no adapter is an identity."""
    generator = torch.Generator().manual_seed(seed)
    for name, parameter in model.named_parameters():
        if parameter.requires_grad and parameter.is_floating_point():
            noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float32).to(parameter.dtype)
            parameter.add_(scale * noise * max(1.0, float(parameter.abs().mean())))


def build_adapted_model(case: MethodCase, seed: int = 0):
    """(fresh base factory, adapted model, original parameters) for `case` on the tiny model."""
    from peft import get_peft_model

    from peftbench.conversion.source import snapshot_parameters

    base = tiny_llama(seed)
    pristine = copy.deepcopy(base)
    original_parameters = snapshot_parameters(base)
    model = get_peft_model(base, make_config(case))
    perturb_adapter(model, seed)
    model.eval()
    return (lambda: copy.deepcopy(pristine)), model, original_parameters


def load_state_dict_as_lora(fresh_base, lora_config, state_dict):
    """The base model with a LoRA adapter from an in-memory config and state dict, as peft would load it."""
    from peft import get_peft_model, set_peft_model_state_dict

    model = get_peft_model(fresh_base, copy.deepcopy(lora_config))
    set_peft_model_state_dict(model, state_dict)
    return model.eval()


def logits_error_of(converted: ConvertedAdapter, fresh_base, original_model) -> float:
    input_ids = probe_input_ids(original_model, seed=2, batch_size=4, length=32)
    lora_model = load_state_dict_as_lora(fresh_base, converted.lora_config, converted.state_dict)
    return logits_relative_error(model_outputs(lora_model, input_ids), model_outputs(original_model, input_ids))


def peft_own_conversion_error(model, fresh_base, rank) -> tuple[float | None, str]:
    """peft's `convert_to_lora` on the same adapter: (logits error, '' or why it failed)."""
    from peft import convert_to_lora

    try:
        lora_config, state_dict = convert_to_lora(model, rank=rank)
    except Exception as error:  # recorded as it is: this is the comparison the table shows
        return None, f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"
    state_dict = {key: value for key, value in state_dict.items()}
    try:
        input_ids = probe_input_ids(model, seed=2, batch_size=4, length=32)
        lora_model = load_state_dict_as_lora(fresh_base, lora_config, state_dict)
        error = logits_relative_error(model_outputs(lora_model, input_ids), model_outputs(model, input_ids))
    except Exception as error:
        return None, f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"
    return error, ""


@dataclass
class CoverageRow:
    method: str
    peft_type: str
    converts: str  # "yes" | "approximate" | "refused"
    reason: str
    error_full_rank: float | None
    error_rank8: float | None
    adapter_effect: float | None = None  # original vs base logits: how much there is to reproduce
    delta_source: str = ""  # how ΔW was read: "peft formula", "identity probe", "least-squares fit"
    peft_error_full_rank: float | None = None
    peft_error_rank8: float | None = None
    peft_failure: str = ""


def check_method(case: MethodCase, compare_with_peft: bool = False) -> CoverageRow:
    """Convert `case`'s adapter at full rank and rank 8 and measure the logits error of each."""
    fresh_base, model, original = build_adapted_model(case)
    row = CoverageRow(case.name, case.peft_type, "yes", "", None, None)
    try:
        full = convert_peft_model(model, original, RankSpec())
    except ConversionRefused as refusal:
        try:
            full = convert_peft_model(model, original, RankSpec(), fit="least-squares")
        except ConversionRefused:
            row.converts, row.reason = "refused", str(refusal)
            return row
        row.converts, row.reason = "approximate", str(refusal)
    row.delta_source = ", ".join(sorted({layer.how for layer in full.report.layers}))
    row.error_full_rank = logits_error_of(full, fresh_base(), model)
    input_ids = probe_input_ids(model, seed=2, batch_size=4, length=32)
    row.adapter_effect = logits_relative_error(model_outputs(fresh_base(), input_ids), model_outputs(model, input_ids))
    fit = "least-squares" if row.converts == "approximate" else None
    rank8 = convert_peft_model(model, original, RankSpec(fixed_rank=8), fit=fit)
    row.error_rank8 = logits_error_of(rank8, fresh_base(), model)
    if compare_with_peft:
        # every adapted layer of the tiny model has min(out, in) == hidden size
        full_rank = model.config.hidden_size
        row.peft_error_full_rank, row.peft_failure = peft_own_conversion_error(model, fresh_base(), full_rank)
        row.peft_error_rank8, _ = peft_own_conversion_error(model, fresh_base(), 8)
    return row
