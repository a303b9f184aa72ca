"""Reading result files, peftbench's own and the PEFT suite's published ones, into RunResult (results/record.py).

`read_result_file` is the one way to read a result file: status checks, sweeps, summaries and reports all use
it. A result file is untrusted data: it is parsed with `json` only, every field is type-checked, and a file
that cannot be used becomes one warning line, never an exception. The `peftbench` section is read field by
field from RunResult's own definition (a new field needs no code here); the PEFT suite's sections, whose
layout is fixed, fill the same fields where the `peftbench` section does not (docs/ARCHITECTURE.md).

`read_results` reads every result file of some files and folders; the analysis builds its view of each run
from the RunResult (analysis/runs.py).
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

from peftbench.config import ConfigError, read_untrusted_text
from peftbench.printable import printable
from peftbench.results.inference_record import INFERENCE_DIR
from peftbench.results.record import PEFTBENCH, RunResult, peftbench_fields
from peftbench.results.writer import CHECKPOINTS_DIR

PEFT_SUITE_SOURCE = "peft-suite"  # ResultRead.source of a result the PEFT suite wrote (else "peftbench")
FULL_FINETUNING_PEFT_TYPE = "full-finetuning"  # peft_type of a run without a PEFT config, as the PEFT suite names it

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
    problems: list[str] = []
    values = {**_suite_values(data, problems), **_own_values(own, problems)}
    return ResultRead(path, RunResult(**values), problems=problems,
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


def _own_values(own: Mapping[str, Any], problems: list[str]) -> dict[str, Any]:
    """The `peftbench` section's fields that hold a value of their declared kind; the other keys go to `extra`."""
    kinds = _kinds()
    values: dict[str, Any] = {"extra": {key: value for key, value in own.items() if key not in kinds}}
    for name, kind in kinds.items():
        value = own.get(name)
        if value is None:
            continue
        if kind in (int, float):
            number = number_at(own, name, PEFTBENCH, problems)
            # an integer stays one (a seed, a byte count); any other number is a float
            value = None if number is None else value if kind is int and isinstance(value, int) else number
        elif not isinstance(value, kind):
            problems.append(f"{PEFTBENCH}[{name!r}] is {_short(value)}, not {_KIND_NAMES[kind]}")
            value = None
        if value is not None:
            values[name] = value
    return values


_KIND_NAMES = {str: "a string", bool: "true or false", list: "a list", dict: "an object"}


def _suite_values(data: Mapping[str, Any], problems: list[str]) -> dict[str, Any]:
    """The RunResult fields that the PEFT suite's sections hold (the layout its published results have)."""
    run_info, train_info = _dict(data, "run_info"), _dict(data, "train_info")
    metrics_log = train_info.get("metrics")
    if not isinstance(metrics_log, list):
        if metrics_log is not None:
            problems.append(f"train_info['metrics'] is {_short(metrics_log)}, not a list")
        metrics_log = []
    metrics_log = [m for m in metrics_log if isinstance(m, dict)]
    final = metrics_log[-1] if metrics_log else {}
    score_name = _score_key(final, "test") or "accuracy"
    forgetting_key = next((k for k in FORGETTING_KEYS if k in final), "forgetting")
    valid_entries = [m for m in metrics_log if _score_key(m, "valid")]
    where_final = "train_info.metrics[-1]"
    train_tokens = number_at(final, "train total tokens", where_final, problems)
    train_time = number_at(train_info, "train_time", "train_info", problems)
    total_time = number_at(run_info, "total_time", "run_info", problems)
    eval_times = [number_at(m, "eval time", "train_info.metrics", problems) for m in metrics_log]
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
        else FULL_FINETUNING_PEFT_TYPE if "peft_config" in run_info and peft_config is None else None,
        "score_name": score_name,
        "forgetting_name": forgetting_key,
        "metrics": [m for m in metrics_log if not _score_key(m, "test")],
        "test_score": number_at(final, f"test {score_name}", where_final, problems),
        "valid_score": number_at(valid_entries[-1], f"valid {_score_key(valid_entries[-1], 'valid')}",
                               "train_info.metrics", problems) if valid_entries else None,
        "train_curve": [{"step": m.get("step"), "loss": m["train loss"]} for m in metrics_log if "train loss" in m],
        "valid_curve": [{"step": m.get("step"), "score": m.get(f"valid {score_name}")} for m in valid_entries],
        "final_train_loss": number_at(final, "train loss", where_final, problems),
        # NaN: not measured (the PEFT suite's drift of full fine-tuning, which has no adapter to switch off)
        "forgetting": None if _is_nan(final.get(forgetting_key)) else number_at(final, forgetting_key, where_final,
                                                                              problems),
        "train_tokens": int(train_tokens or 0),
        "train_samples": int(number_at(final, "train samples", where_final, problems) or 0),
        "suite_train_time_s": train_time,
        "eval_time_s": sum(eval_times) if eval_times else None,
        "total_time_s": total_time,  # the only total a published file has; peftbench's own section overrides it
        "suite_total_time_s": total_time,
        "tokens_per_second": train_tokens / train_time if train_tokens and train_time else None,
        "throughput_unit": "tokens/s" if train_tokens and train_time else None,  # the suite counts only tokens
        "checkpoint_size_bytes": number_at(train_info, "file_size", "train_info", problems),
        "trainable_params": number_at(train_info, "num_trainable_params", "train_info", problems),
        "total_params": number_at(train_info, "num_total_params", "train_info", problems),
        "peak_memory_total_bytes": number_at(train_info, "accelerator_memory_max", "train_info", problems),
        "memory_reserved_avg": number_at(train_info, "accelerator_memory_reserved_avg", "train_info", problems),
        "memory_reserved_99th": number_at(train_info, "accelerator_memory_reserved_99th", "train_info", problems),
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


def number_at(container: Mapping[str, Any], key: str, where: str, problems: list[str]) -> float | None:
    """`container[key]` as a finite number; None when absent, and a line in `problems` when not a number."""
    if key not in container or container[key] is None:
        return None
    value = container[key]
    number = finite_number(value)
    if number is None:
        kind = "not a finite number" if isinstance(value, (int, float)) and not isinstance(value, bool) else "not a number"
        problems.append(f"{where}[{key!r}] is {_short(value)}, {kind}")
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


# ----------------------------------------------------------------------------- folders of files


@dataclass(frozen=True)
class LoadWarning:
    path: Path
    message: str

    def __str__(self) -> str:
        return printable(f"{self.path}: {self.message}")


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


def read_results(paths: Iterable[str | Path], *, progress: bool = False) -> tuple[list[ResultRead], list[LoadWarning]]:
    """Read every result file in `paths` (files, or folders searched recursively for *.json), and a warning for
    each path that does not exist. With `progress`, many files get a transient progress bar on stderr."""
    warnings: list[LoadWarning] = []
    files = _result_files(paths, warnings)
    return [read_result_file(path) for path in (_with_progress(files) if progress and len(files) >= PROGRESS_MIN_FILES
                                                else files)], warnings
