"""TrainConfig: the typed, validated training parameters of one run.

The keys are those of the PEFT suite's `default_training_params.json` (so its experiment folders load
unchanged) plus peftbench's own (data sources, split sizes, warm-up, device, threads). A value comes from,
in order of precedence: `--set key=value`, the experiment's `training_params.json`, the task's defaults.
Nested dicts (`optimizer_kwargs`, `generation_kwargs`) merge key by key, as in the PEFT suite.

This module imports no torch, so configs are checked before any model loads.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional


class ConfigError(ValueError):
    """Bad user input (a config file, a key, a value). The message says what is wrong and what is valid.

    `key` names the training parameter at fault, where there is one, so that the caller that knows where
    each value came from can say so (`value_origin`)."""

    def __init__(self, message: str, key: Optional[str] = None) -> None:
        super().__init__(message)
        self.key = key


DTYPES = ("float32", "float16", "bfloat16")
# Optimizer types that are not torch.optim classes, following the PEFT suite's `optimizer_type` semantics.
PEFT_OPTIMIZER_TYPES = ("lora+", "lora-fa", "riemannian")
LR_SCHEDULERS = (None, "cosine")
# What the training loss covers: "sequence" (the PEFT suite's: prompt, response and the first EOS, summed and
# divided by the batch's non-padding tokens) or "completion" (the response and its EOS only, mean over them).
LOSS_ON = ("sequence", "completion")
# Training batch order: "peft" (the suite's: file order, one pass, sorted within buckets, the remainder bucket
# seen twice; and, as in the suite, the seed changes neither the order nor the adapter's initialisation) or
# "shuffled" (every epoch reshuffled with the seed, as many epochs as max_steps needs).
BATCH_ORDERS = ("peft", "shuffled")
# Keys whose values are dicts merged key by key rather than replaced.
NESTED_KEYS = ("optimizer_kwargs", "generation_kwargs")


@dataclass
class TrainConfig:
    """All parameters of one training run. See docs/engine.md for the meaning of each key."""

    # --- keys of the PEFT suite (method_comparison/MetaMathQA/default_training_params.json) ---
    model_id: str
    dtype: str = "float32"
    max_seq_length: int = 768
    batch_size: int = 4
    batch_size_eval: int = 50
    max_steps: int = 5000
    eval_steps: int = 250
    compile: bool = False
    use_gc: bool = False
    query_template: str = "Question: {query} Think step by step.\nAnswer:"
    seed: int = 0
    grad_norm_clip: float = 1.0  # 0 disables clipping
    optimizer_type: str = "AdamW"
    optimizer_kwargs: dict[str, Any] = field(default_factory=lambda: {"lr": 1e-4, "weight_decay": 0.1})
    lr_scheduler: Optional[str] = "cosine"
    use_amp: bool | str = False  # true: bf16 autocast; "auto": bf16 autocast where the hardware runs it natively
    autocast_adapter_dtype: bool = True
    generation_kwargs: dict[str, Any] = field(default_factory=lambda: {"max_length": 800, "max_new_tokens": 300})
    attn_implementation: Optional[str] = None
    init_kv_cache_prefix: Optional[str] = None

    # --- peftbench's own keys ---
    warmup_ratio: float = 0.1  # fraction of max_steps with linear warm-up (the PEFT suite's WARMUP_STEP_RATIO)
    # Data sources: a hub dataset id or a local file (json, jsonl, parquet, csv) in the same schema.
    train_data: Optional[str] = None
    valid_data: Optional[str] = None
    test_data: Optional[str] = None
    forgetting_data: Optional[str] = None
    train_size: Optional[int] = None  # None: every (filtered) training row
    valid_size: int = 50
    test_size: Optional[int] = None  # None: the whole test split
    forgetting_size: int = 100
    forgetting_max_length: int = 768
    device: str = "auto"  # "auto" (cuda if available, else cpu), "cpu", "cuda", "cuda:1", ...
    num_threads: Optional[int] = None  # torch CPU threads; None leaves torch's default
    trust_remote_code: bool = False  # never run a model repo's code unless the user asks
    # Tensor-level memory: "train" tracks the training steps that can set the peak; "run" also evaluation and
    # the forgetting measure (slower: every operator of generation goes through Python).
    track_memory: str = "train"
    loss_on: str = "sequence"  # see LOSS_ON
    batch_order: str = "peft"  # see BATCH_ORDERS
    # Test generation on a merged copy of the model (adapters peft can merge; never prompt learning): the adapter's
    # weight delta is computed once instead of at every generated token. Off: PEFT's script evaluates unmerged.
    merge_for_eval: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def bad(key: str, why: str, value: Any = dataclasses.MISSING) -> ConfigError:
            shown = getattr(self, key) if value is dataclasses.MISSING else value
            return ConfigError(f"invalid value for '{key}': {shown!r} ({why})", key=key)

        if not isinstance(self.model_id, str) or not self.model_id:
            raise bad("model_id", "must be a hub id or a local folder")
        if self.dtype not in DTYPES:
            raise bad("dtype", f"valid: {', '.join(DTYPES)}")
        for key in ("max_seq_length", "batch_size", "batch_size_eval", "max_steps", "eval_steps", "forgetting_max_length"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise bad(key, "must be a positive integer")
        for key in ("train_size", "test_size", "num_threads"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                raise bad(key, "must be a positive integer or null")
        for key in ("valid_size", "forgetting_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise bad(key, "must be an integer >= 0")
        if not _is_number(self.grad_norm_clip) or not 0 <= self.grad_norm_clip < math.inf:
            raise bad("grad_norm_clip", "must be a finite number >= 0; 0 disables clipping")
        if not isinstance(self.warmup_ratio, (int, float)) or not 0 <= self.warmup_ratio < 1:
            raise bad("warmup_ratio", "must be in [0, 1)")
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise bad("lr_scheduler", "valid: null or 'cosine'")
        if not isinstance(self.query_template, str) or "{query}" not in self.query_template:
            raise bad("query_template", "must contain '{query}'")
        for key in NESTED_KEYS:
            if not isinstance(getattr(self, key), dict):
                raise bad(key, "must be a JSON object")
        if "lr" not in self.optimizer_kwargs:
            raise bad("optimizer_kwargs", "must contain 'lr'")
        lr = self.optimizer_kwargs["lr"]
        if not _is_number(lr) or not 0 <= lr < math.inf:
            raise bad("optimizer_kwargs.lr", "the learning rate must be a finite number >= 0", lr)
        for name, value in self.optimizer_kwargs.items():  # NaN or inf (JSON allows them) would poison every step
            if isinstance(value, float) and not math.isfinite(value):
                raise bad(f"optimizer_kwargs.{name}", "must be a finite number", value)
        if not isinstance(self.optimizer_type, str):
            raise bad("optimizer_type", f"a torch.optim class name (e.g. 'AdamW') or one of {PEFT_OPTIMIZER_TYPES}")
        if not isinstance(self.use_amp, bool) and self.use_amp != "auto":
            raise bad("use_amp", "valid: true, false, or \"auto\" (bf16 autocast only where the hardware runs bf16 natively)")
        for key in ("compile", "use_gc", "autocast_adapter_dtype", "trust_remote_code", "merge_for_eval"):
            if not isinstance(getattr(self, key), bool):
                raise bad(key, "must be true or false")
        if self.track_memory not in ("train", "run"):
            raise bad("track_memory", "valid: 'train', 'run'")
        if self.loss_on not in LOSS_ON:
            raise bad("loss_on", f"valid: {', '.join(LOSS_ON)}")
        if self.batch_order not in BATCH_ORDERS:
            raise bad("batch_order", f"valid: {', '.join(BATCH_ORDERS)}")
        if not isinstance(self.device, str) or not (self.device in ("auto", "cpu") or self.device.startswith("cuda")):
            raise bad("device", "valid: 'auto', 'cpu', 'cuda', 'cuda:<index>'")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not (
        isinstance(value, float) and math.isnan(value)
    )


def config_keys() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


def check_keys(params: dict[str, Any], source: str) -> None:
    """Raise a ConfigError naming `source` for every key TrainConfig does not have."""
    valid = config_keys()
    for key in params:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"unknown training parameter '{key}' in {source}.{hint} Valid keys: {', '.join(valid)}"
            )


def merge_params(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` on top of `base`; the nested dicts merge key by key."""
    merged = dict(base)
    for key, value in override.items():
        if key in NESTED_KEYS and isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def read_json_file(path: str | Path, what: str = "JSON file") -> Any:
    """Parse a JSON file; a syntax error names the file, line and column."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {path}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"malformed JSON in {path}, line {error.lineno}, column {error.colno}: {error.msg}"
        ) from None


def parse_set_options(assignments: list[str]) -> dict[str, Any]:
    """Parse `--set key=value` options; a value is JSON where it parses (20, 1e-3, true, {...}), else a string.

    Dotted keys set one entry of a nested dict: `--set optimizer_kwargs.lr=1e-3`.
    """
    params: dict[str, Any] = {}
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {assignment!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if "." in key:
            outer, inner = key.split(".", 1)
            if outer not in NESTED_KEYS:
                raise ConfigError(
                    f"--set {assignment!r}: dotted keys are only valid for {', '.join(NESTED_KEYS)}"
                )
            params.setdefault(outer, {})[inner] = value
        else:
            if key in NESTED_KEYS and key in params and isinstance(value, dict):
                params[key] = {**params[key], **value}
            else:
                params[key] = value
    check_keys(params, "--set")
    return params


def build_train_config(
    task_defaults: dict[str, Any],
    training_params: dict[str, Any] | None = None,
    training_params_source: str = "training_params.json",
    overrides: dict[str, Any] | None = None,
    overrides_source: str = "--set",
) -> TrainConfig:
    """Merge task defaults, an experiment's training params and command-line overrides into a TrainConfig."""
    training_params = training_params or {}
    overrides = overrides or {}
    if not isinstance(training_params, dict):
        raise ConfigError(f"{training_params_source} must hold a JSON object, got {type(training_params).__name__}")
    check_keys(training_params, training_params_source)
    check_keys(overrides, overrides_source)
    merged = merge_params(merge_params(task_defaults, training_params), overrides)
    try:
        return TrainConfig(**merged)
    except TypeError as error:  # a required key is missing
        raise ConfigError(f"incomplete training parameters: {error}") from None
    except ConfigError as error:
        raise with_origin(error, [(overrides, overrides_source), (training_params, training_params_source)]) from None


def with_origin(error: ConfigError, layers: list[tuple[dict[str, Any], str]]) -> ConfigError:
    """`error` with where its key's value came from: the first of `layers` (params, source name), highest
    precedence first, that sets the key, else the task's defaults. Unchanged when the error has no key."""
    if error.key is None:
        return error
    origin = next((source for params, source in layers if _has_key(params, error.key)), "the task's defaults")
    return ConfigError(f"{error}, from {origin}", key=error.key)


def _has_key(params: dict[str, Any], dotted_key: str) -> bool:
    outer, _, inner = dotted_key.partition(".")
    if outer not in params:
        return False
    return not inner or (isinstance(params[outer], dict) and inner in params[outer])
