"""Reading result files (peftbench's own and the PEFT suite's published ones) into normalized records.

A result file is untrusted data: it is parsed with `json` only, every field is type-checked, and a
file that cannot be used becomes one warning line, never an exception. The field mapping is the one
in docs/ARCHITECTURE.md: peftbench's `peftbench` dict first, the PEFT suite's layout as fallback.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftbench.analysis.metrics import METRICS, UNIT_RANGES
from peftbench.printable import printable

# A result file is a few hundred KB; anything far larger is not one and is not worth reading.
MAX_RESULT_FILE_BYTES = 64 * 2**20
# Beyond these a curve step or a learning rate is corrupt data, not a run (metrics have their own ranges).
MAX_STEP = 1e12
MAX_LEARNING_RATE = 1e3

PEFT_SUITE_SOURCE = "peft-suite"  # RunRecord.source of a result the PEFT suite wrote (else "peftbench")
FULL_FINETUNING = "full-finetuning"  # peft_type of a run without a PEFT config, as the PEFT suite names it

# Where the engine saves adapters inside a results folder; their JSON files are configs.
CHECKPOINTS_DIR = "checkpoints"

# How the PEFT suite names the headline score, the forgetting measure and the task, per modality.
SCORE_KEYS = {"accuracy": "math", "dino_similarity": "image-gen"}
FORGETTING_KEYS = ("forgetting", "drift")


@dataclass(frozen=True)
class CurvePoint:
    step: float
    value: float


@dataclass
class RunRecord:
    """One successful run, normalized. Metrics use the friendly names of analysis.metrics."""

    path: Path
    experiment_name: str
    method: str
    config_name: str
    task: str
    peft_type: str | None
    seed: int | None
    score_name: str
    metrics: dict[str, float | None]
    per_item_correct: list[float] | None = None
    # per test item {input, prediction, target, score}, as the run wrote them (text tasks)
    predictions: list[dict[str, Any]] | None = None
    train_curve: list[CurvePoint] = field(default_factory=list)
    valid_curve: list[CurvePoint] = field(default_factory=list)
    learning_rate: float | None = None  # train_config.optimizer_kwargs.lr
    sweep: dict[str, Any] | None = None
    conversion: dict[str, Any] | None = None
    source: str = PEFT_SUITE_SOURCE  # or "peftbench"
    train_config: dict[str, Any] = field(default_factory=dict)  # run_info.train_config, as written (untrusted)
    precision: str | None = None  # peftbench.precision (peftbench results from issue 10 on)
    hardware: dict[str, Any] | None = None  # peftbench.hardware: CPU model and flags, or GPU, that decided it
    device: str | None = None  # peftbench.device, e.g. "cpu" or "cuda:0 (NVIDIA H100)"
    # The task's outputs as the file names them (the PEFT suite's files: from its metrics keys)
    higher_is_better: bool = True  # of the test/valid score
    forgetting_name: str = "forgetting"  # "drift" for image generation
    forgetting_higher_is_better: bool = False
    throughput_unit: str | None = None  # "tokens/s", "images/s"
    # images an image task saved with the run: {folder, test: [...], drift: [...], samples: [...]}, paths relative
    # to the result file's folder (untrusted: the gallery checks them)
    images: dict[str, Any] | None = None


@dataclass(frozen=True)
class LoadWarning:
    path: Path
    message: str

    def __str__(self) -> str:
        return printable(f"{self.path}: {self.message}")


@dataclass
class LoadedResults:
    records: list[RunRecord]
    warnings: list[LoadWarning]
    # Files that were JSON but not result files (sweep summaries, configs): skipped without a warning.
    ignored: list[Path]


class _Problems:
    """Collects what is wrong with one file, so that the file yields one warning line."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def add(self, message: str) -> None:
        self.messages.append(message)

    def summary(self, most: int = 4) -> str | None:
        """One line: the first few distinct problems, then how many more."""
        distinct = list(dict.fromkeys(self.messages))
        if not distinct:
            return None
        more = f"; and {len(distinct) - most} more problem(s)" if len(distinct) > most else ""
        return "; ".join(distinct[:most]) + more


def finite_number(value: Any) -> float | None:
    """`value` as a float if it is a finite JSON number (not a bool, not NaN/inf, not a 400-digit int)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _number(container: Mapping[str, Any], key: str, where: str, problems: _Problems) -> float | None:
    if key not in container or container[key] is None:
        return None
    value = container[key]
    number = finite_number(value)
    if number is None:
        kind = "not a finite number" if isinstance(value, (int, float)) and not isinstance(value, bool) else "not a number"
        problems.add(f"{where}[{key!r}] is {_short(value)}, {kind}")
    return number


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _dict(container: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = container.get(key)
    return value if isinstance(value, dict) else {}


def _string(value: Any) -> str | None:
    """A non-empty string, stripped of control characters and escape sequences (they would reach terminals)."""
    text = printable(value) if isinstance(value, str) else None
    return text or None


def _curve(entries: Any, step_key: str, value_key: str, where: str, problems: _Problems,
           value_range: tuple[float, float]) -> list[CurvePoint]:
    points: list[CurvePoint] = []
    if not isinstance(entries, list):
        return points
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            continue
        step = _number(entry, step_key, f"{where}[{i}]", problems)
        value = _number(entry, value_key, f"{where}[{i}]", problems)
        if step is None or value is None:
            continue
        if not (0 <= step <= MAX_STEP and value_range[0] <= value <= value_range[1]):
            problems.add(f"{where} has a point outside the possible range (step {step:.3g}, value {value:.3g}); left out")
            continue
        points.append(CurvePoint(step, value))
    return points


def _per_item_correct(value: Any, problems: _Problems) -> list[float] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(finite_number(v) is not None and 0 <= v <= 1 for v in value):
        problems.add("peftbench.per_item_correct is not a list of numbers in [0, 1]; paired statistics skip this run")
        return None
    return [float(v) for v in value]


def _predictions(value: Any, problems: _Problems) -> list[dict[str, Any]] | None:
    """Each item's texts as strings (or None) and its score as a number; anything else makes them unusable."""
    if value is None or value == []:
        return None
    fields = ("input", "prediction", "target")
    if not isinstance(value, list) or not all(
        isinstance(item, dict) and all(item.get(f) is None or isinstance(item.get(f), str) for f in fields)
        for item in value
    ):
        problems.add("peftbench.predictions is not a list of {input, prediction, target, score}; not shown")
        return None
    return [{**{f: item.get(f) for f in fields}, "score": finite_number(item.get("score"))} for item in value]


def _score_key(entry: Mapping[str, Any], prefix: str) -> str | None:
    """The `<prefix> <score>` key of a PEFT-suite metrics entry (`test accuracy`, `valid dino_similarity`)."""
    for score in SCORE_KEYS:
        if f"{prefix} {score}" in entry:
            return score
    return None


def parse_result(data: Any, path: Path) -> tuple[RunRecord | None, str | None, bool]:
    """Normalize one decoded result file.

    Returns (record, warning, is_result_file). `record` is None when the run cannot be used (warning
    says why) or when the JSON is not a result file at all (is_result_file False: ignored quietly).
    """
    if not isinstance(data, dict) or not isinstance(data.get("run_info"), dict):
        return None, None, False
    if not isinstance(data.get("train_info"), dict):
        return None, "has run_info but no train_info object; not a usable result file", True
    problems = _Problems()
    run_info, train_info = data["run_info"], data["train_info"]
    own = _dict(data, "peftbench")
    metrics_log = train_info.get("metrics")
    if not isinstance(metrics_log, list):
        if metrics_log is not None:
            problems.add(f"train_info['metrics'] is {_short(metrics_log)}, not a list")
        metrics_log = []
    metrics_log = [m for m in metrics_log if isinstance(m, dict)]
    final = metrics_log[-1] if metrics_log else {}

    status = _string(own.get("status")) or _string(train_info.get("status")) or "unknown"
    if status != "success":
        error = _string(own.get("error_msg")) or _string(run_info.get("error_msg")) or ""
        reason = f": {error.splitlines()[0][:120]}" if error else ""
        return None, f"status {status!r}{reason}; left out", True

    experiment_name = _string(run_info.get("experiment_name"))
    method = _string(own.get("method"))
    config_name = _string(own.get("name"))
    if experiment_name is None:
        experiment_name = f"{method}/{config_name}" if method and config_name else printable(path.stem)
    if method is None or config_name is None:
        head, _, tail = experiment_name.partition("/")
        method, config_name = method or head, config_name or (tail or head)

    score_name = _string(own.get("score_name")) or _score_key(final, "test") or "accuracy"
    forgetting_key = next((k for k in FORGETTING_KEYS if k in final), "forgetting")
    task = _string(own.get("task")) or SCORE_KEYS.get(score_name) or (
        "image-gen" if forgetting_key == "drift" else "math"
    )
    peft_config = run_info.get("peft_config")
    if isinstance(peft_config, dict):
        peft_type = _string(peft_config.get("peft_type"))
    else:  # the PEFT suite's own reading: no adapter config means full fine-tuning
        peft_type = FULL_FINETUNING if "peft_config" in run_info and peft_config is None else None
    train_config = _dict(run_info, "train_config")
    learning_rate = _number(_dict(train_config, "optimizer_kwargs"), "lr", "run_info.train_config.optimizer_kwargs", problems)
    if learning_rate is not None and not 0 <= learning_rate <= MAX_LEARNING_RATE:
        problems.add(f"learning rate {learning_rate:.3g} is outside [0, {MAX_LEARNING_RATE:g}]; left out")
        learning_rate = None
    seed = own.get("seed", train_config.get("seed"))
    seed = seed if isinstance(seed, int) and not isinstance(seed, bool) else None

    def own_or(own_key: str, fallback: float | None) -> float | None:
        value = _number(own, own_key, "peftbench", problems)
        return value if value is not None else fallback

    valid_entries = [m for m in metrics_log if _score_key(m, "valid")]
    last_valid = valid_entries[-1] if valid_entries else {}
    last_valid_key = f"valid {_score_key(last_valid, 'valid')}"
    train_tokens = _number(final, "train total tokens", "train_info.metrics[-1]", problems)
    train_time = own_or("train_time_s", _number(train_info, "train_time", "train_info", problems))
    eval_times = [_number(m, "eval time", "train_info.metrics", problems) for m in metrics_log]
    eval_times = [t for t in eval_times if t is not None]
    suite_peak = _number(train_info, "accelerator_memory_max", "train_info", problems)
    metrics = {
        "test_score": own_or("test_score", _number(final, f"test {score_name}", "train_info.metrics[-1]", problems)),
        "valid_score": own_or("valid_score", _number(last_valid, last_valid_key, "train_info.metrics", problems)),
        # The memory axis: peak bytes of live tensors in training (peftbench's tracker, on every device). The
        # PEFT suite publishes only its whole run's peak *reserved* memory, the closest figure it has.
        "peak_memory": _number(own, "peak_memory_train_allocated_bytes", "peftbench", problems) if own else suite_peak,
        # Process level, secondary: peak RSS on CPU, peak reserved on CUDA, training alone and the whole run.
        "peak_memory_process": own_or("peak_memory_train_bytes", None if own else suite_peak),
        "peak_memory_total": own_or("peak_memory_total_bytes", None if own else suite_peak),
        "memory_reserved_avg": _number(train_info, "accelerator_memory_reserved_avg", "train_info", problems),
        "memory_reserved_99th": _number(train_info, "accelerator_memory_reserved_99th", "train_info", problems),
        "train_time": train_time,
        "eval_time": own_or("eval_time_s", sum(eval_times) if eval_times else None),
        "total_time": own_or("total_time_s", _number(run_info, "total_time", "run_info", problems)),
        "tokens_per_second": own_or(
            "tokens_per_second", train_tokens / train_time if train_tokens and train_time else None
        ),
        # training units per second in the task's own unit (record.throughput_unit)
        "throughput": own_or("throughput", own_or("tokens_per_second",
                                                  train_tokens / train_time if train_tokens and train_time else None)),
        "file_size": own_or("checkpoint_size_bytes", _number(train_info, "file_size", "train_info", problems)),
        "trainable_params": own_or(
            "trainable_params", _number(train_info, "num_trainable_params", "train_info", problems)
        ),
        "total_params": own_or("total_params", _number(train_info, "num_total_params", "train_info", problems)),
        # NaN: not measured (the PEFT suite's drift of full fine-tuning, which has no adapter to switch off)
        "forgetting": own_or("forgetting", None if _is_nan(final.get(forgetting_key))
                             else _number(final, forgetting_key, "train_info.metrics[-1]", problems)),
        "final_train_loss": _number(final, "train loss", "train_info.metrics[-1]", problems),
        "harness_change": _number(_dict(own, "harness"), "mean_difference", "peftbench.harness", problems),
    }

    if isinstance(own.get("train_curve"), list):
        train_curve = _curve(own["train_curve"], "step", "loss", "peftbench.train_curve", problems, UNIT_RANGES["loss"])
    else:
        train_curve = _curve(metrics_log, "step", "train loss", "train_info.metrics", problems, UNIT_RANGES["loss"])
    if isinstance(own.get("valid_curve"), list):
        valid_curve = _curve(own["valid_curve"], "step", "score", "peftbench.valid_curve", problems, UNIT_RANGES["score"])
    else:
        valid_curve = _curve(valid_entries, "step", f"valid {score_name}", "train_info.metrics", problems,
                             UNIT_RANGES["score"])

    record = RunRecord(
        path=path,
        experiment_name=experiment_name,
        method=method,
        config_name=config_name,
        task=task,
        peft_type=peft_type,
        seed=seed,
        score_name=score_name,
        metrics=metrics,
        per_item_correct=_per_item_correct(own.get("per_item_correct"), problems),
        predictions=_predictions(own.get("predictions"), problems),
        train_curve=train_curve,
        valid_curve=valid_curve,
        learning_rate=learning_rate,
        sweep=own.get("sweep") if isinstance(own.get("sweep"), dict) else None,
        conversion=own.get("conversion") if isinstance(own.get("conversion"), dict) else None,
        source="peftbench" if own else PEFT_SUITE_SOURCE,
        train_config=train_config,
        precision=_string(own.get("precision")),
        hardware=own.get("hardware") if isinstance(own.get("hardware"), dict) else None,
        device=_string(own.get("device")),
        higher_is_better=own.get("higher_is_better") is not False,
        forgetting_name=_string(own.get("forgetting_name")) or forgetting_key,
        forgetting_higher_is_better=own.get("forgetting_higher_is_better") is True,
        throughput_unit=_string(own.get("throughput_unit")) or ("tokens/s" if metrics["throughput"] is not None else None),
        images=own.get("images") if isinstance(own.get("images"), dict) else None,
    )
    _drop_out_of_range(metrics, problems)
    warning = problems.summary()
    return record, warning, True


def _drop_out_of_range(metrics: dict[str, float | None], problems: _Problems) -> None:
    """Values outside their metric's physical range (analysis.metrics.UNIT_RANGES) become None, with a problem."""
    for name, value in metrics.items():
        if value is not None and not METRICS[name].in_range(value):
            low, high = METRICS[name].valid_range
            problems.add(f"{name} {value:.3g} is outside its possible range [{low:.3g}, {high:.3g}]; left out")
            metrics[name] = None


def _result_files(paths: Iterable[str | Path], warnings: list[LoadWarning]) -> list[Path]:
    files: dict[Path, None] = {}
    for given in paths:
        path = Path(given)
        if path.is_dir():
            for found in sorted(path.rglob("*.json")):
                inner = found.relative_to(path).parts[:-1]
                # saved adapters (checkpoints/) and hidden folders hold configs, not results
                if found.is_file() and not any(part == CHECKPOINTS_DIR or part.startswith(".") for part in inner):
                    files.setdefault(found.resolve(), None)
        elif path.is_file():
            files.setdefault(path.resolve(), None)
        else:
            warnings.append(LoadWarning(path, "no such file or folder"))
    return list(files)


# Below this many files loading takes well under a second: no progress bar.
PROGRESS_MIN_FILES = 200


def _with_progress(files: list[Path]) -> Iterable[Path]:
    from rich.console import Console
    from rich.progress import track

    return track(files, description="reading results", transient=True, console=Console(stderr=True))


def load_results(paths: Iterable[str | Path], *, progress: bool = False) -> LoadedResults:
    """Load every result file in `paths` (files, or folders searched recursively for *.json).

    With `progress`, many files get a transient progress bar on stderr.
    """
    warnings: list[LoadWarning] = []
    records: list[RunRecord] = []
    ignored: list[Path] = []
    files = _result_files(paths, warnings)
    for path in _with_progress(files) if progress and len(files) >= PROGRESS_MIN_FILES else files:
        try:
            if path.stat().st_size > MAX_RESULT_FILE_BYTES:
                warnings.append(LoadWarning(path, f"larger than {MAX_RESULT_FILE_BYTES >> 20} MiB; not read"))
                continue
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            warnings.append(LoadWarning(path, f"malformed JSON ({error.msg}, line {error.lineno} column {error.colno})"))
            continue
        except (OSError, UnicodeDecodeError, RecursionError, ValueError) as error:
            warnings.append(LoadWarning(path, f"cannot be read ({type(error).__name__}: {error})"[:200]))
            continue
        record, warning, is_result = parse_result(data, path)
        if not is_result:
            ignored.append(path)
            continue
        if warning:
            warnings.append(LoadWarning(path, warning))
        if record is not None:
            records.append(record)
    return LoadedResults(records, warnings, ignored)
