"""Everything method-specific, in one place, keyed by method.

- `OPTIMIZER_BUILDERS`, keyed by the training parameter `optimizer_type` (the PEFT suite's semantics):
  "lora+", "lora-fa" and "riemannian" come from `peft.optimizers`; any other value names a `torch.optim` class.
- `METHOD_SUPPORT`, keyed by peft_type: hooks around model building and the training step
  (AdaLoRA's total_step and update_and_allocate, prompt-learning dimensions and KV-prefix initialisation).
  A method without an entry needs nothing special. Full fine-tuning is peft_type None.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Optional

import torch
from torch import nn

from peftbench.config import ConfigError, PEFT_OPTIMIZER_TYPES


# ---------------------------------------------------------------- optimizers (by optimizer_type)
def _lora_plus(model: nn.Module, kwargs: dict[str, Any]) -> torch.optim.Optimizer:
    from peft.optimizers import create_loraplus_optimizer

    return create_loraplus_optimizer(model, optimizer_cls=torch.optim.AdamW, **kwargs)


def _lora_fa(model: nn.Module, kwargs: dict[str, Any]) -> torch.optim.Optimizer:
    from peft.optimizers import create_lorafa_optimizer

    return create_lorafa_optimizer(model, **kwargs)


def _riemannian(model: nn.Module, kwargs: dict[str, Any]) -> torch.optim.Optimizer:
    from peft.optimizers import create_riemannian_optimizer

    return create_riemannian_optimizer(model, optimizer_cls=torch.optim.AdamW, **kwargs)


OPTIMIZER_BUILDERS: dict[str, Callable[[nn.Module, dict[str, Any]], torch.optim.Optimizer]] = {
    "lora+": _lora_plus,
    "lora-fa": _lora_fa,
    "riemannian": _riemannian,
}
assert set(OPTIMIZER_BUILDERS) == set(PEFT_OPTIMIZER_TYPES)


def check_optimizer_type(optimizer_type: str) -> None:
    """Raise ConfigError unless `optimizer_type` is a peft optimizer name or a torch.optim class name."""
    if optimizer_type in OPTIMIZER_BUILDERS:
        return
    optimizer_class = getattr(torch.optim, optimizer_type, None)
    if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, torch.optim.Optimizer)):
        raise ConfigError(
            f"unknown optimizer_type {optimizer_type!r}: give a torch.optim class name (e.g. 'AdamW', 'SGD') "
            f"or one of {', '.join(PEFT_OPTIMIZER_TYPES)}", key="optimizer_type",
        )


def build_optimizer(model: nn.Module, optimizer_type: str, optimizer_kwargs: dict[str, Any]) -> torch.optim.Optimizer:
    check_optimizer_type(optimizer_type)
    if optimizer_type in OPTIMIZER_BUILDERS:
        try:
            return OPTIMIZER_BUILDERS[optimizer_type](model, dict(optimizer_kwargs))
        except TypeError as error:
            raise ConfigError(f"optimizer_kwargs do not fit optimizer_type {optimizer_type!r}: {error}") from None
    optimizer_class = getattr(torch.optim, optimizer_type)
    trainable = [p for p in model.parameters() if p.requires_grad]
    try:
        return optimizer_class(trainable, **optimizer_kwargs)
    except TypeError as error:
        raise ConfigError(f"optimizer_kwargs do not fit torch.optim.{optimizer_type}: {error}") from None


# ---------------------------------------------------------------- method hooks (by peft_type)
class MethodSupport:
    """The default: nothing special. Subclass and register in METHOD_SUPPORT for a method that needs more."""

    def adjust_config(self, peft_config, base_model: nn.Module, train_config) -> None:
        """Change the peft config before get_peft_model (values that depend on the run, not the method)."""

    def after_wrap(self, model: nn.Module, tokenizer: Any, train_config) -> None:
        """Called once after get_peft_model, before the optimizer is built."""

    def after_optimizer_step(self, model: nn.Module, step: int) -> None:
        """Called after every optimizer step (step counts from 1)."""


class AdaLoraSupport(MethodSupport):
    def adjust_config(self, peft_config, base_model, train_config) -> None:
        # the rank budget schedule runs over total_step steps: the whole run, unless the task keeps the config's
        # value as the PEFT suite does (config.ADALORA_TOTAL_STEPS)
        if train_config.adalora_total_step == "max_steps":
            peft_config.total_step = train_config.max_steps
        if peft_config.tinit + peft_config.tfinal >= peft_config.total_step:
            raise ConfigError(
                f"AdaLoRA needs tinit + tfinal < total_step, got tinit={peft_config.tinit}, "
                f"tfinal={peft_config.tfinal}, total_step={peft_config.total_step} "
                f"(adalora_total_step={train_config.adalora_total_step!r}, max_steps={train_config.max_steps}); "
                "raise the steps or lower tinit/tfinal"
            )

    def after_optimizer_step(self, model, step: int) -> None:
        model.base_model.update_and_allocate(step)


class PromptLearningSupport(MethodSupport):
    # These describe the base model, not the method: configs written for one model (the suite's are for
    # Llama-3.2-3B) would not fit another, so they are taken from the model actually used.
    MODEL_DIMENSIONS = ("num_layers", "token_dim", "num_attention_heads", "encoder_hidden_size")

    def adjust_config(self, peft_config, base_model, train_config) -> None:
        model_config = base_model.config
        actual = {
            "num_layers": getattr(model_config, "num_hidden_layers", None),
            "token_dim": getattr(model_config, "hidden_size", None),
            "num_attention_heads": getattr(model_config, "num_attention_heads", None),
            "encoder_hidden_size": getattr(model_config, "hidden_size", None),
        }
        for key in self.MODEL_DIMENSIONS:
            configured = getattr(peft_config, key, None)
            if configured is not None and actual[key] is not None and configured != actual[key]:
                warnings.warn(
                    f"{peft_type_name(peft_config)} config has {key}={configured}, the base model has {actual[key]}; "
                    "using the base model's value"
                )
                setattr(peft_config, key, actual[key])


class PrefixTuningSupport(PromptLearningSupport):
    def after_wrap(self, model, tokenizer, train_config) -> None:
        # the PEFT suite's init_kv_cache_prefix: start the prefix from the base model's KV cache of a text
        if getattr(train_config, "init_kv_cache_prefix", None):  # a text task's parameter
            from peft.tuners.cartridge.utils import initialize_kv_prefix_from_text

            initialize_kv_prefix_from_text(
                model, tokenizer, text=train_config.init_kv_cache_prefix, use_chat_template=False
            )


METHOD_SUPPORT: dict[Optional[str], MethodSupport] = {
    "ADALORA": AdaLoraSupport(),
    "PROMPT_TUNING": PromptLearningSupport(),
    "P_TUNING": PromptLearningSupport(),
    "MULTITASK_PROMPT_TUNING": PromptLearningSupport(),
    "ADAPTION_PROMPT": MethodSupport(),
    "PREFIX_TUNING": PrefixTuningSupport(),
    "CARTRIDGE": PrefixTuningSupport(),
}


def peft_type_name(peft_config) -> Optional[str]:
    """"LORA", "ADALORA", ... (None for full fine-tuning)."""
    if peft_config is None:
        return None
    return getattr(peft_config.peft_type, "value", peft_config.peft_type)


def method_support(peft_type: Optional[str]) -> MethodSupport:
    return METHOD_SUPPORT.get(peft_type, MethodSupport())


# ---------------------------------------------------------------- building the trainable model
def linear_module_names(model: nn.Module) -> list[str]:
    """Distinct names (last component) of the model's linear layers: the valid LoRA-style targets."""
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, nn.Linear)}
    return sorted(names)


def check_target_modules(peft_config, base_model: nn.Module, source: str) -> None:
    """Fail clearly when a listed target module does not exist in the model."""
    targets = getattr(peft_config, "target_modules", None)
    if not targets or isinstance(targets, str):  # None: peft's default for the architecture; str: a regex
        return
    module_names = [name for name, _ in base_model.named_modules()]
    missing = sorted(
        t for t in targets if not any(name == t or name.endswith("." + t) for name in module_names)
    )
    if missing:
        raise ConfigError(
            f"target_modules {missing} in {source} do not exist in the model. "
            f"Its linear modules are: {', '.join(linear_module_names(base_model))}"
        )


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Gradient checkpointing through the model's own API: transformers' `gradient_checkpointing_enable` (plus
    inputs that require grad, so that checkpointed blocks of a frozen model still pass gradients to adapters)
    or diffusers' `enable_gradient_checkpointing`."""
    if hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    elif hasattr(model, "enable_gradient_checkpointing"):
        model.enable_gradient_checkpointing()
    else:
        raise ConfigError(
            f"use_gc: {type(model).__name__} has no gradient-checkpointing API (neither transformers' "
            "gradient_checkpointing_enable nor diffusers' enable_gradient_checkpointing); set use_gc to false"
        )


def wrap_model(base_model: nn.Module, peft_config, tokenizer: Any, train_config, source: str) -> nn.Module:
    """The model to train: get_peft_model(base, config), or the base model itself for full fine-tuning."""
    if train_config.use_gc:
        enable_gradient_checkpointing(base_model)
    if peft_config is None:
        return base_model
    from peft import get_peft_model

    support = method_support(peft_type_name(peft_config))
    support.adjust_config(peft_config, base_model, train_config)
    check_target_modules(peft_config, base_model, source)
    try:
        model = get_peft_model(base_model, peft_config, autocast_adapter_dtype=train_config.autocast_adapter_dtype)
    except (ValueError, IndexError) as error:  # peft's checks of a config against the model it adapts
        hint = ""
        if "target" in str(error).lower():
            hint = f" The model's linear modules are: {', '.join(linear_module_names(base_model))}"
        raise ConfigError(
            f"{source} does not fit the base model {train_config.model_id}: {error}.{hint}"
        ) from None
    support.after_wrap(model, tokenizer, train_config)
    return model
