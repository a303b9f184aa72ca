"""A sweep's plan: its experiments, the learning-rate grid, the seeds, and each trial's run description.

Pure data: building a plan runs nothing.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from peftbench.config import ConfigError, merge_params
from peftbench.run.request import RunRequest, SweepRole
from peftbench.sweep.halving import Halving, journal_path, start_order, study_name
from peftbench.training.pruning import HalvingRule

DEFAULT_LR_TRIALS = 3
DEFAULT_SEEDS = 3


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


# ----------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class SweepExperiment:
    """One experiment of a sweep, with its configured (default) learning rate and seed."""

    path: Path
    method: str
    name: str
    default_lr: float
    default_seed: int
    max_steps: Optional[int] = None  # from its merged config: what successive halving's rungs are checked against
    eval_steps: Optional[int] = None
    seed_fixed_by: Optional[str] = None  # TrainConfig.seed_fixed_by: its seed runs would all be the same run

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
        lr = config.optimizer_kwargs["lr"]  # a learning rate: the config checked it (config.learning_rate_problem)
        if lr == 0:  # the sweep's rates are multiples of it
            raise ConfigError(f"optimizer_kwargs.lr of {spec.path} is {lr!r}; a sweep needs a positive number")
        if getattr(config, "valid_size", None) == 0:  # e.g. the quick suite's folders, which report test scores only
            raise ConfigError(
                f"valid_size is 0 for {spec.path} ({spec.training_params_path} or --set): a sweep chooses each "
                "learning rate on the validation score, so it needs validation rows; add e.g. --set valid_size=100"
            )
        if config.eval_steps > config.max_steps:  # validation runs every eval_steps steps, never here
            raise ConfigError(
                f"eval_steps ({config.eval_steps}) is larger than max_steps ({config.max_steps}) for {spec.path}: "
                "no validation would run, and a sweep chooses each learning rate on the validation score; add "
                f"--set eval_steps={config.max_steps}"
            )
        experiments.append(SweepExperiment(spec.path, spec.method, spec.name, float(lr), int(config.seed),
                                           config.max_steps, config.eval_steps, config.seed_fixed_by()))
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
    halving: Optional[Halving] = None  # successive halving of the search (sweep.halving); None: the full grid

    def __post_init__(self) -> None:
        self.results_dir = Path(self.results_dir).resolve()
        if not self.experiments:
            raise ConfigError("a sweep needs at least one experiment folder")
        if self.seeds < 1:
            raise ConfigError(f"--seeds must be >= 1, got {self.seeds}")
        fixed = next((e for e in self.experiments if e.seed_fixed_by), None)
        if self.seeds > 1 and fixed is not None:
            raise ConfigError(
                f"--seeds {self.seeds}: the seed changes nothing in a run of {fixed.path} under "
                f"{fixed.seed_fixed_by}, so its {self.seeds} seed runs would be one run repeated and their spread, 0, "
                "no error bar; use --seeds 1, or change that setting"
            )
        if "lr" in (self.overrides.get("optimizer_kwargs") or {}):
            raise ConfigError("--set optimizer_kwargs.lr conflicts with the sweep, which sets the learning rate itself")
        for experiment in self.experiments:
            self.grid(experiment)  # validates lr_trials and the default rates before anything runs
        self.reference_experiment()  # validates --reference
        if self.halving is not None:
            from peftbench.tasks import get_task

            self.halving = self.halving.resolved(self.experiments, get_task(self.task))

    @property
    def sweep_id(self) -> str:
        """Short hash of what defines the search (not the seeds: adding seeds extends the same sweep)."""
        identity = {
            "task": self.task,
            "experiments": [e.key for e in self.experiments],
            "grid": self.lrs if self.lrs is not None else f"{self.lr_trials} around default",
            "overrides": self.overrides,
            # a halving search decides differently: its own sweep (a grid keeps the id it always had)
            **({"halving": self.halving.identity()} if self.halving is not None else {}),
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]

    def grid(self, experiment: SweepExperiment) -> list[float]:
        return list(self.lrs) if self.lrs is not None else lr_grid(experiment.default_lr, self.lr_trials)

    def seed_list(self, experiment: SweepExperiment) -> list[int]:
        return [experiment.default_seed + i for i in range(1, self.seeds + 1)]

    def result_path(self, experiment: SweepExperiment, lr: float, seed: int) -> Path:
        return self.trial(experiment, lr, seed, "trial").result_file()

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

    @property
    def halving_journal(self) -> Path:
        return journal_path(self.results_dir, self.sweep_id)

    def trial(self, experiment: SweepExperiment, lr: float, seed: int, role: str,
              halving: Optional[dict[str, Any]] = None) -> RunRequest:
        """The run description of one trial (its result name carries the rate and the seed); a halving search's
        trial also measures the rung signal (Halving.trial_overrides)."""
        measured = self.halving.trial_overrides() if halving is not None else {}
        return RunRequest(
            task=self.task, results_dir=str(self.results_dir), experiment_dir=str(experiment.path),
            overrides=merge_params(self.overrides, {"optimizer_kwargs": {"lr": lr}, **measured}), seed=seed,
            sweep=SweepRole(self.sweep_id, role, lr, seed, experiment.default_lr, halving),
            save_checkpoint=self.save_checkpoint, show_progress=False,
            # --set num_threads=N wins over the backend's fair split of the cores
            num_threads=self.overrides.get("num_threads"),
        )

    def check_before_running(self) -> None:
        """ConfigError unless every trial's result name fits the file system and the results folder takes a
        real file write: found before the first trial, not after it."""
        from peftbench.results.writer import check_writable

        for experiment in self.experiments:
            for lr in self.grid(experiment):
                for seed in [experiment.default_seed, *self.seed_list(experiment)]:
                    self.result_path(experiment, lr, seed)
        check_writable(self.results_dir)

    def search_trials(self) -> list[RunRequest]:
        """Every grid point of every experiment, plus a "default" run where the grid lacks the configured rate.

        Halving: each experiment's rates in sweep.halving's start order, the experiments taking turns, each trial
        with its study's rule."""
        if self.halving is not None:
            return self._halving_search_trials()
        trials = []
        for experiment in self.experiments:
            grid = self.grid(experiment)
            for lr in grid:
                trials.append(self.trial(experiment, lr, experiment.default_seed, "trial"))
            trials.extend(self._default_trials(experiment))
        return trials

    def _default_trials(self, experiment: SweepExperiment) -> list[RunRequest]:
        if experiment.default_lr in self.grid(experiment):
            return []
        return [self.trial(experiment, experiment.default_lr, experiment.default_seed, "default")]

    def _halving_search_trials(self) -> list[RunRequest]:
        by_experiment = []
        for experiment in self.experiments:
            study = study_name(self.sweep_id, experiment.key)
            rates = start_order(self.grid(experiment), experiment.default_lr)
            rules = [HalvingRule(str(self.halving_journal), study, k, self.halving.min_steps,
                                 self.halving.reduction_factor, self.halving.signal).to_dict()
                     for k in range(len(rates))]
            by_experiment.append([self.trial(experiment, lr, experiment.default_seed, "trial", rule)
                                  for lr, rule in zip(rates, rules)] + self._default_trials(experiment))
        return [trial for turn in itertools.zip_longest(*by_experiment) for trial in turn if trial is not None]

    def seed_trials(self, chosen: dict[str, Optional[float]]) -> list[RunRequest]:
        trials = []
        for experiment in self.experiments:
            lr = chosen.get(experiment.key)
            if lr is not None:
                trials.extend(self.trial(experiment, lr, seed, "seed") for seed in self.seed_list(experiment))
        return trials
