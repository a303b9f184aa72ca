"""Reading the adapter to convert: its folder, its base model, and the base weights before the adapter touches them.

An adapter folder is untrusted input: every problem is reported naming the file and what was expected, before
any model loads. Weights are read from safetensors only (no pickle).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from peftbench.config import ConfigError, read_untrusted_text
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
        config = json.loads(read_untrusted_text(config_file))
    except ConfigError as error:  # not a regular file, too big, not UTF-8
        raise AdapterFolderError(str(error)) from None
    except json.JSONDecodeError as error:
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


@dataclass(frozen=True)
class BaseModelLoader:
    """How to load the base model as the run that trained the adapter did: its path, and the task or model class
    that decides the class (never the adapter config's task_type: `null` in half of PEFT's configs)."""

    path: str
    source: str  # where the class comes from, shown in the report
    task: str | None = None  # load with this task's load_model (a peftbench result file names it)
    model_class: str | None = None  # else this transformers class (or an Auto class for remote code)
    trust_remote_code: bool = False

    def describe(self) -> str:
        return f"{self.task}'s model" if self.task else str(self.model_class)

    def load(self) -> nn.Module:
        """The base model in float32 on CPU (conversion needs exact arithmetic more than speed), in eval mode."""
        try:
            model = self._load_with_task() if self.task else self._load_with_class()
        except OSError as error:
            raise AdapterFolderError(
                f"base model {self.path!r} could not be loaded ({error}); pass --base-model with a local path"
            ) from None
        return model.eval()

    def _load_with_task(self) -> nn.Module:
        from peftbench.tasks import get_task

        task = get_task(self.task)
        overrides = {"model_id": self.path, "dtype": "float32", "trust_remote_code": self.trust_remote_code}
        config = task.build_config(None, overrides=overrides, overrides_source=self.source)  # the task's own keys
        return task.load_model(config, "cpu")

    def _load_with_class(self) -> nn.Module:
        import transformers

        model_class = getattr(transformers, self.model_class)
        return model_class.from_pretrained(self.path, dtype=torch.float32, trust_remote_code=self.trust_remote_code)


def training_result_of(adapter_dir: str | Path) -> tuple[Path, str] | None:
    """(result file, task) of the peftbench run that saved `adapter_dir` as RESULTS/checkpoints/<stem>/, or None.

    The result file is untrusted: anything but a JSON object naming a known task counts as no provenance.
    """
    from peftbench.results.reader import read_result_file
    from peftbench.results.writer import CHECKPOINTS_DIR
    from peftbench.tasks import available_tasks

    folder = Path(adapter_dir).resolve()
    if folder.parent.name != CHECKPOINTS_DIR:
        return None
    result_file = folder.parent.parent / f"{folder.name}.json"
    recorded = read_result_file(result_file).result
    task = recorded.task if recorded is not None else None
    return (result_file, task) if isinstance(task, str) and task in available_tasks() else None


def _transformers_model_class(name: object) -> str | None:
    """`name` if it is a model class that transformers exports (names come from untrusted files)."""
    import transformers

    if not isinstance(name, str) or not name.isidentifier():
        return None
    found = getattr(transformers, name, None)
    return name if isinstance(found, type) and issubclass(found, transformers.PreTrainedModel) else None


def base_model_loader(
    adapter_dir: str | Path, config: dict, model_path: str, trust_remote_code: bool = False
) -> BaseModelLoader:
    """How to load `model_path` for the adapter in `adapter_dir`, in order of what is known about its training:
    1. the task of the peftbench result file beside the checkpoint (the task's own load_model);
    2. the model class that peft recorded in adapter_config.json (`auto_mapping.base_model_class`, written when
       task_type is null);
    3. the class named by `architectures` in the base model's config.json.
    """
    found = training_result_of(adapter_dir)
    if found:
        result_file, task = found
        return BaseModelLoader(model_path, f"task of {result_file}", task=task, trust_remote_code=trust_remote_code)
    config_file = Path(adapter_dir) / ADAPTER_CONFIG_FILE
    auto_mapping = config.get("auto_mapping")
    recorded_class = auto_mapping.get("base_model_class") if isinstance(auto_mapping, dict) else None
    recorded = _transformers_model_class(recorded_class)
    if recorded:
        return BaseModelLoader(
            model_path, f"{config_file} auto_mapping", model_class=recorded, trust_remote_code=trust_remote_code
        )
    model_class = _architecture_class(model_path, trust_remote_code)
    return BaseModelLoader(
        model_path, f"{model_path} config.json architectures", model_class=model_class,
        trust_remote_code=trust_remote_code,
    )


def _architecture_class(model_path: str, trust_remote_code: bool) -> str:
    """The class that config.json's `architectures` names: a transformers class, or with remote code the Auto class
    whose `auto_map` entry points at it."""
    from transformers import AutoConfig

    try:
        model_config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise AdapterFolderError(
            f"base model {model_path!r}: config.json could not be read ({error}); pass --base-model with a local path"
        ) from None
    architectures = getattr(model_config, "architectures", None) or []
    for name in architectures:
        if _transformers_model_class(name):
            return name
        for auto_class, reference in (getattr(model_config, "auto_map", None) or {}).items():
            if trust_remote_code and str(reference).rsplit(".", 1)[-1] == name and _is_auto_model_class(auto_class):
                return auto_class
    raise AdapterFolderError(
        f"{model_path}/config.json: 'architectures' is {architectures!r}, which names no model class that "
        "transformers provides (remote code needs --trust-remote-code); the model class the adapter was trained on "
        "cannot be told, and loading the bare model would leave the adapter unloaded"
    )


def _is_auto_model_class(name: str) -> bool:
    import transformers

    return name.startswith("AutoModel") and isinstance(getattr(transformers, name, None), type)


def snapshot_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every parameter before an adapter is applied (PiSSA-style methods rewrite base weights)."""
    return {name: parameter.detach().clone() for name, parameter in model.named_parameters()}


def load_adapter(base_model: nn.Module, adapter_dir: str | Path) -> nn.Module:
    """The base model with the adapter from `adapter_dir`, in eval mode, as plain peft loads it; every weight of the
    checkpoint must land in the model (AdapterLoadError otherwise)."""
    from peftbench.adapter_loading import AdapterLoadError, load_adapter_strictly

    try:
        model = load_adapter_strictly(base_model, adapter_dir)
    except (ConversionRefused, AdapterLoadError):
        raise
    except Exception as error:
        raise AdapterFolderError(f"{adapter_dir}: peft could not load this adapter: {error}") from error
    return model.eval()
