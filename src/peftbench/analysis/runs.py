"""The analysis's view of a run: its RunResult, checked for display and comparison, and its metric values.

A result file is untrusted. `run_view` makes every string of the RunResult printable, resolves the run's names,
and reads each metric from the source the metric table declares (analysis.metrics: `Metric.source`), leaving
out values outside their physical range with one warning line per file. A new axis is one line in that table:
nothing here names a metric.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftbench.analysis.metrics import METRICS, UNIT_RANGES, Metric
from peftbench.config import learning_rate_problem
from peftbench.printable import printable
from peftbench.results.inference_record import InferenceResult, inference_file_of, read_inference_file
from peftbench.results.reader import (
    PEFT_SUITE_SOURCE, LoadWarning, ResultRead, finite_number, number_at, read_results, summary_line,
)
from peftbench.results.record import RunResult

# Beyond it a curve step is corrupt data, not a run (metrics have their own ranges, a learning rate its own check).
MAX_STEP = 1e12


@dataclass(frozen=True)
class CurvePoint:
    step: float
    value: float


@dataclass
class RunView:
    """One successful run as the analysis sees it. `result` is the run's RunResult with its strings made
    printable and its names resolved (`experiment_name` "<method>/<name>", `method`, `name`, `task`); what the
    analysis compares is checked here once: the metrics, the per-item results, the curves, the learning rate."""

    path: Path
    result: RunResult
    source: str  # "peftbench", or PEFT_SUITE_SOURCE for a result the PEFT suite wrote
    metrics: dict[str, float | None]  # metric name (analysis.metrics) -> value; None: not measured or unusable
    per_item_correct: list[float] | None  # None: not stored (published results) or not usable
    predictions: list[dict[str, Any]] | None  # per test item {input, prediction, target, score}
    train_curve: list[CurvePoint]
    valid_curve: list[CurvePoint]
    learning_rate: float | None  # train_config.optimizer_kwargs.lr
    # `peftbench infer`'s measurement of this experiment: RESULTS/inference/<the result file's stem>.json
    inference: InferenceResult | None

    @property
    def seed(self) -> int | None:
        return self.result.seed

    def extra(self, key: str) -> dict[str, Any] | None:
        """An object the run added to its `peftbench` section (sweep, conversion, images), if it is one."""
        value = self.result.extra.get(key)
        return value if isinstance(value, dict) else None


@dataclass
class LoadedResults:
    runs: list[RunView]
    warnings: list[LoadWarning]
    # Files that were JSON but not result files (sweep summaries, configs): skipped without a warning.
    ignored: list[Path]


def load_results(paths: Iterable[str | Path], *, progress: bool = False) -> LoadedResults:
    """Every successful run in `paths` (result files, or folders searched recursively), with one warning line
    per file that is broken, failed or has values left out. With `progress`, many files get a progress bar."""
    reads, warnings = read_results(paths, progress=progress)
    runs: list[RunView] = []
    ignored: list[Path] = []
    for read in reads:
        if read.not_a_result:
            ignored.append(read.path)
            continue
        if read.result is None:
            warnings.append(LoadWarning(read.path, read.error or "not a usable result file"))
            continue
        run, warning = run_view(read)
        if warning:
            warnings.append(LoadWarning(read.path, warning))
        if run is not None:
            runs.append(run)
    return LoadedResults(runs, warnings, ignored)


def run_view(read: ResultRead) -> tuple[RunView | None, str | None]:
    """The analysis's view of a successful run, and one warning line (None when all is well)."""
    problems = list(read.problems)
    if read.result.status == "pruned":  # a halving sweep's stopped trial: the sweep view shows it, no warning needed
        return None, None
    if read.result.status != "success":
        error = printable(read.result.error_msg)
        reason = f": {error[:120]}" if error else ""
        return None, f"status {printable(read.result.status)!r}{reason}; left out"
    result = _printable_result(read.result, read.path)
    inference, _ = read_inference_file(inference_file_of(read.path))
    inference = inference if inference is not None and inference.status == "success" else None
    learning_rate = _learning_rate(result.train_config, problems)
    per_item_correct = _per_item_correct(result.per_item_correct, read.source, problems)
    predictions = _predictions(result.predictions, problems)
    train_curve = _curve(result.train_curve, "loss", "train_curve", problems, UNIT_RANGES["loss"])
    valid_curve = _curve(result.valid_curve, "score", "valid_curve", problems, UNIT_RANGES["score"])
    roots = {"result": result, "inference": inference}  # what a metric's source path starts from
    metrics = {name: _metric_value(roots, metric, problems) for name, metric in METRICS.items()}
    run = RunView(path=read.path, result=result, source=read.source, metrics=metrics,
                  per_item_correct=per_item_correct, predictions=predictions, train_curve=train_curve,
                  valid_curve=valid_curve, learning_rate=learning_rate, inference=inference)
    return run, summary_line(problems)


def _printable_result(result: RunResult, path: Path) -> RunResult:
    """`result` with every string field printable (an empty one takes the field's default) and its names
    resolved: a result without them is named after its file."""
    strings = {}
    for f in dataclasses.fields(RunResult):
        value = getattr(result, f.name)
        if isinstance(value, str):
            strings[f.name] = printable(value) or (f.default if isinstance(f.default, str) else None)
    clean = dataclasses.replace(result, **strings)
    method, name, experiment = clean.method, clean.name, clean.experiment_name
    if not experiment:
        experiment = f"{method}/{name}" if method and name else printable(path.stem)
    if not (method and name):
        head, _, tail = experiment.partition("/")
        method, name = method or head, name or (tail or head)
    seed = clean.seed if isinstance(clean.seed, int) and not isinstance(clean.seed, bool) else None
    return dataclasses.replace(clean, experiment_name=experiment, method=method, name=name,
                               task=clean.task or "math", seed=seed, train_config=clean.train_config or {})


def _metric_value(roots: Mapping[str, Any], metric: Metric, problems: list[str]) -> float | None:
    """The first of the metric's sources that holds a value, if it is a number in the metric's range."""
    for source in metric.sources:
        *path, key = source.split(".")
        container: Any = roots
        for step in path:
            container = container.get(step) if isinstance(container, Mapping) else getattr(container, step, None)
        value = container.get(key) if isinstance(container, Mapping) else getattr(container, key, None)
        if value is None:
            continue
        number = number_at({key: value}, key, ".".join(path), problems)
        if number is not None and not metric.in_range(number):
            low, high = metric.valid_range
            problems.append(f"{metric.name} {number:.3g} is outside its possible range [{low:.3g}, {high:.3g}]; left out")
            number = None
        return number
    return None


def _learning_rate(train_config: Mapping[str, Any], problems: list[str]) -> float | None:
    optimizer_kwargs = train_config.get("optimizer_kwargs")
    learning_rate = number_at(optimizer_kwargs if isinstance(optimizer_kwargs, dict) else {}, "lr",
                              "run_info.train_config.optimizer_kwargs", problems)
    problem = learning_rate_problem(learning_rate) if learning_rate is not None else None
    if problem:
        problems.append(f"learning rate {learning_rate:.3g} {problem}; left out")
        learning_rate = None
    return learning_rate


def _curve(entries: list[Any], value_key: str, where: str, problems: list[str],
           value_range: tuple[float, float]) -> list[CurvePoint]:
    points: list[CurvePoint] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            continue
        step = number_at(entry, "step", f"{where}[{i}]", problems)
        value = number_at(entry, value_key, f"{where}[{i}]", problems)
        if step is None or value is None:
            continue
        if not (0 <= step <= MAX_STEP and value_range[0] <= value <= value_range[1]):
            problems.append(f"{where} has a point outside the possible range (step {step:.3g}, value {value:.3g}); left out")
            continue
        points.append(CurvePoint(step, value))
    return points


def _per_item_correct(value: list[Any], source: str, problems: list[str]) -> list[float] | None:
    if source == PEFT_SUITE_SOURCE:
        return None
    if not all(finite_number(v) is not None and 0 <= v <= 1 for v in value):
        problems.append("peftbench.per_item_correct is not a list of numbers in [0, 1]; paired statistics skip this run")
        return None
    return [float(v) for v in value]


def _predictions(value: list[Any], problems: list[str]) -> list[dict[str, Any]] | None:
    """Each item's texts as strings (or None) and its score as a number; anything else makes them unusable."""
    if not value:
        return None
    fields = ("input", "prediction", "target")
    if not all(isinstance(item, dict) and all(item.get(f) is None or isinstance(item.get(f), str) for f in fields)
               for item in value):
        problems.append("peftbench.predictions is not a list of {input, prediction, target, score}; not shown")
        return None
    return [{**{f: item.get(f) for f in fields}, "score": finite_number(item.get("score"))} for item in value]
