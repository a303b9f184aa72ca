"""TrainConfig: the typed, validated training parameters of one run.

The engine's `TrainConfig` holds only what every task shares (seed, steps, batch sizes, optimizer, scheduler,
precision, evaluation cadence, device). Each task declares its own parameters as a dataclass subclass of it
(`Task.config_class`: the text tasks' `TextTrainConfig` in tasks/text_config.py, image generation's
`ImageGenConfig` in tasks/image_gen/config.py), typed, with defaults and a `help` line in each field's
metadata. The keys of the PEFT suite's `default_training_params.json` files are fields of those classes, so its
experiment folders load unchanged.

A value comes from, in order of precedence: `--set key=value`, the experiment's `training_params.json`, the
task's defaults. `--set` merges dicts key by key; `training_params.json` merges the class's `nested_keys` key by
key and replaces every other key whole (a task reproducing a suite that merges shallowly keeps that).

This module imports no torch, so configs are checked before any model loads.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import json
import math
import os
import stat
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional, Union


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
CPU_MATMUL_KERNELS = ("auto", "onednn", "torch")  # see training/onednn_linear.py
# AdaLoRA's total_step (the length of its rank-budget schedule): the run's max_steps, or the config's own value,
# which the PEFT suite's scripts keep whatever max_steps is (its published configs set it to their max_steps)
ADALORA_TOTAL_STEPS = ("max_steps", "config")


def param(default: Any = dataclasses.MISSING, help: str = "", **kwargs: Any) -> Any:  # noqa: A002 - the field's help
    """A config field with a help line (shown by `describe_params` and in the docs)."""
    if isinstance(default, (dict, list)):
        value = default
        kwargs["default_factory"] = lambda: json.loads(json.dumps(value))  # a fresh copy per config
    elif default is not dataclasses.MISSING:
        kwargs["default"] = default
    return field(metadata={"help": help}, **kwargs)


@dataclass
class TrainConfig:
    """The parameters every task shares. See docs/engine.md for the meaning of each key; a task's own
    parameters are the fields of its subclass."""

    # Keys whose dict values training_params.json merges key by key over the task's defaults.
    nested_keys: ClassVar[tuple[str, ...]] = ("optimizer_kwargs",)

    # --- keys of the PEFT suite (its default_training_params.json, in both of its benchmarks) ---
    model_id: str = param(help="base model: a hub id or a local folder in the same format")
    dtype: str = param("float32", help="weights' dtype: float32, float16 or bfloat16")
    batch_size: int = param(4, help="training batch size")
    batch_size_eval: int = param(50, help="evaluation batch size")
    max_steps: int = param(5000, help="training steps")
    eval_steps: int = param(250, help="validation every this many steps")
    compile: bool = param(False, help="torch.compile the trained model")
    use_gc: bool = param(False, help="gradient checkpointing, through the model's own API")
    seed: int = param(0, help="seed of the run")
    grad_norm_clip: float = param(1.0, help="gradient-norm clipping; 0 disables it")
    optimizer_type: str = param("AdamW", help="a torch.optim class name, or lora+, lora-fa, riemannian (peft.optimizers)")
    optimizer_kwargs: dict[str, Any] = param({"lr": 1e-4, "weight_decay": 0.1}, help="the optimizer's arguments; must hold lr")
    lr_scheduler: Optional[str] = param("cosine", help="'cosine' (linear warm-up then cosine decay) or null (constant)")
    use_amp: Union[bool, str] = param(False, help='bf16 autocast: true, false or "auto" (where the hardware runs bf16 natively)')
    autocast_adapter_dtype: bool = param(True, help="peft keeps adapter weights in fp32 on a bf16/fp16 model")

    # --- peftbench's own ---
    warmup_ratio: float = param(0.1, help="fraction of max_steps with linear warm-up (cosine schedule)")
    valid_loss_steps: int = param(0, help="the validation loss (the training loss on the validation rows, no generation) every this many steps; 0: never. A halving sweep's rungs decide on it")
    device: str = param("auto", help="'auto' (cuda if available, else cpu), 'cpu', 'cuda', 'cuda:<index>'")
    num_threads: Optional[int] = param(None, help="torch CPU threads; null leaves torch's default")
    trust_remote_code: bool = param(False, help="run a model repository's code (never unless asked)")
    track_memory: str = param("train", help="tensor-level memory tracking: 'train' or 'run' (also evaluation)")
    merge_for_eval: bool = param(False, help="evaluate on a merged copy of the model (adapters peft can merge)")
    cpu_matmul: str = param("auto", help="fp32 linear layers on a CPU: 'torch' (its own BLAS), 'onednn', or 'auto' (oneDNN where it is faster)")
    adalora_total_step: str = param("max_steps", help="AdaLoRA's rank schedule: over 'max_steps' (the run) or 'config' (adapter_config.json's total_step, as the PEFT suite)")

    def __post_init__(self) -> None:
        self.validate()

    def bad(self, key: str, why: str, value: Any = dataclasses.MISSING) -> ConfigError:
        """A ConfigError for the value of `key` (its current value unless `value` is given)."""
        shown = getattr(self, key, None) if value is dataclasses.MISSING else value
        return ConfigError(f"invalid value for '{key}': {shown!r} ({why})", key=key)

    def seed_fixed_by(self) -> Optional[str]:
        """The setting that makes a run the same whatever its seed (every random draw fixed), or None: then runs
        at different seeds differ, and their spread is seed noise."""
        return None

    def validate(self) -> None:
        """The shared keys' checks; a subclass calls this first, then checks its own keys."""
        bad = self.bad
        check_declared_types(self)
        if not self.model_id:
            raise bad("model_id", "must be a hub id or a local folder")
        if self.dtype not in DTYPES:
            raise bad("dtype", f"valid: {', '.join(DTYPES)}")
        for key in ("batch_size", "batch_size_eval", "max_steps", "eval_steps"):
            if getattr(self, key) <= 0:
                raise bad(key, "must be a positive integer")
        if self.valid_loss_steps < 0:
            raise bad("valid_loss_steps", "must be an integer >= 0; 0: never")
        if self.num_threads is not None and self.num_threads <= 0:
            raise bad("num_threads", "must be a positive integer or null")
        if not _is_number(self.grad_norm_clip) or not 0 <= self.grad_norm_clip < math.inf:
            raise bad("grad_norm_clip", "must be a finite number >= 0; 0 disables clipping")
        if not 0 <= self.warmup_ratio < 1:
            raise bad("warmup_ratio", "must be in [0, 1)")
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise bad("lr_scheduler", "valid: null or 'cosine'")
        if "lr" not in self.optimizer_kwargs:
            raise bad("optimizer_kwargs", "must contain 'lr'")
        lr_problem = learning_rate_problem(self.optimizer_kwargs["lr"])
        if lr_problem:
            raise bad("optimizer_kwargs.lr", f"the learning rate {lr_problem}", self.optimizer_kwargs["lr"])
        for name, value in self.optimizer_kwargs.items():  # NaN or inf (JSON allows them) would poison every step
            if isinstance(value, float) and not math.isfinite(value):
                raise bad(f"optimizer_kwargs.{name}", "must be a finite number", value)
        if not isinstance(self.use_amp, bool) and self.use_amp != "auto":
            raise bad("use_amp", "valid: true, false, or \"auto\" (bf16 autocast only where the hardware runs bf16 natively)")
        if self.cpu_matmul not in CPU_MATMUL_KERNELS:
            raise bad("cpu_matmul", f"valid: {', '.join(CPU_MATMUL_KERNELS)}")
        if self.cpu_matmul == "onednn" and (self.use_gc or self.compile):
            # checkpointing recomputes layers in the backward pass, where the oneDNN layers are out of reach (the
            # recomputation would differ from the forward); compiled code runs inductor's own kernels
            raise bad("cpu_matmul", "'onednn' works without use_gc and compile; use 'torch' or 'auto' with them")
        if self.adalora_total_step not in ADALORA_TOTAL_STEPS:
            raise bad("adalora_total_step", f"valid: {', '.join(ADALORA_TOTAL_STEPS)}")
        if self.track_memory not in ("train", "run"):
            raise bad("track_memory", "valid: 'train', 'run'")
        if not (self.device in ("auto", "cpu") or self.device.startswith("cuda")):
            raise bad("device", "valid: 'auto', 'cpu', 'cuda', 'cuda:<index>'")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Far beyond any rate that trains (at 1e6 every model diverges within steps, which a test of divergence asks
# for): a config or a result file with a higher rate holds a mistake or corrupt data.
MAX_LEARNING_RATE = 1e6


def learning_rate_problem(lr: Any) -> Optional[str]:
    """Why `lr` is no learning rate ("must be a finite number in [0, 1e+06]"), or None when it is one. Every
    place that takes a learning rate (a config, a sweep, a result file) checks it here."""
    if _is_number(lr) and 0 <= lr <= MAX_LEARNING_RATE:
        return None
    return f"must be a finite number in [0, {MAX_LEARNING_RATE:g}]"


def format_lr(lr: float) -> str:
    """A learning rate as every name and label shows it: the shortest text that reads back as exactly `lr` (0.001,
    3.16e-05), so that a result file's name and a report's label name the same rate."""
    return repr(float(lr))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not (
        isinstance(value, float) and math.isnan(value)
    )


def type_name(annotation: Any) -> str:
    """An annotation as a user reads it: `an integer`, `a string or a list of strings or null`."""
    if annotation is type(None):
        return "null"
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in args)
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", Any: "any value"}
    if annotation in names:
        return names[annotation]
    origin = typing.get_origin(annotation)
    if origin in (list, tuple):
        return f"a list of {type_name(args[0]).removeprefix('a ').removeprefix('an ')}s" if args else "a list"
    if origin is dict:
        return "a JSON object"
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


def fits(value: Any, annotation: Any, *, integral_float_is_int: bool = False) -> Optional[bool]:
    """Whether a JSON value fits a type annotation; None where the annotation is beyond this check (a nested
    class: its own code checks it). bool is never an integer, an integer is a number; with
    `integral_float_is_int`, 16.0 is an integer too (peft's adapter configs: JSON writers produce it, and peft
    takes it), which a training parameter is not (`range(16.0)` fails)."""

    def fit(item: Any, arm: Any) -> Optional[bool]:
        return fits(item, arm, integral_float_is_int=integral_float_is_int)

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return True
    if annotation is type(None):
        return value is None
    if origin in (Union, types.UnionType):
        verdicts = [fit(value, arm) for arm in args]
        return True if True in verdicts else None if None in verdicts else False
    if origin is typing.Literal:  # peft accepts patterns beyond its Literal (e.g. "pissa_niter_16"): types only
        return any(type(value) is type(arg) for arg in args)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            integral_float_is_int and isinstance(value, float) and value.is_integer()
        )
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return isinstance(value, str) and value in {member.value for member in annotation}
    if annotation in (list, tuple) or origin in (list, tuple):
        if not isinstance(value, list):
            return False
        if not args or (origin is tuple and Ellipsis not in args and len(args) != 1):
            return True if origin is not tuple or not args or len(value) == len(args) else False
        verdicts = [fit(item, args[0]) for item in value]
        return False if False in verdicts else None if None in verdicts else True
    if annotation is dict or origin is dict:
        return isinstance(value, dict)
    return None


def check_declared_types(config: Any) -> None:
    """Raise ConfigError for the first field whose value does not fit its declared type."""
    hints = typing.get_type_hints(type(config))
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        if fits(value, hints[item.name]) is False:
            raise ConfigError(
                f"invalid value for '{item.name}': {value!r} (must be {type_name(hints[item.name])})", key=item.name
            )


def describe_params(config_class: type[TrainConfig]) -> list[dict[str, Any]]:
    """Each parameter of a config class: name, type, default and help line (for listings and docs)."""
    hints = typing.get_type_hints(config_class)
    described = []
    for item in dataclasses.fields(config_class):
        if item.default is not dataclasses.MISSING:
            default = item.default
        elif item.default_factory is not dataclasses.MISSING:
            default = item.default_factory()
        else:
            default = None
        described.append({"name": item.name, "type": type_name(hints[item.name]), "default": default,
                          "help": item.metadata.get("help", "")})
    return described


def config_keys(config_class: type[TrainConfig]) -> list[str]:
    """The keys of `config_class`, in its order."""
    return [f.name for f in dataclasses.fields(config_class)]


def nested_config_keys(config_class: type[TrainConfig]) -> list[str]:
    """The dotted keys of the dict-valued defaults of `config_class` (`optimizer_kwargs.lr`): what `--set` may
    name inside a dict, and the keys a misplaced inner key (`lr`) is most likely meant for."""
    nested = []
    for item in dataclasses.fields(config_class):
        default = item.default_factory() if item.default_factory is not dataclasses.MISSING else item.default
        if isinstance(default, dict):
            nested += [f"{item.name}.{inner}" for inner in default]
    return nested


def closest_key(key: str, candidates: list[str]) -> Optional[str]:
    """The candidate most like `key` (difflib's ratio, at least 0.6), a dotted candidate also by its last part, so
    that `lr` finds `optimizer_kwargs.lr`; None when nothing is close."""

    def likeness(candidate: str) -> float:
        return max(difflib.SequenceMatcher(None, key, name).ratio() for name in {candidate, candidate.rpartition(".")[2]})

    best = max(candidates, key=likeness, default=None)
    return best if best is not None and likeness(best) >= 0.6 else None


def unknown_key_error(key: str, source: str, what: str, valid: list[str], suggestions: list[str]) -> ConfigError:
    """The error for a key that is not one of `valid`: the closest of `suggestions` and the valid keys."""
    close = closest_key(key, suggestions)
    hint = f" Did you mean '{close}'?" if close else ""
    return ConfigError(f"unknown {what} '{key}' in {source}.{hint} Valid keys: {', '.join(valid)}")


def check_keys(params: dict[str, Any], source: str, config_class: type[TrainConfig]) -> None:
    """Raise a ConfigError naming `source` for the first key of `params` that `config_class` does not have."""
    valid = config_keys(config_class)
    for key in params:
        if key not in valid:
            raise unknown_key_error(key, source, "training parameter", valid, valid + nested_config_keys(config_class))


def merge_params(base: dict[str, Any], override: dict[str, Any],
                 nested_keys: Optional[tuple[str, ...]] = None) -> dict[str, Any]:
    """`override` on top of `base`. Dict values of `nested_keys` (None: of every key) merge key by key; any other
    value replaces the base's whole."""
    merged = dict(base)
    for key, value in override.items():
        nested = nested_keys is None or key in nested_keys
        if nested and isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


# The most bytes read from a file that a user or another program wrote (a config, a task file, a result file):
# none comes near it, and a symlink to /dev/zero must not fill the memory.
MAX_UNTRUSTED_FILE_BYTES = 64 * 2**20


def read_untrusted_text(path: str | Path, max_bytes: int = MAX_UNTRUSTED_FILE_BYTES) -> str:
    """The UTF-8 text of a regular file of at most `max_bytes`. Anything else (a device such as /dev/zero, a pipe,
    a folder, a bigger file, bytes that are not UTF-8) is a ConfigError naming the file; FileNotFoundError
    passes through. Every file peftbench parses but did not just write itself is read through here."""
    # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below, as every non-regular file)
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise ConfigError(f"{path} is not a regular file (a device, a pipe or a folder); not read")
        data = handle.read(max_bytes + 1)  # the size a stat reports is no bound (a file may grow, /proc lies)
    if len(data) > max_bytes:
        raise ConfigError(f"{path} is larger than {max_bytes >> 20} MiB; not read")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path} is not UTF-8 text (byte {data[error.start]:#04x} at offset {error.start})") from None


def read_json_file(path: str | Path, what: str = "JSON file") -> Any:
    """Parse a JSON file; a syntax error names the file, line and column."""
    path = Path(path)
    try:
        text = read_untrusted_text(path)
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {path}") from None
    except OSError as error:
        raise ConfigError(f"{what} {path} cannot be read: {error.strerror or error}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"malformed JSON in {path}, line {error.lineno}, column {error.colno}: {error.msg}"
        ) from None
    except RecursionError:
        raise ConfigError(f"{path} nests too deeply to be a {what}") from None


def parse_set_options(assignments: list[str]) -> dict[str, Any]:
    """Parse `--set key=value` options; a value is JSON where it parses (20, 1e-3, true, {...}), else a string.

    Dotted keys set one entry of a dict-valued key: `--set optimizer_kwargs.lr=1e-3`. The keys are checked where
    the task is known: its config (`Task.build_config`) refuses a key the task does not have.
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
            if not isinstance(params.setdefault(outer, {}), dict):
                raise ConfigError(f"--set {assignment!r}: '{outer}' is set to a non-object value earlier")
            params[outer][inner] = value
        elif isinstance(value, dict) and isinstance(params.get(key), dict):
            params[key] = {**params[key], **value}
        else:
            params[key] = value
    return params


def build_train_config(
    task_defaults: dict[str, Any],
    training_params: dict[str, Any] | None = None,
    training_params_source: str = "training_params.json",
    overrides: dict[str, Any] | None = None,
    overrides_source: str = "--set",
    *,
    config_class: type[TrainConfig],
) -> TrainConfig:
    """Merge task defaults, an experiment's training params and command-line overrides into a config of the
    task's `config_class` (`Task.build_config`)."""
    training_params = training_params or {}
    overrides = overrides or {}
    if not isinstance(training_params, dict):
        raise ConfigError(f"{training_params_source} must hold a JSON object, got {type(training_params).__name__}")
    check_keys(training_params, training_params_source, config_class)
    check_keys(overrides, overrides_source, config_class)
    merged = merge_params(merge_params(task_defaults, training_params, config_class.nested_keys), overrides)
    if merged.get("trust_remote_code") is True and overrides.get("trust_remote_code") is not True:
        # a model repository's code runs only when the user asks, never because a file someone sent says so
        origin = training_params_source if "trust_remote_code" in training_params else "the task's defaults"
        raise ConfigError(
            f"{origin}: 'trust_remote_code' is true, which would run the model repository's own code; only your "
            f"command line can turn it on: {overrides_source} trust_remote_code=true", key="trust_remote_code",
        )
    try:
        return config_class(**merged)
    except TypeError as error:  # a required key is missing
        raise ConfigError(f"incomplete training parameters: {error}") from None
    except ConfigError as error:
        raise with_origin(error, [(overrides, overrides_source), (training_params, training_params_source)]) from None


def with_origin(error: ConfigError, layers: list[tuple[dict[str, Any], str]]) -> ConfigError:
    """`error` with where its key's value came from: the first of `layers` (params, source name), highest
    precedence first, that sets the key, else the task's defaults. Unchanged when the error has no key."""
    if error.key is None:
        return error
    return ConfigError(f"{error}, from {value_origin(error.key, layers)}", key=error.key)


def value_origin(dotted_key: str, layers: list[tuple[dict[str, Any], str]]) -> str:
    """Where the value of `dotted_key` came from: the first of `layers` (params, source name), highest precedence
    first, that sets it, else the task's defaults."""
    return next((source for params, source in layers if _has_key(params, dotted_key)), "the task's defaults")


def _has_key(params: dict[str, Any], dotted_key: str) -> bool:
    outer, _, inner = dotted_key.partition(".")
    if outer not in params:
        return False
    return not inner or (isinstance(params[outer], dict) and inner in params[outer])
