"""Scorers for generated text: built-in ones by name, or a user's `module:function`.

A scorer, as the declared task calls it, takes the prediction (the generated text), the rendered target
and the row as the data file has it, and returns a score in [0, 1] (True/False count as 1/0). Built-ins
compare the prediction with the target; a user's `function(prediction, row)` gets the prediction and the row.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import re
import string
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Optional

from peftbench.config import ConfigError

Scorer = Callable[[str, str, dict[str, Any]], float]
# A number as people write it: sign, thousands separators, decimals.
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def exact_match(prediction: str, target: str, *, ignore_case: bool = False, ignore_punctuation: bool = False,
                regexes_to_ignore: Optional[list[str]] = None) -> bool:
    """Equal after stripping whitespace and the optional normalisations (lm-eval's exact_match arguments)."""
    def normalise(text: str) -> str:
        for pattern in regexes_to_ignore or []:
            text = re.sub(pattern, "", text)
        if ignore_case:
            text = text.lower()
        if ignore_punctuation:
            text = text.translate(str.maketrans("", "", string.punctuation))
        return text.strip()

    return normalise(prediction) == normalise(target)


def last_number(prediction: str, target: str) -> bool:
    """The last number in the prediction equals the last number in the target (numerically; 1,000 == 1000)."""
    def last(text: str) -> Optional[float]:
        found = NUMBER.findall(text)
        return float(found[-1].replace(",", "")) if found else None

    expected = last(target)
    if expected is None:
        raise ValueError(f"the target has no number for last_number: {target!r}")
    got = last(prediction)
    return got is not None and math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-9)


def regex(prediction: str, target: str, *, pattern: str, group: int = 1, ignore_case: bool = False) -> bool:
    """The first match of `pattern` in the prediction (its `group`, or the whole match when it has no groups)
    equals the target, after stripping whitespace; no match scores 0."""
    compiled = re.compile(pattern)
    found = compiled.search(prediction)
    if found is None:
        return False
    extracted = found.group(group if compiled.groups >= group else 0)
    return exact_match(extracted, target, ignore_case=ignore_case)


def contains(prediction: str, target: str, *, ignore_case: bool = False) -> bool:
    """The (stripped) target occurs in the prediction."""
    if ignore_case:
        prediction, target = prediction.lower(), target.lower()
    return target.strip() in prediction


ROUGE_VARIANTS = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def rouge(prediction: str, target: str, *, variant: str = "rougeL") -> float:
    """ROUGE F-measure of the prediction against the target (Google's rouge-score package)."""
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer([variant]).score(target, prediction)[variant].fmeasure


def squad_normalise(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles (a, an, the), single spaces."""
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def f1(prediction: str, target: str) -> float:
    """SQuAD's token-level F1 between prediction and target after squad_normalise: the harmonic mean of the
    shares of shared tokens (counted with multiplicity) in each. Written here because no installed library
    exports it offline (`evaluate` loads its squad metric from the hub); two empty texts score 1."""
    predicted, expected = squad_normalise(prediction).split(), squad_normalise(target).split()
    if not predicted or not expected:
        return float(predicted == expected)
    shared = sum((Counter(predicted) & Counter(expected)).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / len(predicted), shared / len(expected)
    return 2 * precision * recall / (precision + recall)


def final_answer(prediction: str, target: str) -> bool:
    """The answer after the last "The answer is" / "#### " in the prediction equals the target's (numbers
    numerically): the PEFT suite's GSM8K scoring, as the `math` task file uses it (evaluation/answers.py)."""
    from peftbench.evaluation.answers import is_correct

    return is_correct(prediction, target)


BUILTIN_SCORERS: dict[str, Callable[..., float]] = {
    "exact_match": exact_match, "last_number": last_number, "regex": regex, "contains": contains, "rouge": rouge,
    "f1": f1, "final_answer": final_answer,
}


def _check_arguments(function: Callable, args: dict[str, Any], name: str, source: str) -> None:
    try:
        inspect.signature(function).bind("prediction", "target", **args)
    except TypeError:
        accepted = [p for p in inspect.signature(function).parameters if p not in ("prediction", "target")]
        raise ConfigError(
            f"{source}: 'metric_args' {sorted(args)} do not fit metric {name!r}; it accepts: "
            f"{', '.join(accepted) or 'no arguments'}"
        ) from None
    if name == "rouge":
        if args.get("variant", "rougeL") not in ROUGE_VARIANTS:
            raise ConfigError(f"{source}: 'metric_args.variant' must be one of {', '.join(ROUGE_VARIANTS)}")
        if importlib.util.find_spec("rouge_score") is None:
            raise ConfigError(f"{source}: 'metric' rouge needs the rouge-score package: pip install 'peftbench[rouge]'")
    if name == "regex":
        try:
            re.compile(args["pattern"])
        except re.error as error:
            raise ConfigError(f"{source}: 'metric_args.pattern' is not a valid regular expression: {error}") from None


def load_scorer(metric: str, args: dict[str, Any], base_dir: Path, source: str) -> Scorer:
    """The scorer called `metric`: a built-in name or `module:function`, a function defined in `module.py` beside
    the task file (`base_dir`), never any importable callable (`os:system` is no scorer). Errors name `source`
    (the task file) and the key."""
    if metric in BUILTIN_SCORERS:
        function = BUILTIN_SCORERS[metric]
        _check_arguments(function, args, metric, source)
        return lambda prediction, target, row: float(function(prediction, target, **args))
    module_name, sep, function_name = metric.partition(":")
    if not sep or not module_name or not function_name:
        raise ConfigError(
            f"{source}: unknown 'metric' {metric!r}; valid: {', '.join(BUILTIN_SCORERS)} "
            "or module:function (a function in module.py beside the task file)"
        )
    if args:
        raise ConfigError(f"{source}: 'metric_args' only apply to built-in metrics; {metric} gets (prediction, row)")
    module = _import_scorer_module(module_name, base_dir, source)
    function = getattr(module, function_name, None)
    if not inspect.isfunction(function) or function.__module__ != module.__name__:
        raise ConfigError(f"{source}: 'metric' {metric!r}: {module.__file__} defines no function {function_name!r} "
                          "(a scorer is a function written in that file, not one it imports)")
    try:
        inspect.signature(function).bind("prediction", {})
    except TypeError:
        raise ConfigError(f"{source}: 'metric' {metric!r}: the scorer must take (prediction, row)") from None

    def score(prediction: str, target: str, row: dict[str, Any]) -> float:
        value = function(prediction, row)
        number = float(value) if isinstance(value, (bool, int, float)) else float("nan")
        if not 0 <= number <= 1:
            raise ValueError(f"scorer {metric} returned {value!r}; a scorer returns a number in [0, 1] or a bool")
        return number

    return score


def scorer_path(module_name: str, base_dir: Path) -> Path:
    """Where a `module:function` metric's module is: module.py (pkg/module.py for pkg.module) in `base_dir`."""
    return base_dir / (module_name.replace(".", "/") + ".py")


def _import_scorer_module(module_name: str, base_dir: Path, source: str):
    file = scorer_path(module_name, base_dir)
    if not file.is_file():
        raise ConfigError(f"{source}: 'metric': no scorer file {file} (a scorer is a function in a .py file beside "
                          f"the task file, or a built-in: {', '.join(BUILTIN_SCORERS)})")
    try:
        # a private module name, so that a user's `scorer.py` never shadows or replaces another module
        unique = f"peftbench_user_scorer_{abs(hash(str(file.resolve())))}"
        spec = importlib.util.spec_from_file_location(unique, file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[unique] = module
        spec.loader.exec_module(module)
        return module
    except Exception as error:  # any failure of the user's module: name the file and what went wrong
        raise ConfigError(
            f"{source}: 'metric': the scorer in {file} does not import: {type(error).__name__}: {error}"
        ) from None


class ScorerTimeout(Exception):
    """A scorer call that did not return within its time limit."""


def score_all(scorer: Scorer, predictions: list[str], targets: list[str], rows: list[dict[str, Any]],
              timeout_s: float) -> list[float]:
    """Each item's score. Each call runs in a thread of its own that may take at most `timeout_s`: a scorer that
    never returns raises ScorerTimeout (naming the item) instead of hanging the run; the stuck thread is a daemon
    and ends with the process."""
    scores = []
    for index, (prediction, target, row) in enumerate(zip(predictions, targets, rows)):
        outcome: list[Any] = []

        def call(prediction=prediction, target=target, row=row) -> None:
            try:
                outcome.append(scorer(prediction, target, row))
            except BaseException as error:  # noqa: BLE001 - raised again in the caller's thread
                outcome.append(error)

        thread = threading.Thread(target=call, name="peftbench-scorer", daemon=True)
        thread.start()
        thread.join(timeout_s)
        if not outcome:
            raise ScorerTimeout(f"the scorer did not return within {timeout_s:g} s on test item {index} "
                                f"(prediction {prediction[:80]!r})")
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        scores.append(outcome[0])
    return scores
