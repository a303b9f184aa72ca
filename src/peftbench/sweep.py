"""Equal-budget learning-rate sweeps: plan the trials, resume, select on validation only, run seeds, summarise.

A sweep compares methods fairly (docs/sweep.md has the user's view):

1. Search. Every experiment gets the same number of trials: its configured learning rate times
   10^(k/2) for `lr_trials` consecutive k around 0 (so the configured rate is always one of them),
   or the same explicit `--lrs` list for everyone. Everything else is fixed, and every trial uses the
   experiment's configured seed.
2. Selection. The rate with the best *validation* score (`peftbench.valid_score`) wins; the test score
   is never looked at. Ties go to the rate closest to the configured one (on a log scale: without
   evidence of a better rate, keep the default), then to the smaller rate.
3. Seeds. The chosen rate is run with K fresh seeds (configured seed + 1 ... + K). Fresh, because the
   search trial at the configured seed was picked for its luck on validation; reusing it would bias
   the test estimate upwards.
4. Summary. `sweep-summary.json` in the results folder: per experiment the "default" run (configured
   rate, configured seed: a search trial, or one extra run when `--lrs` leaves the configured rate
   out; it never takes part in selection) and the "tuned" runs (chosen rate, K seeds) with mean,
   standard deviation and 95% bootstrap interval of the test score, plus a paired bootstrap over test
   items against a reference experiment (default: the first `lora` one). Everything in it is computed
   from the result files, so anyone can recompute it.

Resume: a trial whose result file exists with status success or diverged is finished (those are outcomes
of the configuration; running it again would repeat them); a missing, unreadable, failed, cancelled, oom or
killed one is run again (`keep_killed=True` keeps oom and killed ones). `force=True` runs everything again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import statistics
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from peftbench.config import ConfigError, merge_params
from peftbench.results.writer import write_json_atomic
from peftbench.runners import Trial, TrialExecutor, TrialOutcome, execute_trial, run_trials

SUMMARY_FILE = "sweep-summary.json"
SUMMARY_KIND = "peftbench-sweep-summary"
SUMMARY_SCHEMA_VERSION = 1
DEFAULT_LR_TRIALS = 3
DEFAULT_SEEDS = 3
ERROR_CHARS = 600  # of a failed run's error message kept in the summary (the result file has all of it)
TIE_BREAK = "ties: the rate closest to the configured one on a log scale, then the smaller rate"


# ----------------------------------------------------------------------------- the grid and names


def lr_grid(default_lr: float, n_trials: int) -> list[float]:
    """`n_trials` rates spaced by a factor 10^(1/2) (~3.16) around `default_lr`, which is always included.

    k runs from -(n-1)//2 upwards: 3 trials are lr/3.16, lr, lr*3.16; 4 add lr*10. The other rates are
    rounded to three significant digits, so file names stay short; the configured rate is kept exactly.
    """
    if n_trials < 1:
        raise ConfigError(f"--lr-trials must be >= 1, got {n_trials}")
    if not default_lr > 0:
        raise ConfigError(f"the configured learning rate must be > 0 to build a grid around it, got {default_lr}")
    first = -((n_trials - 1) // 2)
    exponents = [first + i for i in range(n_trials)]
    return [default_lr if k == 0 else _round_lr(default_lr * 10 ** (k / 2)) for k in exponents]


def _round_lr(lr: float) -> float:
    return float(f"{lr:.3g}")


def parse_lrs(text: str) -> list[float]:
    """Parse `--lrs 1e-4,3e-4,1e-3`: positive numbers, no repeats, returned in ascending order."""
    rates: list[float] = []
    for part in text.split(","):
        part = part.strip()
        try:
            rate = float(part)
        except ValueError:
            raise ConfigError(f"--lrs: {part!r} is not a number; expected e.g. --lrs 1e-4,3e-4,1e-3") from None
        if not (math.isfinite(rate) and rate > 0):
            raise ConfigError(f"--lrs: {part!r} is not a positive learning rate")
        rates.append(rate)
    if len(set(rates)) != len(rates):
        raise ConfigError(f"--lrs: {text!r} lists a rate twice")
    return sorted(rates)


def format_lr(lr: float) -> str:
    """The shortest text that reads back as exactly `lr` (0.001, 3.16e-05): unique and exact in file names."""
    return repr(float(lr))


def trial_result_name(method: str, name: str, lr: float, seed: int) -> str:
    return f"{method}--{name}--lr{format_lr(lr)}--seed{seed}"


# ----------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class SweepExperiment:
    """One experiment of a sweep, with its configured (default) learning rate and seed."""

    path: Path
    method: str
    name: str
    default_lr: float
    default_seed: int

    @property
    def key(self) -> str:
        return f"{self.method}/{self.name}"


def resolve_experiments(paths: list[str | Path], task_name: str, overrides: dict[str, Any]) -> list[SweepExperiment]:
    """Load and validate experiment folders; their merged config gives the default lr and seed."""
    from peftbench.experiments import load_experiment
    from peftbench.tasks import get_task

    task = get_task(task_name)
    experiments: list[SweepExperiment] = []
    for path in paths:
        spec = load_experiment(path)
        config = task.build_config(spec.training_params, str(spec.training_params_path), overrides)
        lr = config.optimizer_kwargs["lr"]
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
            raise ConfigError(f"optimizer_kwargs.lr of {spec.path} is {lr!r}; a sweep needs a positive number")
        experiments.append(SweepExperiment(spec.path, spec.method, spec.name, float(lr), int(config.seed)))
    first_by_key: dict[str, SweepExperiment] = {}
    for experiment in experiments:
        first = first_by_key.setdefault(experiment.key, experiment)
        if first is not experiment:
            where = f"{first.path} and {experiment.path}" if first.path != experiment.path else f"{first.path} twice"
            raise ConfigError(
                f"experiment {experiment.key!r} is given twice ({where}); their trials would write the same result "
                "files, so each experiment may appear once in a sweep"
            )
    return experiments


@dataclass
class SweepPlan:
    """What a sweep runs. Pure data: building it runs nothing."""

    task: str
    experiments: list[SweepExperiment]
    results_dir: Path
    lrs: Optional[list[float]] = None  # one explicit list for everyone; None: a grid around each default
    lr_trials: int = DEFAULT_LR_TRIALS
    seeds: int = DEFAULT_SEEDS
    overrides: dict[str, Any] = field(default_factory=dict)  # --set, the same for every trial
    reference: Optional[str] = None  # "method/name" or "method"; None: the first lora experiment
    save_checkpoint: bool = False

    def __post_init__(self) -> None:
        self.results_dir = Path(self.results_dir).resolve()
        if not self.experiments:
            raise ConfigError("a sweep needs at least one experiment folder")
        if self.seeds < 1:
            raise ConfigError(f"--seeds must be >= 1, got {self.seeds}")
        if "lr" in (self.overrides.get("optimizer_kwargs") or {}):
            raise ConfigError("--set optimizer_kwargs.lr conflicts with the sweep, which sets the learning rate itself")
        for experiment in self.experiments:
            self.grid(experiment)  # validates lr_trials and the default rates before anything runs
        self.reference_experiment()  # validates --reference

    @property
    def sweep_id(self) -> str:
        """Short hash of what defines the search (not the seeds: adding seeds extends the same sweep)."""
        identity = {
            "task": self.task,
            "experiments": [e.key for e in self.experiments],
            "grid": self.lrs if self.lrs is not None else f"{self.lr_trials} around default",
            "overrides": self.overrides,
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]

    def grid(self, experiment: SweepExperiment) -> list[float]:
        return list(self.lrs) if self.lrs is not None else lr_grid(experiment.default_lr, self.lr_trials)

    def seed_list(self, experiment: SweepExperiment) -> list[int]:
        return [experiment.default_seed + i for i in range(1, self.seeds + 1)]

    def result_path(self, experiment: SweepExperiment, lr: float, seed: int) -> Path:
        return self.results_dir / f"{trial_result_name(experiment.method, experiment.name, lr, seed)}.json"

    def reference_experiment(self) -> Optional[SweepExperiment]:
        if self.reference is None:
            return next((e for e in self.experiments if e.method == "lora"), None)
        for experiment in self.experiments:
            if self.reference in (experiment.key, experiment.method):
                return experiment
        raise ConfigError(
            f"--reference {self.reference!r} is not in this sweep; valid: "
            + ", ".join(e.key for e in self.experiments)
        )

    def trial(self, experiment: SweepExperiment, lr: float, seed: int, role: str) -> Trial:
        """The runner's description of one run (see peftbench.runners)."""
        result_name = trial_result_name(experiment.method, experiment.name, lr, seed)
        return {
            "trial_id": result_name,
            "experiment_dir": str(experiment.path),
            "task": self.task,
            "results_dir": str(self.results_dir),
            "result_name": result_name,
            "overrides": merge_params(self.overrides, {"optimizer_kwargs": {"lr": lr}}),
            "seed": seed,
            "extra_result_fields": {
                "sweep": {
                    "sweep_id": self.sweep_id,
                    "role": role,
                    "lr": lr,
                    "seed": seed,
                    "default_lr": experiment.default_lr,
                    "lr_factor": lr / experiment.default_lr,
                }
            },
            "force": True,  # the sweep decided to run it (resume rule); the engine must not skip it
            "save_checkpoint": self.save_checkpoint,
            # --set num_threads=N wins over the backend's fair split of the cores
            "num_threads": self.overrides.get("num_threads"),
        }

    def check_before_running(self) -> None:
        """ConfigError unless every trial's result name fits the file system and the results folder takes a
        real file write: found before the first trial, not after it."""
        from peftbench.results.writer import check_writable, result_path

        for experiment in self.experiments:
            for lr in self.grid(experiment):
                for seed in [experiment.default_seed, *self.seed_list(experiment)]:
                    result_path(self.results_dir, trial_result_name(experiment.method, experiment.name, lr, seed))
        check_writable(self.results_dir)

    def search_trials(self) -> list[Trial]:
        """Every grid point of every experiment, plus a "default" run where the grid lacks the configured rate."""
        trials = []
        for experiment in self.experiments:
            grid = self.grid(experiment)
            for lr in grid:
                trials.append(self.trial(experiment, lr, experiment.default_seed, "trial"))
            if experiment.default_lr not in grid:
                trials.append(self.trial(experiment, experiment.default_lr, experiment.default_seed, "default"))
        return trials

    def seed_trials(self, chosen: dict[str, Optional[float]]) -> list[Trial]:
        trials = []
        for experiment in self.experiments:
            lr = chosen.get(experiment.key)
            if lr is not None:
                trials.extend(self.trial(experiment, lr, seed, "seed") for seed in self.seed_list(experiment))
        return trials


# ----------------------------------------------------------------------------- reading results


@dataclass
class TrialRecord:
    """One trial as its result file tells it (status "missing" when there is no usable file)."""

    path: Path
    lr: float
    seed: int
    status: str
    error: str = ""
    valid_score: Optional[float] = None
    test_score: Optional[float] = None
    per_item_correct: Optional[list[float]] = None

    def brief(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "seed": self.seed,
            "status": self.status,
            "valid_score": self.valid_score,
            "test_score": self.test_score,
            "result_file": self.path.name,
            **({"error": self.error[-ERROR_CHARS:]} if self.error else {}),  # the end of a traceback says most
        }


def read_trial(path: Path, lr: float, seed: int) -> TrialRecord:
    """Read a trial's result file (untrusted JSON: parsed and type-checked by the results reader)."""
    from peftbench.results.reader import MAX_RESULT_FILE_BYTES, parse_result

    try:
        if path.stat().st_size > MAX_RESULT_FILE_BYTES:
            return TrialRecord(path, lr, seed, "unreadable", "result file too large")
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return TrialRecord(path, lr, seed, "missing")
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        return TrialRecord(path, lr, seed, "unreadable", f"{type(error).__name__}: {error}"[:300])
    own = data.get("peftbench") if isinstance(data, dict) and isinstance(data.get("peftbench"), dict) else {}
    status = own.get("status")
    if not isinstance(status, str) or not status:
        return TrialRecord(path, lr, seed, "unreadable", "no peftbench.status in the result file")
    error = own.get("error_msg") if isinstance(own.get("error_msg"), str) else ""
    if status != "success":
        return TrialRecord(path, lr, seed, status, error)
    record, _warning, _is_result = parse_result(data, path)
    if record is None:
        return TrialRecord(path, lr, seed, "unreadable", "not a usable result file")
    return TrialRecord(
        path,
        lr,
        seed,
        status,
        error,
        valid_score=record.metrics.get("valid_score"),
        test_score=record.metrics.get("test_score"),
        per_item_correct=record.per_item_correct,
    )


# ----------------------------------------------------------------------------- selection


def choose_lr(trials: list[TrialRecord], default_lr: float, higher_is_better: bool = True) -> Optional[float]:
    """The rate of the best successful trial by validation score (see TIE_BREAK); None if none succeeded.

    Test scores are deliberately not an argument of the decision.
    """
    scored = [t for t in trials if t.status == "success" and t.valid_score is not None]
    if not scored:
        return None
    sign = 1.0 if higher_is_better else -1.0
    best = max(sign * t.valid_score for t in scored)
    tied = [t for t in scored if math.isclose(sign * t.valid_score, best, rel_tol=0, abs_tol=1e-12)]
    return min(tied, key=lambda t: (abs(math.log(t.lr / default_lr)), t.lr)).lr


# ----------------------------------------------------------------------------- statistics and summary


def _mean_sd_ci(values: list[float]) -> dict[str, Any]:
    from peftbench.analysis.stats import bootstrap_mean_ci

    if not values:
        return {"n": 0, "mean": None, "sd": None, "ci95": None}
    ci = bootstrap_mean_ci(values)
    return {
        "n": len(values),
        "mean": ci.mean,
        "sd": statistics.stdev(values) if len(values) >= 2 else None,
        "ci95": [ci.low, ci.high] if ci.has_spread else None,
    }


def _items_mean(runs: list[TrialRecord]) -> Optional[list[float]]:
    """Per test item, the mean correctness over `runs` (all must have per-item results of one length)."""
    items = [r.per_item_correct for r in runs if r.status == "success"]
    if not items or any(i is None for i in items) or len({len(i) for i in items}) != 1:
        return None
    return [sum(column) / len(column) for column in zip(*items)]


def _paired(runs: list[TrialRecord], reference_runs: list[TrialRecord], label: str) -> dict[str, Any]:
    from peftbench.analysis.stats import paired_bootstrap

    mine, theirs = _items_mean(runs), _items_mean(reference_runs)
    if mine is None or theirs is None or len(mine) != len(theirs):
        return {"against": label, "error": "per-item test results missing or of different lengths"}
    comparison = paired_bootstrap(mine, theirs)
    return {
        "against": label,
        "mean_difference": comparison.mean_difference,
        "ci95": [comparison.low, comparison.high],
        "probability_of_improvement": comparison.prob_a_better,
        "n_items": comparison.n_items,
    }


def _ranking(scores: dict[str, Optional[float]], higher_is_better: bool) -> list[str]:
    known = [(key, score) for key, score in scores.items() if score is not None]
    return [key for key, _ in sorted(known, key=lambda item: item[1], reverse=higher_is_better)]


def _spread(scores: dict[str, Optional[float]]) -> Optional[float]:
    known = [s for s in scores.values() if s is not None]
    return max(known) - min(known) if len(known) >= 2 else None


def search_records(plan: SweepPlan, experiment: SweepExperiment) -> list[TrialRecord]:
    return [read_trial(plan.result_path(experiment, lr, experiment.default_seed), lr, experiment.default_seed)
            for lr in plan.grid(experiment)]


def chosen_lrs(plan: SweepPlan, higher_is_better: bool) -> dict[str, Optional[float]]:
    return {e.key: choose_lr(search_records(plan, e), e.default_lr, higher_is_better) for e in plan.experiments}


def build_summary(plan: SweepPlan, higher_is_better: bool = True, score_name: str = "accuracy") -> dict[str, Any]:
    """The sweep's summary, computed from the result files alone."""
    per_experiment: dict[str, dict[str, Any]] = {}
    tuned_runs: dict[str, list[TrialRecord]] = {}
    default_runs: dict[str, TrialRecord] = {}
    for experiment in plan.experiments:
        search = search_records(plan, experiment)
        chosen = choose_lr(search, experiment.default_lr, higher_is_better)
        default = read_trial(
            plan.result_path(experiment, experiment.default_lr, experiment.default_seed),
            experiment.default_lr,
            experiment.default_seed,
        )
        seeds = plan.seed_list(experiment) if chosen is not None else []
        tuned = [read_trial(plan.result_path(experiment, chosen, s), chosen, s) for s in seeds]
        default_runs[experiment.key], tuned_runs[experiment.key] = default, tuned
        tuned_scores = [t.test_score for t in tuned if t.status == "success" and t.test_score is not None]
        per_experiment[experiment.key] = {
            "method": experiment.method,
            "name": experiment.name,
            "path": str(experiment.path),
            "default_lr": experiment.default_lr,
            "default_seed": experiment.default_seed,
            "lr_grid": plan.grid(experiment),
            "trials": [t.brief() for t in search],
            "default": {**default.brief(), "in_grid": experiment.default_lr in plan.grid(experiment)},
            "chosen_lr": chosen,
            "tuned": {
                "lr": chosen,
                "seeds": seeds,
                "runs": [t.brief() for t in tuned],
                "test_scores": tuned_scores,
                **_mean_sd_ci(tuned_scores),
            },
        }

    reference = plan.reference_experiment()
    for key, entry in per_experiment.items():
        if reference is None or key == reference.key:
            entry["vs_reference"] = None
            continue
        entry["vs_reference"] = {
            "reference": reference.key,
            # this experiment's tuned runs against the reference's tuned runs (the fair comparison) and
            # against the reference's default run (what a "new method vs default LoRA" paper reports)
            "tuned": _paired(tuned_runs[key], tuned_runs[reference.key], f"{reference.key} tuned"),
            "default": _paired(tuned_runs[key], [default_runs[reference.key]], f"{reference.key} default"),
        }

    default_scores = {k: (e["default"]["test_score"] if e["default"]["status"] == "success" else None)
                      for k, e in per_experiment.items()}
    tuned_means = {k: e["tuned"]["mean"] for k, e in per_experiment.items()}
    all_runs = [r for e in per_experiment.values() for r in [*e["trials"], e["default"], *e["tuned"]["runs"]]]
    not_success = sorted({r["result_file"]: r for r in all_runs if r["status"] != "success"}.values(),
                         key=lambda r: r["result_file"])
    return {
        "kind": SUMMARY_KIND,
        "schema_version": SUMMARY_SCHEMA_VERSION,
        "sweep_id": plan.sweep_id,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "task": plan.task,
        "score_name": score_name,
        "higher_is_better": higher_is_better,
        "lr_search": {"lrs": plan.lrs} if plan.lrs is not None else {"lr_trials": plan.lr_trials, "step": "10^(1/2)"},
        "seeds": plan.seeds,
        "overrides": plan.overrides,
        "selection": f"best validation score; {TIE_BREAK}; test scores are not used",
        "reference": reference.key if reference else None,
        "experiments": per_experiment,
        "ranking": {"default": _ranking(default_scores, higher_is_better), "tuned": _ranking(tuned_means, higher_is_better)},
        "spread": {"default": _spread(default_scores), "tuned": _spread(tuned_means)},
        "not_successful": not_success,
        "complete": not not_success,
    }


# ----------------------------------------------------------------------------- running


@dataclass
class SweepRun:
    summary: dict[str, Any]
    summary_path: Path
    ran: list[TrialOutcome]  # trials run by this invocation (resumed ones are not here)
    skipped: int  # trials already finished before this invocation


def run_sweep(
    plan: SweepPlan,
    *,
    backend: str = "local",
    workers: int = 1,
    ray_address: Optional[str] = None,
    force: bool = False,
    keep_killed: bool = False,
    execute: Optional[TrialExecutor] = None,
    higher_is_better: bool = True,
    score_name: str = "accuracy",
    show_progress: bool = True,
) -> SweepRun:
    """Run the search, select on validation, run the seeds and write the summary.

    Ctrl-C propagates as KeyboardInterrupt; every finished result file stays, no summary is written,
    and running the same sweep again resumes it. `execute` runs one trial (default: the engine's
    child-process runner, `peftbench.runners.execute_trial`).
    """
    from peftbench.runners.local import should_skip  # the engine's rule: success and diverged are final
    from peftbench.tasks import get_task

    task_identity = get_task(plan.task).name  # a result of another task (or task file version) is no skip
    ran: list[TrialOutcome] = []
    skipped = 0

    def run_missing(trials: list[Trial], description: str) -> None:
        nonlocal skipped
        todo = [t for t in trials
                if not should_skip(Path(t["results_dir"]) / f"{t['result_name']}.json", force, keep_killed,
                                   task_identity)]
        skipped += len(trials) - len(todo)
        ran.extend(run_trials(todo, backend=backend, workers=workers, ray_address=ray_address,
                              execute=execute or execute_trial,
                              description=description, show_progress=show_progress))

    plan.results_dir.mkdir(parents=True, exist_ok=True)
    with _backend_session(backend, ray_address):  # Ray starts once for both phases
        run_missing(plan.search_trials(), "lr search")
        run_missing(plan.seed_trials(chosen_lrs(plan, higher_is_better)), "seeds")
    summary = build_summary(plan, higher_is_better, score_name)
    summary_path = plan.results_dir / SUMMARY_FILE
    write_json_atomic(summary_path, summary)
    return SweepRun(summary, summary_path, ran, skipped)


def _backend_session(backend: str, ray_address: Optional[str]):
    if backend != "ray":
        return contextlib.nullcontext()
    from peftbench.runners.ray_backend import ray_session

    return ray_session(ray_address)
