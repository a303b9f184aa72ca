"""A minimal, runnable usage snippet per method: `get_peft_model` with the method's config class and the key
arguments of its benchmarked config (those that differ from the class's defaults).

The benchmarked config comes from a result file, which is untrusted: only arguments that are fields of the
config class and plain JSON values (written with repr, so never code) make it into the snippet.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

# Fields that say where a config came from or how peft stores it, not how the method adapts a model; and the
# prompt-learning fields peft fills in from the base model (the benchmark's 3B model's sizes, not the user's).
BOOKKEEPING_FIELDS = {"peft_type", "base_model_name_or_path", "revision", "inference_mode", "auto_mapping",
                      "peft_version", "token_dim", "num_transformer_submodules", "num_attention_heads", "num_layers"}


def _plain(value: Any) -> bool:
    """A JSON value made of None, bools, finite numbers, strings, lists and string-keyed dicts."""
    if value is None or isinstance(value, (bool, int, str)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_plain(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and _plain(item) for key, item in value.items())
    return False


def key_arguments(peft_type: str, benchmarked: dict | None) -> dict[str, Any]:
    """The config arguments a user must give: those the probe needs (probe.REQUIRED_ARGUMENTS, a task type for
    prompt learning) and those of the benchmarked config that differ from the class's defaults."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    from peftbench.catalog.probe import required_arguments

    config_class = PEFT_TYPE_TO_CONFIG_MAPPING[peft_type]
    fields = [field for field in dataclasses.fields(config_class) if field.init and field.name not in BOOKKEEPING_FIELDS]
    defaults = {field.name: field.default if field.default is not dataclasses.MISSING else field.default_factory()
                for field in fields
                if field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING}
    arguments = required_arguments(peft_type)
    for key, value in (benchmarked or {}).items():
        if key in defaults and _plain(value) and _differs(value, defaults[key]):
            arguments[key] = value
    return arguments


def _differs(value: Any, default: Any) -> bool:
    return _jsonable(value) != _jsonable(default)


def _jsonable(value: Any) -> Any:
    """Enums as their values, sets as sorted lists: what the config's to_dict() and JSON hold."""
    if hasattr(value, "value") and not isinstance(value, (int, float, str, bool)):
        return value.value
    if isinstance(value, (set, frozenset, tuple)):
        return sorted(value) if isinstance(value, (set, frozenset)) else list(value)
    return value


def usage_snippet(peft_type: str, benchmarked: dict | None, base_model: str, origin: str) -> str:
    """Python source that builds the method on `base_model`; `origin` says which config it reproduces."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    config_class = PEFT_TYPE_TO_CONFIG_MAPPING[peft_type].__name__
    arguments = key_arguments(peft_type, benchmarked)
    rendered = ", ".join(f"{key}={value!r}" for key, value in arguments.items())
    return "\n".join([
        f"# {origin}",
        f"from peft import {config_class}, get_peft_model",
        "from transformers import AutoModelForCausalLM",
        "",
        f"model = AutoModelForCausalLM.from_pretrained({base_model!r})",
        f"model = get_peft_model(model, {config_class}({rendered}))",
        "model.print_trainable_parameters()",
    ])
