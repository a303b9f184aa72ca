"""Everything method-specific, in one place, keyed by method.

- `PEFT_OPTIMIZERS` and `check_optimizer`, keyed by the training parameter `optimizer_type` (the PEFT suite's semantics):
  "lora+", "lora-fa" and "riemannian" come from `peft.optimizers`; any other value names a `torch.optim` class.
- `METHOD_SUPPORT`, keyed by peft_type: hooks around model building and the training step
  (AdaLoRA's total_step and update_and_allocate, prompt-learning dimensions and KV-prefix initialisation).
  A method without an entry needs nothing special. Full fine-tuning is peft_type None.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any, Callable, Optional

import torch
from torch import nn

from peftbench.config import ConfigError, PEFT_OPTIMIZER_TYPES, unknown_key_error


# ---------------------------------------------------------------- optimizers (by optimizer_type)
# peft's optimizer builders: the function of peft.optimizers, and the torch.optim class it is given, which takes
# the arguments the function does not name (None: the function takes no others)
PEFT_OPTIMIZERS: dict[str, tuple[str, Optional[str]]] = {
    "lora+": ("create_loraplus_optimizer", "AdamW"),
    "lora-fa": ("create_lorafa_optimizer", None),
    "riemannian": ("create_riemannian_optimizer", "AdamW"),
}
assert set(PEFT_OPTIMIZERS) == set(PEFT_OPTIMIZER_TYPES)


def check_optimizer_type(optimizer_type: str) -> None:
    """Raise ConfigError unless `optimizer_type` is a peft optimizer name or a torch.optim class name."""
    if optimizer_type in PEFT_OPTIMIZERS:
        return
    optimizer_class = getattr(torch.optim, optimizer_type, None)
    if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, torch.optim.Optimizer)):
        raise ConfigError(
            f"unknown optimizer_type {optimizer_type!r}: give a torch.optim class name (e.g. 'AdamW', 'SGD') "
            f"or one of {', '.join(PEFT_OPTIMIZER_TYPES)}", key="optimizer_type",
        )


def _optimizer_builder(optimizer_type: str) -> tuple[Callable[..., torch.optim.Optimizer], str, dict[str, Any]]:
    """The function that builds the optimizer, what it is called, and the arguments peftbench passes it besides
    the model's parameters (the first argument) and optimizer_kwargs."""
    if optimizer_type in PEFT_OPTIMIZERS:
        import peft.optimizers

        function_name, optimizer_class = PEFT_OPTIMIZERS[optimizer_type]
        fixed = {"optimizer_cls": getattr(torch.optim, optimizer_class)} if optimizer_class else {}
        return getattr(peft.optimizers, function_name), f"peft.optimizers.{function_name}", fixed
    return getattr(torch.optim, optimizer_type), f"torch.optim.{optimizer_type}", {}


def optimizer_arguments(optimizer_type: str) -> Optional[dict[str, bool]]:
    """The arguments optimizer_kwargs may hold for `optimizer_type`, each with whether it is required (from the
    builder's signature, and that of the torch.optim class it passes the others to); None: any (a builder that
    takes **kwargs itself)."""
    function, _, fixed = _optimizer_builder(optimizer_type)
    parameters = list(inspect.signature(function).parameters.values())[1:]  # the first: the model or parameters
    arguments = {p.name: p.default is p.empty for p in parameters
                 if p.name not in fixed and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        if "optimizer_cls" not in fixed:
            return None
        passed_on = list(inspect.signature(fixed["optimizer_cls"]).parameters.values())[1:]
        for p in passed_on:
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                arguments.setdefault(p.name, p.default is p.empty)
    return arguments


def check_optimizer(optimizer_type: str, optimizer_kwargs: dict[str, Any],
                    origin_of: Callable[[str], str] = lambda key: "optimizer_kwargs") -> None:
    """Raise ConfigError, before any model loads, for an optimizer_type that is none, an argument its optimizer
    does not take (the closest one it takes) or one it needs and is not given. `origin_of(key)`: where the
    value of a training parameter came from (`--set`, a training_params.json), for the message."""
    check_optimizer_type(optimizer_type)
    arguments = optimizer_arguments(optimizer_type)
    if arguments is None:
        return
    _, described, _ = _optimizer_builder(optimizer_type)
    for key in optimizer_kwargs:
        if key not in arguments:
            source = f"{origin_of(f'optimizer_kwargs.{key}')} (optimizer_kwargs of {described})"
            raise unknown_key_error(key, source, "optimizer argument", list(arguments), list(arguments))
    missing = [name for name, required in arguments.items() if required and name not in optimizer_kwargs]
    if missing:
        raise ConfigError(f"optimizer_kwargs lacks {', '.join(missing)}, which {described} needs",
                          key="optimizer_kwargs")


def build_optimizer(model: nn.Module, optimizer_type: str, optimizer_kwargs: dict[str, Any]) -> torch.optim.Optimizer:
    """The optimizer of the trainable parameters (peft's builders take the model); its arguments are checked
    (check_optimizer) when the run is planned."""
    check_optimizer_type(optimizer_type)
    function, described, fixed = _optimizer_builder(optimizer_type)
    first = model if optimizer_type in PEFT_OPTIMIZERS else [p for p in model.parameters() if p.requires_grad]
    try:
        return function(first, **fixed, **optimizer_kwargs)
    except TypeError as error:  # a value of the wrong kind (the names were checked)
        raise ConfigError(f"optimizer_kwargs do not fit {described}: {error}") from None


# ---------------------------------------------------------------- method hooks (by peft_type)
class MethodSupport:
    """The default: nothing special. Subclass and register in METHOD_SUPPORT for a method that needs more."""

    def adjust_config(self, peft_config, base_model: nn.Module, train_config) -> None:
        """Change the peft config before get_peft_model (values that depend on the run, not the method)."""

    def after_wrap(self, model: nn.Module, processor: Any, train_config) -> None:
        """Called once after get_peft_model, before the optimizer is built; `processor` is the task's (a text
        task's tokenizer)."""

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
    def after_wrap(self, model, processor, train_config) -> None:
        # the PEFT suite's init_kv_cache_prefix: start the prefix from the base model's KV cache of a text
        if getattr(train_config, "init_kv_cache_prefix", None):  # a text task's parameter: its processor is a tokenizer
            from peft.tuners.cartridge.utils import initialize_kv_prefix_from_text

            initialize_kv_prefix_from_text(
                model, processor, text=train_config.init_kv_cache_prefix, use_chat_template=False
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


def wrap_model(base_model: nn.Module, peft_config, processor: Any, train_config, source: str) -> nn.Module:
    """The model to train: get_peft_model(base, config), or the base model itself for full fine-tuning.
    `processor`: the task's (Task.load_processor), which a method's after_wrap may need."""
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
    support.after_wrap(model, processor, train_config)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if sum(p.numel() for p in trainable) == 0:  # e.g. OSF's rank_pattern for Llama-3B on a smaller model
        raise ConfigError(
            f"{source} trains no parameter of the base model {train_config.model_id}: its {len(trainable)} "
            "trainable tensors are all empty. Its sizes (ranks, rank_pattern, number of tokens or layers) do not fit "
            "this model's layers, e.g. a config written for a larger model; a run would only measure the base model"
        )
    return model
