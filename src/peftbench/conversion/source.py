"""Reading the adapter to convert: its folder, its base model, and the base weights before the adapter touches them.

An adapter folder is untrusted input: every problem is reported naming the file and what was expected, before
any model loads. Weights are read from safetensors only (no pickle).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from peftbench.conversion.refusals import ConversionRefused, refuse_by_config_keys, refuse_by_peft_type

ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"


class AdapterFolderError(ValueError):
    """The adapter folder is missing, incomplete or malformed; the message names the file."""


def read_adapter_config(adapter_dir: str | Path) -> dict:
    """The validated adapter_config.json of `adapter_dir`; refuses adapter types that cannot be converted."""
    from peft.utils.peft_types import PeftType

    adapter_dir = Path(adapter_dir)
    if not adapter_dir.is_dir():
        raise AdapterFolderError(f"{adapter_dir}: not a folder; give the folder written by save_pretrained")
    config_file = adapter_dir / ADAPTER_CONFIG_FILE
    if not config_file.is_file():
        raise AdapterFolderError(f"{config_file}: missing; an adapter folder holds {ADAPTER_CONFIG_FILE}")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise AdapterFolderError(f"{config_file}: not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise AdapterFolderError(f"{config_file}: expected a JSON object, found {type(config).__name__}")
    peft_type = config.get("peft_type")
    valid_types = sorted(member.value for member in PeftType)
    if peft_type not in valid_types:
        raise AdapterFolderError(
            f"{config_file}: key 'peft_type' is {peft_type!r}; expected one of {', '.join(valid_types)}"
        )
    refuse_by_peft_type(peft_type, str(config_file))
    refuse_by_config_keys(config, str(config_file))
    _check_weights_file(adapter_dir)
    return config


def _check_weights_file(adapter_dir: Path) -> None:
    from safetensors import safe_open

    weights_file = adapter_dir / ADAPTER_WEIGHTS_FILE
    if not weights_file.is_file():
        pickled = adapter_dir / "adapter_model.bin"
        hint = (
            f" (found {pickled.name}: pickled weights are not loaded, re-save with safe_serialization=True)"
            if pickled.exists()
            else ""
        )
        raise AdapterFolderError(f"{weights_file}: missing{hint}")
    try:
        with safe_open(str(weights_file), framework="pt") as handle:
            handle.keys()
    except Exception as error:  # safetensors raises several types for a corrupt header
        raise AdapterFolderError(f"{weights_file}: not a readable safetensors file ({error})") from None


def resolve_base_model(config: dict, base_model: str | None, config_file: str, fallback: str | None = None) -> str:
    """The base model to load: `--base-model`, else the adapter config's base_model_name_or_path, else `fallback`
    (the task's model). A recorded local path that does not exist here (a folder on another machine) also falls
    back."""
    if base_model:
        return str(base_model)
    recorded = config.get("base_model_name_or_path")
    recorded_is_missing_path = bool(recorded) and Path(recorded).is_absolute() and not Path(recorded).exists()
    if fallback and (not recorded or recorded_is_missing_path):
        return str(fallback)
    if not recorded:
        raise AdapterFolderError(
            f"{config_file}: 'base_model_name_or_path' is empty; pass --base-model PATH_OR_ID (or --task)"
        )
    return str(recorded)


_AUTO_CLASS_BY_TASK_TYPE = {
    "CAUSAL_LM": "AutoModelForCausalLM",
    "SEQ_CLS": "AutoModelForSequenceClassification",
    "SEQ_2_SEQ_LM": "AutoModelForSeq2SeqLM",
    "TOKEN_CLS": "AutoModelForTokenClassification",
    "QUESTION_ANS": "AutoModelForQuestionAnswering",
}


def load_base_model(model_path: str, task_type: str | None, trust_remote_code: bool = False) -> nn.Module:
    """Load the base model in float32 on CPU (conversion needs exact arithmetic more than speed)."""
    import transformers

    auto_class = getattr(transformers, _AUTO_CLASS_BY_TASK_TYPE.get(task_type or "", "AutoModel"))
    try:
        model = auto_class.from_pretrained(model_path, dtype=torch.float32, trust_remote_code=trust_remote_code)
    except OSError as error:
        raise AdapterFolderError(
            f"base model {model_path!r} could not be loaded ({error}); pass --base-model with a local path"
        ) from None
    return model.eval()


def snapshot_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every parameter before an adapter is applied (PiSSA-style methods rewrite base weights)."""
    return {name: parameter.detach().clone() for name, parameter in model.named_parameters()}


def load_adapter(base_model: nn.Module, adapter_dir: str | Path) -> nn.Module:
    """The base model with the adapter from `adapter_dir`, in eval mode, as plain peft loads it."""
    from peft import PeftModel

    try:
        model = PeftModel.from_pretrained(base_model, str(adapter_dir))
    except ConversionRefused:
        raise
    except Exception as error:
        raise AdapterFolderError(f"{adapter_dir}: peft could not load this adapter: {error}") from error
    return model.eval()
