"""What cannot become a plain LoRA adapter, and why.

Every refusal is a `ConversionRefused` whose message says what was found, why LoRA cannot express it, and
what the user can do instead. The rules live here so that the CLI, the tests and the coverage table give the
same reasons.
"""

from __future__ import annotations

# vLLM's `max_lora_rank` accepts only these values; a LoRA of any rank up to the chosen one loads.
VLLM_ALLOWED_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)

# Methods that add virtual tokens or change attention instead of changing weights.
PROMPT_LEARNING_TYPES = {
    "PROMPT_TUNING",
    "MULTITASK_PROMPT_TUNING",
    "P_TUNING",
    "PREFIX_TUNING",
    "ADAPTION_PROMPT",
    "CPT",
    "CARTRIDGE",
}

# Methods whose output depends on more than the layer input (a router, a task id), so no single weight
# change reproduces them.
INPUT_DEPENDENT_MIXTURE_TYPES = {
    "XLORA": "X-LoRA mixes several LoRA adapters with a learned classifier that looks at the hidden states",
    "POLY": "Poly routes between LoRA modules by a task id given at inference time",
}


class ConversionRefused(ValueError):
    """The adapter cannot be expressed as a LoRA weight change; the message says why."""


def refuse_by_peft_type(peft_type: str, config_file: str) -> None:
    """Refuse whole adapter types that never change a linear layer's weights."""
    if peft_type in PROMPT_LEARNING_TYPES:
        raise ConversionRefused(
            f"{config_file}: peft_type {peft_type} is a prompt-learning method: it adds learned virtual tokens "
            "(or attention prompts) to the input instead of changing any weight, so there is no weight change to "
            "express as LoRA. Serve it with peft itself, or train a LoRA-family method instead."
        )
    if peft_type == "TRAINABLE_TOKENS":
        raise ConversionRefused(
            f"{config_file}: peft_type TRAINABLE_TOKENS changes rows of the embedding matrix, not linear-layer "
            "weights; LoRA on linear layers cannot express it."
        )
    if peft_type in INPUT_DEPENDENT_MIXTURE_TYPES:
        raise ConversionRefused(
            f"{config_file}: peft_type {peft_type} cannot be converted: "
            f"{INPUT_DEPENDENT_MIXTURE_TYPES[peft_type]}, so no single weight change reproduces it."
        )


def refuse_by_config_keys(config: dict, config_file: str) -> None:
    """Refuse config features that add something other than a linear weight change."""
    if config.get("trainable_token_indices"):
        raise ConversionRefused(
            f"{config_file}: 'trainable_token_indices' trains embedding rows, which a LoRA on linear layers "
            "cannot express. Convert an adapter trained without it."
        )


def refuse_non_linear_target(module_name: str, base_layer_type: str) -> None:
    raise ConversionRefused(
        f"adapted module '{module_name}' wraps a {base_layer_type}, not a torch.nn.Linear: peftbench converts "
        "adapters on linear layers only (embedding, convolution and normalisation targets are refused)."
    )


def refuse_non_linear_adapter(module_name: str, nonlinearity: float) -> None:
    raise ConversionRefused(
        f"adapted module '{module_name}' is not linear in its input (a probe gave a relative non-linearity of "
        f"{nonlinearity:.3g}; for example Lily mixes experts with a router on the input), so no weight change "
        "reproduces it exactly. Pass --fit least-squares to fit the best weight change on calibration inputs "
        "(the result is reported as approximate)."
    )


def refuse_changed_non_adapter_parameter(parameter_name: str) -> None:
    raise ConversionRefused(
        f"loading the adapter changed the base model's parameter '{parameter_name}' outside any adapted linear "
        "layer (for example LayerNorm tuning, or bias='all'), which a LoRA on linear layers cannot express."
    )


def check_vllm_loadable(*, modules_to_save: list[str] | None, has_bias_change: bool, max_rank: int) -> None:
    """Refuse what vLLM cannot load (checked before anything is written)."""
    if modules_to_save:
        raise ConversionRefused(
            f"--vllm: the adapter keeps full copies of modules {sorted(modules_to_save)} (modules_to_save), "
            "which vLLM rejects. Convert without --vllm to keep them, or train without modules_to_save."
        )
    if has_bias_change:
        raise ConversionRefused(
            "--vllm: the adapter changes layer biases; LoRA can carry that (lora_bias=True) but vLLM does not "
            "load LoRA biases. Convert without --vllm to keep the bias change."
        )
    if max_rank > VLLM_ALLOWED_RANKS[-1]:
        raise ConversionRefused(
            f"--vllm: the conversion needs rank {max_rank}, above vLLM's largest max_lora_rank "
            f"{VLLM_ALLOWED_RANKS[-1]}. Choose --rank {VLLM_ALLOWED_RANKS[-1]} or lower, or an energy fraction."
        )
