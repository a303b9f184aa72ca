"""Experiment folders: `<method>/<name>/` with `adapter_config.json` and optional `training_params.json`.

The layout is the PEFT suite's (`method_comparison/<task>/experiments/<method>/<name>/`), so its folders load
unchanged. A folder without `adapter_config.json` is full fine-tuning. Everything here is checked before any
model loads; this module imports no torch.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from peftbench.config import ConfigError, fits, read_json_file, type_name

ADAPTER_CONFIG_FILE = "adapter_config.json"
TRAINING_PARAMS_FILE = "training_params.json"
# the method name of an experiment folder without a parent folder to name it (full fine-tuning, as the PEFT suite
# names its folder): a result name, unlike the reader's peft_type of a run without an adapter
FULL_FINETUNING_METHOD = "full-finetuning"


@dataclass
class ExperimentSpec:
    """One experiment folder, parsed and validated."""

    path: Path
    method: str  # the parent folder's name, e.g. "lora"
    name: str  # the folder's name, e.g. "llama-3.2-3B-rank32"
    adapter_config: Optional[dict[str, Any]]  # None: full fine-tuning
    training_params: dict[str, Any]

    @property
    def experiment_name(self) -> str:
        return f"{self.method}/{self.name}"

    @property
    def peft_type(self) -> Optional[str]:
        return None if self.adapter_config is None else self.adapter_config["peft_type"]

    @property
    def training_params_path(self) -> Path:
        return self.path / TRAINING_PARAMS_FILE


def valid_peft_types() -> list[str]:
    from peft.utils import PeftType  # peft's enum is the source of truth; imported lazily (it pulls in torch)

    return sorted(member.value for member in PeftType)


def load_experiment(path: str | Path, check_peft_type: bool = True) -> ExperimentSpec:
    """Parse an experiment folder; bad JSON, an unknown key or an unknown peft_type raise ConfigError."""
    path = Path(path).resolve()
    if not path.is_dir():
        raise ConfigError(f"experiment folder not found: {path}")

    if not (path / ADAPTER_CONFIG_FILE).exists() and not (path / TRAINING_PARAMS_FILE).exists():
        inside = discover_experiments(path)
        listing = f" It holds experiment folders: {', '.join(str(p) for p in inside[:10])}" if inside else ""
        raise ConfigError(
            f"{path} is not an experiment folder: it has neither {ADAPTER_CONFIG_FILE} nor {TRAINING_PARAMS_FILE} "
            f"(full fine-tuning needs at least a {TRAINING_PARAMS_FILE}, which may be {{}}).{listing}"
        )
    adapter_config = None
    adapter_config_path = path / ADAPTER_CONFIG_FILE
    if adapter_config_path.exists():
        adapter_config = read_json_file(adapter_config_path, "adapter config")
        if not isinstance(adapter_config, dict):
            raise ConfigError(f"{adapter_config_path} must hold a JSON object")
        peft_type = adapter_config.get("peft_type")
        if peft_type is None:
            raise ConfigError(f"{adapter_config_path} has no 'peft_type'")
        if check_peft_type:
            valid = valid_peft_types()
            if peft_type not in valid:
                raise ConfigError(
                    f"unknown peft_type {peft_type!r} in {adapter_config_path}. Valid peft types: {', '.join(valid)}"
                )

    training_params: dict[str, Any] = {}
    if (path / TRAINING_PARAMS_FILE).exists():
        training_params = read_json_file(path / TRAINING_PARAMS_FILE, "training params")
        if not isinstance(training_params, dict):
            raise ConfigError(f"{path / TRAINING_PARAMS_FILE} must hold a JSON object")
        # its keys are the task's: `Task.build_config` checks them, naming this file

    return ExperimentSpec(
        path=path, method=path.parent.name or FULL_FINETUNING_METHOD, name=path.name, adapter_config=adapter_config, training_params=training_params
    )


def build_peft_config(spec: ExperimentSpec):
    """The peft config object of an experiment (None for full fine-tuning).

    Raises ConfigError, naming the file and the key, for a value peft's config class would accept but the
    model build would choke on later (`r: "big"`, `target_modules: 5`): peft does not check its fields' types.
    """
    if spec.adapter_config is None:
        return None
    from peft import PeftConfig

    path = spec.path / ADAPTER_CONFIG_FILE
    try:
        config = PeftConfig.from_pretrained(str(spec.path))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"invalid adapter config {path}: {error}") from None
    check_field_types(config, spec.adapter_config, path)
    return config


def check_field_types(config, given: dict[str, Any], source: Path) -> None:
    """Check each value the user gave (`given`) against the type annotation of the config dataclass's field."""
    import dataclasses
    import typing

    try:
        hints = typing.get_type_hints(type(config))
    except Exception:  # noqa: BLE001 - an annotation that cannot be resolved is not the user's error
        return
    for field in dataclasses.fields(config):
        if field.name not in given or field.name not in hints:
            continue
        if given[field.name] is None and field.default is None:  # peft's "unset" even where annotated `int`
            continue
        if fits(given[field.name], hints[field.name], integral_float_is_int=True) is False:
            raise ConfigError(
                f"invalid value in {source}: '{field.name}' is {given[field.name]!r}, "
                f"but {type(config).__name__}.{field.name} must be {type_name(hints[field.name])}"
            )


def discover_experiments(root: str | Path) -> list[Path]:
    """Experiment folders under `root`: every folder holding adapter_config.json or training_params.json."""
    root = Path(root)
    if not root.exists():
        return []
    found = {p.parent for p in root.rglob(ADAPTER_CONFIG_FILE)} | {p.parent for p in root.rglob(TRAINING_PARAMS_FILE)}
    # a checkpoint folder also holds adapter_config.json; it has weights beside it and is not an experiment
    return sorted(p for p in found if not any(p.glob("*.safetensors")))


def git_commit_of(path: str | Path) -> Optional[str]:
    """The HEAD commit of the git repository holding `path`, or None when it is not in one."""
    try:
        completed = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    sha = completed.stdout.strip()
    return sha if completed.returncode == 0 and sha else None
