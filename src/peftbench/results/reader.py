"""Reading result files, peftbench's own and the PEFT suite's published ones, into RunResult (results/record.py).

`read_result_file` is the one way to read a result file: status checks, sweeps, summaries and reports all use
it. A result file is untrusted data: it is parsed with `json` only, every field is type-checked, and a file
that cannot be used becomes one warning line, never an exception. The `peftbench` section is read field by
field from RunResult's own definition (a new field needs no code here); the PEFT suite's sections, whose
layout is fixed, fill the same fields where the `peftbench` section does not (docs/ARCHITECTURE.md).

`load_results` gives the analysis its view of successful runs (`RunRecord`: metrics under the friendly names
of analysis.metrics), each built from the run's RunResult.
"""

from __future__ import annotations

import json
import math
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Optional

from peftbench.analysis.metrics import METRICS, UNIT_RANGES
from peftbench.config import ConfigError, learning_rate_problem, read_untrusted_text
from peftbench.printable import printable
from peftbench.results.inference_record import INFERENCE_DIR, InferenceResult, inference_file_of, mode_overhead, read_inference_file
from peftbench.results.record import PEFTBENCH, RunResult, peftbench_fields
from peftbench.results.writer import CHECKPOINTS_DIR

# Beyond it a curve step is corrupt data, not a run (metrics have their own ranges, a learning rate its own check).
MAX_STEP = 1e12

PEFT_SUITE_SOURCE = "peft-suite"  # RunRecord.source of a result the PEFT suite wrote (else "peftbench")
FULL_FINETUNING = "full-finetuning"  # peft_type of a run without a PEFT config, as the PEFT suite names it

# How the PEFT suite names the headline score, the forgetting measure and the task, per modality.
SCORE_KEYS = {"accuracy": "math", "dino_similarity": "image-gen"}
FORGETTING_KEYS = ("forgetting", "drift")


# ----------------------------------------------------------------------------- one file -> RunResult


@dataclass
class ResultRead:
    """One file, read. `result` is None when the file is missing, unreadable or not a result file at all."""

    path: Path
    result: Optional[RunResult] = None
    error: Optional[str] = None  # why the file could not be read (one line)
    missing: bool = False
    not_a_result: bool = False  # JSON, but not a result file (a sweep summary, a config): ignored quietly
    source: str = PEFT_SUITE_SOURCE  # "peftbench" when the file has peftbench's own section
    problems: list[str] = field(default_factory=list)  # fields that were left out of `result`, and why

    @property
    def status(self) -> Optional[str]:
        """The run's status, or None when there is no readable result."""
        return self.result.status if self.result is not None and self.result.status != "unknown" else None


def read_result_file(path: str | Path) -> ResultRead:
    """Read and parse one result file; never raises for what the file holds."""
    path = Path(path)
    try:
        data = json.loads(read_untrusted_text(path))
    except FileNotFoundError:
        return ResultRead(path, error="no such file", missing=True)
    except json.JSONDecodeError as error:
        return ResultRead(path, error=f"malformed JSON ({error.msg}, line {error.lineno} column {error.colno})")
    except ConfigError as error:  # not a regular file, too big, not UTF-8
        return ResultRead(path, error=str(error).replace(f"{path} ", "", 1)[:200])
    except (OSError, RecursionError, ValueError) as error:
        return ResultRead(path, error=f"cannot be read ({type(error).__name__}: {error})"[:200])
    return parse_result(data, path)


def parse_result(data: Any, path: Path) -> ResultRead:
    """A decoded result file as a RunResult: the `peftbench` section where it has a usable value, else the
    PEFT suite's sections."""
    own = data.get(PEFTBENCH) if isinstance(data, dict) and isinstance(data.get(PEFTBENCH), dict) else {}
    if not own and not (isinstance(data, dict) and isinstance(data.get("run_info"), dict)):
        return ResultRead(path, not_a_result=True)
    if not own and not isinstance(data.get("train_info"), dict):
        return ResultRead(path, error="has run_info but no train_info object; not a usable result file")
    problems = _Problems()
    values = {**_suite_values(data, problems), **_own_values(own, problems)}
    return ResultRead(path, RunResult(**values), problems=problems.messages,
                      source="peftbench" if own else PEFT_SUITE_SOURCE)


@cache
def _kinds() -> dict[str, type]:
    """Each `peftbench` field's JSON kind (float, int, str, bool, list, dict), from RunResult's annotations."""
    hints = typing.get_type_hints(RunResult)
    kinds = {}
    for f in peftbench_fields():
        hint = hints[f.name]
        arms = [arm for arm in typing.get_args(hint) if arm is not type(None)] if typing.get_origin(hint) is typing.Union else [hint]
        kinds[f.name] = typing.get_origin(arms[0]) or arms[0]
    return kinds


def _own_values(own: Mapping[str, Any], problems: _Problems) -> dict[str, Any]:
    """The `peftbench` section's fields that hold a value of their declared kind; the other keys go to `extra`."""
    kinds = _kinds()
    values: dict[str, Any] = {"extra": {key: value for key, value in own.items() if key not in kinds}}
    for name, kind in kinds.items():
        value = own.get(name)
        if value is None:
            continue
        if kind in (int, float):
            number = _number(own, name, PEFTBENCH, problems)
            # an integer stays one (a seed, a byte count); any other number is a float
            value = None if number is None else value if kind is int and isinstance(value, int) else number
        elif not isinstance(value, kind):
            problems.add(f"{PEFTBENCH}[{name!r}] is {_short(value)}, not {_KIND_NAMES[kind]}")
            value = None
        if value is not None:
            values[name] = value
    return values


_KIND_NAMES = {str: "a string", bool: "true or false", list: "a list", dict: "an object"}


def _suite_values(data: Mapping[str, Any], problems: _Problems) -> dict[str, Any]:
    """The RunResult fields that the PEFT suite's sections hold (the layout its published results have)."""
    run_info, train_info = _dict(data, "run_info"), _dict(data, "train_info")
    metrics_log = train_info.get("metrics")
    if not isinstance(metrics_log, list):
        if metrics_log is not None:
            problems.add(f"train_info['metrics'] is {_short(metrics_log)}, not a list")
        metrics_log = []
    metrics_log = [m for m in metrics_log if isinstance(m, dict)]
    final = metrics_log[-1] if metrics_log else {}
    score_name = _score_key(final, "test") or "accuracy"
    forgetting_key = next((k for k in FORGETTING_KEYS if k in final), "forgetting")
    valid_entries = [m for m in metrics_log if _score_key(m, "valid")]
    where_final = "train_info.metrics[-1]"
    train_tokens = _number(final, "train total tokens", where_final, problems)
    train_time = _number(train_info, "train_time", "train_info", problems)
    total_time = _number(run_info, "total_time", "run_info", problems)
    eval_times = [_number(m, "eval time", "train_info.metrics", problems) for m in metrics_log]
    eval_times = [t for t in eval_times if t is not None]
    train_config = _dict(run_info, "train_config")
    peft_config = run_info.get("peft_config")
    model_info = _dict(_dict(data, "meta_info"), "model_info")
    values = {
        "task": SCORE_KEYS.get(score_name) or ("image-gen" if forgetting_key == "drift" else "math"),
        "status": _text(train_info.get("status")) or "unknown",
        "error_msg": _text(run_info.get("error_msg")) or "",
        "experiment_name": _text(run_info.get("experiment_name")) or "",
        "created_at": _text(run_info.get("created_at")),
        "seed": train_config.get("seed"),
        "train_config": train_config,
        "peft_config": peft_config if isinstance(peft_config, dict) else None,
        # the PEFT suite's own reading: no adapter config means full fine-tuning
        "peft_type": _text(peft_config.get("peft_type")) if isinstance(peft_config, dict)
        else FULL_FINETUNING if "peft_config" in run_info and peft_config is None else None,
        "score_name": score_name,
        "forgetting_name": forgetting_key,
        "metrics": [m for m in metrics_log if not _score_key(m, "test")],
        "test_score": _number(final, f"test {score_name}", where_final, problems),
        "valid_score": _number(valid_entries[-1], f"valid {_score_key(valid_entries[-1], 'valid')}",
                               "train_info.metrics", problems) if valid_entries else None,
        "train_curve": [{"step": m.get("step"), "loss": m["train loss"]} for m in metrics_log if "train loss" in m],
        "valid_curve": [{"step": m.get("step"), "score": m.get(f"valid {score_name}")} for m in valid_entries],
        "final_train_loss": _number(final, "train loss", where_final, problems),
        # NaN: not measured (the PEFT suite's drift of full fine-tuning, which has no adapter to switch off)
        "forgetting": None if _is_nan(final.get(forgetting_key)) else _number(final, forgetting_key, where_final,
                                                                              problems),
        "train_tokens": int(train_tokens or 0),
        "train_samples": int(_number(final, "train samples", where_final, problems) or 0),
        "suite_train_time_s": train_time,
        "eval_time_s": sum(eval_times) if eval_times else None,
        "total_time_s": total_time,  # the only total a published file has; peftbench's own section overrides it
        "suite_total_time_s": total_time,
        "tokens_per_second": train_tokens / train_time if train_tokens and train_time else None,
        "checkpoint_size_bytes": _number(train_info, "file_size", "train_info", problems),
        "trainable_params": _number(train_info, "num_trainable_params", "train_info", problems),
        "total_params": _number(train_info, "num_total_params", "train_info", problems),
        "peak_memory_total_bytes": _number(train_info, "accelerator_memory_max", "train_info", problems),
        "memory_reserved_avg": _number(train_info, "accelerator_memory_reserved_avg", "train_info", problems),
        "memory_reserved_99th": _number(train_info, "accelerator_memory_reserved_99th", "train_info", problems),
        "model_id": _text(model_info.get("model_id")),
        "dataset_info": _dict(_dict(data, "meta_info"), "dataset_info"),
    }
    if isinstance(values["seed"], bool) or not isinstance(values["seed"], int):
        values["seed"] = None
    return values


def _score_key(entry: Mapping[str, Any], prefix: str) -> str | None:
    """The `<prefix> <score>` key of a PEFT-suite metrics entry (`test accuracy`, `valid dino_similarity`)."""
    for score in SCORE_KEYS:
        if f"{prefix} {score}" in entry:
            return score
    return None


# ----------------------------------------------------------------------------- helpers


class _Problems:
    """Collects what is wrong with one file, so that the file yields one warning line."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def add(self, message: str) -> None:
        self.messages.append(message)


def summary_line(messages: list[str], most: int = 4) -> str | None:
    """One line: the first few distinct problems, then how many more."""
    distinct = list(dict.fromkeys(messages))
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


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _string(value: Any) -> str | None:
    """A non-empty string, stripped of control characters and escape sequences (they would reach terminals)."""
    text = printable(value) if isinstance(value, str) else None
    return text or None


# ----------------------------------------------------------------------------- the analysis's view


@dataclass(frozen=True)
class CurvePoint:
    step: float
    value: float


@dataclass
class RunRecord:
    """One successful run as the analysis sees it: names made printable, metrics under the friendly names of
    analysis.metrics, values outside their physical range left out, curves and per-item results checked. What
    it does not derive, it reads from `result`, the run's RunResult."""

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
    source: str = PEFT_SUITE_SOURCE  # or "peftbench"
    result: RunResult = field(default_factory=RunResult)
    # `peftbench infer`'s measurement of this experiment: RESULTS/inference/<the result file's stem>.json
    inference: InferenceResult | None = None

    @property
    def sweep(self) -> dict[str, Any] | None:
        """peftbench.sweep: the run's place in a sweep (runners.request.SweepRole), if any."""
        sweep = self.result.extra.get("sweep")
        return sweep if isinstance(sweep, dict) else None

    @property
    def conversion(self) -> dict[str, Any] | None:
        """peftbench.conversion: where a converted adapter came from, if it is one."""
        conversion = self.result.extra.get("conversion")
        return conversion if isinstance(conversion, dict) else None

    @property
    def train_config(self) -> dict[str, Any]:
        """run_info.train_config, as written (untrusted)."""
        return self.result.train_config or {}

    @property
    def precision(self) -> str | None:
        """peftbench.precision (None in results written before peftbench recorded it)."""
        return _string(self.result.precision)

    @property
    def hardware(self) -> dict[str, Any] | None:
        """peftbench.hardware: the CPU model and flags, or the GPU, that decided the precision."""
        return self.result.hardware

    @property
    def higher_is_better(self) -> bool:
        """Whether the task's score is higher-is-better, as the file declares (the PEFT suite's: true)."""
        return self.result.higher_is_better is not False

    @property
    def forgetting_name(self) -> str:
        """The final metrics entry's forgetting key: "forgetting", or "drift" for image generation."""
        return _string(self.result.forgetting_name) or "forgetting"

    @property
    def forgetting_higher_is_better(self) -> bool:
        return self.result.forgetting_higher_is_better is True

    @property
    def throughput_unit(self) -> str | None:
        """"tokens/s", "images/s": the unit of the `throughput` metric."""
        return _string(self.result.throughput_unit) or ("tokens/s" if self.metrics.get("throughput") is not None
                                                       else None)

    @property
    def images(self) -> dict[str, Any] | None:
        """peftbench.images: what an image task saved with the run, paths relative to the result file's folder
        (untrusted: the gallery checks them)."""
        images = self.result.extra.get("images")
        return images if isinstance(images, dict) else None

    @property
    def device(self) -> str | None:
        """peftbench.device, e.g. "cpu" or "cuda:0 (NVIDIA H100)"."""
        return _string(self.result.device)


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


def run_record(read: ResultRead) -> tuple[RunRecord | None, str | None]:
    """The analysis's record of a successful run, and one warning line (None when all is well)."""
    result, problems = read.result, _Problems()
    problems.messages.extend(read.problems)
    if result.status != "success":
        error = printable(result.error_msg)
        reason = f": {error[:120]}" if error else ""
        return None, f"status {printable(result.status)!r}{reason}; left out"
    source = read.source
    experiment_name = _string(result.experiment_name)
    method, config_name = _string(result.method), _string(result.name)
    if experiment_name is None:
        experiment_name = f"{method}/{config_name}" if method and config_name else printable(read.path.stem)
    if method is None or config_name is None:
        head, _, tail = experiment_name.partition("/")
        method, config_name = method or head, config_name or (tail or head)
    learning_rate = _number(_dict(result.train_config or {}, "optimizer_kwargs"), "lr",
                            "run_info.train_config.optimizer_kwargs", problems)
    if learning_rate is not None and learning_rate_problem(learning_rate):
        problems.add(f"learning rate {learning_rate:.3g} {learning_rate_problem(learning_rate)}; left out")
        learning_rate = None
    metrics = _analysis_metrics(result, source, problems)
    inference = _joined_inference(read.path)
    metrics.update(_inference_metrics(inference))
    record = RunRecord(
        path=read.path,
        experiment_name=experiment_name,
        method=method,
        config_name=config_name,
        task=_string(result.task) or "math",
        peft_type=_string(result.peft_type),
        seed=result.seed if isinstance(result.seed, int) and not isinstance(result.seed, bool) else None,
        score_name=_string(result.score_name) or "accuracy",
        metrics=metrics,
        per_item_correct=_per_item_correct(result.per_item_correct, source, problems),
        predictions=_predictions(result.predictions, problems),
        train_curve=_curve(result.train_curve, "loss", "train_curve", problems, UNIT_RANGES["loss"]),
        valid_curve=_curve(result.valid_curve, "score", "valid_curve", problems, UNIT_RANGES["score"]),
        learning_rate=learning_rate,
        source=source,
        result=result,
        inference=inference,
    )
    _drop_out_of_range(metrics, problems)
    return record, summary_line(problems.messages)


def _analysis_metrics(result: RunResult, source: str, problems: _Problems) -> dict[str, float | None]:
    own = source == "peftbench"
    harness = result.extra.get("harness") if isinstance(result.extra.get("harness"), dict) else {}
    return {
        "test_score": result.test_score,
        "valid_score": result.valid_score,
        # The memory axis: peak bytes of live tensors in training (peftbench's tracker, on every device). The
        # PEFT suite publishes only its whole run's peak *reserved* memory, the closest figure it has.
        "peak_memory": result.peak_memory_train_allocated_bytes if own else result.peak_memory_total_bytes,
        # Process level, secondary: peak RSS on CPU, peak reserved on CUDA, training alone and the whole run.
        "peak_memory_process": result.peak_memory_train_bytes if own else result.peak_memory_total_bytes,
        "peak_memory_total": result.peak_memory_total_bytes,
        "memory_reserved_avg": result.memory_reserved_avg,
        "memory_reserved_99th": result.memory_reserved_99th,
        "train_time": result.train_time_s if result.train_time_s is not None else result.suite_train_time_s,
        "eval_time": result.eval_time_s,
        "total_time": result.total_time_s,
        "tokens_per_second": result.tokens_per_second,
        # training units per second in the task's own unit (RunRecord.throughput_unit)
        "throughput": result.throughput if result.throughput is not None else result.tokens_per_second,
        "file_size": result.checkpoint_size_bytes,
        "trainable_params": result.trainable_params,
        "total_params": result.total_params,
        "forgetting": result.forgetting,
        "final_train_loss": result.final_train_loss,
        "harness_change": _number(harness, "mean_difference", "peftbench.harness", problems),
    }


def _joined_inference(result_file: Path) -> InferenceResult | None:
    """The successful inference measurement of the training result `result_file`, joined by its stem."""
    inference, _ = read_inference_file(inference_file_of(result_file))
    return inference if inference is not None and inference.status == "success" else None


def _inference_metrics(inference: InferenceResult | None) -> dict[str, float | None]:
    """The inference metrics (None where never measured: a dash in the tables, never 0)."""
    if inference is None:
        return dict.fromkeys(("inference_overhead", "inference_overhead_unmerged", "inference_overhead_converted"))
    return {"inference_overhead": mode_overhead(inference, inference.headline_mode or ""),
            "inference_overhead_unmerged": mode_overhead(inference, "unmerged"),
            "inference_overhead_converted": mode_overhead(inference, "converted")}


def _curve(entries: list[dict[str, Any]], value_key: str, where: str, problems: _Problems,
           value_range: tuple[float, float]) -> list[CurvePoint]:
    points: list[CurvePoint] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            continue
        step = _number(entry, "step", f"{where}[{i}]", problems)
        value = _number(entry, value_key, f"{where}[{i}]", problems)
        if step is None or value is None:
            continue
        if not (0 <= step <= MAX_STEP and value_range[0] <= value <= value_range[1]):
            problems.add(f"{where} has a point outside the possible range (step {step:.3g}, value {value:.3g}); left out")
            continue
        points.append(CurvePoint(step, value))
    return points


def _per_item_correct(value: list[Any], source: str, problems: _Problems) -> list[float] | None:
    if source != "peftbench":
        return None
    if not all(finite_number(v) is not None and 0 <= v <= 1 for v in value):
        problems.add("peftbench.per_item_correct is not a list of numbers in [0, 1]; paired statistics skip this run")
        return None
    return [float(v) for v in value]


def _predictions(value: list[Any], problems: _Problems) -> list[dict[str, Any]] | None:
    """Each item's texts as strings (or None) and its score as a number; anything else makes them unusable."""
    if not value:
        return None
    fields = ("input", "prediction", "target")
    if not all(isinstance(item, dict) and all(item.get(f) is None or isinstance(item.get(f), str) for f in fields)
               for item in value):
        problems.add("peftbench.predictions is not a list of {input, prediction, target, score}; not shown")
        return None
    return [{**{f: item.get(f) for f in fields}, "score": finite_number(item.get("score"))} for item in value]


def _drop_out_of_range(metrics: dict[str, float | None], problems: _Problems) -> None:
    """Values outside their metric's physical range (analysis.metrics.UNIT_RANGES) become None, with a problem."""
    for name, value in metrics.items():
        if value is not None and not METRICS[name].in_range(value):
            low, high = METRICS[name].valid_range
            problems.add(f"{name} {value:.3g} is outside its possible range [{low:.3g}, {high:.3g}]; left out")
            metrics[name] = None


# ----------------------------------------------------------------------------- folders of files


def _result_files(paths: Iterable[str | Path], warnings: list[LoadWarning]) -> list[Path]:
    files: dict[Path, None] = {}
    for given in paths:
        path = Path(given)
        if path.is_dir():
            for found in sorted(path.rglob("*.json")):
                inner = found.relative_to(path).parts[:-1]
                # saved adapters (checkpoints/) and hidden folders hold configs, not results; inference/ holds
                # what `peftbench infer` measured, which each result joins by name
                if found.is_file() and not any(part in (CHECKPOINTS_DIR, INFERENCE_DIR) or part.startswith(".")
                                               for part in inner):
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
        read = read_result_file(path)
        if read.not_a_result:
            ignored.append(path)
            continue
        if read.result is None:
            warnings.append(LoadWarning(path, read.error or "not a usable result file"))
            continue
        record, warning = run_record(read)
        if warning:
            warnings.append(LoadWarning(path, warning))
        if record is not None:
            records.append(record)
    return LoadedResults(records, warnings, ignored)
