"""The validity protocol: how well an offline task ranks PEFT's configs the way a reference (published GPU) benchmark
does, and how well it can at best (docs/validity.md).

`validate(...)` is the one entry point (`peftbench validate` calls it): with `experiments`, it first runs every
config of that folder that has a reference result, for each seed of the recipe (resumable: finished result files
are skipped); then it reads the results folder and the reference, and returns a `ValidityReport`: rank agreement
(Spearman, Kendall, bootstrap intervals) over all configs and over those that learn, on both halves of the fixed
method split (agreement.half_of), the seed noise and the noise ceiling.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, Optional

import numpy as np

from peftbench.config import ConfigError
from peftbench.validity.agreement import (CHOOSE, REPORT, NoiseCeiling, RankAgreement, SeedNoise, half_of,
                                          noise_ceiling, rank_agreement, seed_noise, seed_sd)

PUBLISHED_METAMATHQA = Path(str(files("peftbench") / "published" / "metamathqa"))
# The PEFT suite's MetaMathQA configs (experiments/ and its default_training_params.json), shipped unchanged so that
# `validate --experiments published` runs without a clone of PEFT's repository.
PUBLISHED_METAMATHQA_EXPERIMENTS = Path(str(files("peftbench") / "published" / "metamathqa-suite" / "experiments"))
# The PEFT suite's image-gen configs (FLUX.2-klein), shipped unchanged: image-tiny runs them as they are.
PUBLISHED_IMAGE_GEN_EXPERIMENTS = Path(str(files("peftbench") / "published" / "image-gen-suite" / "experiments"))
RECIPE_FILE = "validity-recipe.json"
SUITE_DEFAULTS_FILE = "default_training_params.json"  # beside a PEFT suite's experiments/ folder
SUITE_STEPS_KEY = "max_steps"
SCHEDULE_KEYS = ("tinit", "tfinal", "total_step")  # AdaLoRA's rank-pruning schedule, in steps
LR_POLICIES = ("scaled", "configured", "sweep")
# What the offline side ranks configs by. The reference is always its test score; "learns" is always judged on the
# offline test score.
RANK_BY = {
    "test": "each run's test score",
    # math-tiny trains one pass over fresh rows: each batch's loss is measured before the model has trained on it,
    # so the training loss is a held-out loss (progressive validation), graded where accuracy is 0
    "train_loss": "each run's final train loss (the result's final_train_loss: the mean over its last validation "
                  "window, the whole run in the protocol's runs), lower ranking higher; one pass over fresh rows: "
                  "each batch's loss is measured before the model trains on it",
}
SCRATCH_DIR = "_scaled"  # copies of configs whose step schedule was scaled, inside the results folder


@dataclass(frozen=True)
class TaskProtocol:
    """What the protocol needs to know about an offline task."""

    reference: Optional[Path]  # default reference results (None: seed noise and noise ceiling only)
    experiments: Path  # the PEFT suite's configs that `--experiments published` runs
    learns_above: float  # a config "learns" when its mean offline score over seeds is at least this
    learns_rule: str  # why that threshold, in words
    lr_policy: str  # default learning-rate policy
    rank_by: str  # default of RANK_BY
    # training parameters every run gets (runs of the PEFT suite's configs pin Llama-3B's model and batch; the
    # offline task's own apply)
    pinned: tuple[str, ...] = ()
    fixed: dict[str, Any] = field(default_factory=dict)


PROTOCOLS = {
    "math-tiny": TaskProtocol(
        reference=PUBLISHED_METAMATHQA,
        experiments=PUBLISHED_METAMATHQA_EXPERIMENTS,
        learns_above=0.02,
        learns_rule="mean test accuracy over seeds >= 2% (6 of 300 problems; the base model solves 0 of 500)",
        lr_policy="scaled",
        # chosen on the choose half, kept on the report half (benchmarks/validity.md)
        rank_by="train_loss",
        pinned=("model_id", "batch_size"),
        # the protocol ranks test figures: no validation or forgetting measure (generation is most of the CPU)
        fixed={"valid_size": 0, "forgetting_size": 0},
    ),
    "image-tiny": TaskProtocol(
        reference=None,  # PEFT's published image-gen results are kept aside by the developers
        experiments=PUBLISHED_IMAGE_GEN_EXPERIMENTS,
        learns_above=0.36,
        learns_rule="mean test similarity over seeds >= 0.36 (the base model: 0.12, sd 0.12 over three seeds; + 2 sd)",
        lr_policy="configured",
        rank_by="test",
        # 12 images per test prompt instead of PEFT's 3: the generator's share of a score's noise halves
        # (benchmarks/validity.md); the first 3 are the default test's images. No drift or sample images (the
        # protocol ranks test figures; the test images are the same without them, and a run costs 11% less CPU)
        fixed={"test_repeats": 12, "drift_image_prompts": [], "sample_image_prompts": []},
    ),
}


def protocol_of(task: str) -> TaskProtocol:
    if task not in PROTOCOLS:
        raise ConfigError(f"validate: unknown task {task!r}; valid: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[task]


@dataclass(frozen=True)
class Recipe:
    """How the offline runs were made; saved as RECIPE_FILE in the results folder, so that a folder holds one
    recipe's runs only and `validate --results DIR` says what it analyses."""

    task: str
    seeds: tuple[int, ...] = (0, 1)
    steps: Optional[int] = None  # None: the task's default
    test_size: Optional[int] = None
    lr_policy: str = "scaled"  # scaled: the config's rate x (task default / suite default); configured: as is;
    lr_from: Optional[str] = None  # sweep: a sweep-summary.json whose chosen_lr per config is used
    overrides: dict[str, Any] = field(default_factory=dict)  # --set, for every run

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "seeds": list(self.seeds)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Recipe":
        known = {key: value for key, value in data.items() if key in cls.__dataclass_fields__}
        return cls(**{**known, "seeds": tuple(known.get("seeds", ()))})

    def describe(self) -> str:
        steps = "task default" if self.steps is None else str(self.steps)
        rate = f"sweep ({self.lr_from})" if self.lr_policy == "sweep" else self.lr_policy
        extra = "".join(f", {key}={value}" for key, value in sorted(self.overrides.items()))
        return (f"{self.task}: steps {steps}, test_size {self.test_size or 'task default'}, lr {rate}, "
                f"seeds {','.join(map(str, self.seeds))}{extra}")


def read_recipe(results: Path) -> Optional[Recipe]:
    path = results / RECIPE_FILE
    if not path.exists():
        return None
    try:
        return Recipe.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{path}: not a validity recipe ({error})") from None


def claim_results_folder(results: Path, recipe: Recipe) -> None:
    """Write the recipe into the folder, or check that the folder's recipe is this one (seeds may grow)."""
    existing = read_recipe(results)
    if existing is not None:
        same = {**existing.to_dict(), "seeds": None} == {**recipe.to_dict(), "seeds": None}
        if not same:
            raise ConfigError(f"{results} holds runs of another recipe ({existing.describe()}); this one is "
                              f"{recipe.describe()}: give another --results folder")
        recipe = Recipe.from_dict({**recipe.to_dict(), "seeds": sorted(set(existing.seeds) | set(recipe.seeds))})
    results.mkdir(parents=True, exist_ok=True)
    (results / RECIPE_FILE).write_text(json.dumps(recipe.to_dict(), indent=2), encoding="utf-8")


# ----------------------------------------------------------------------------- reading


def config_key(method: str, name: str) -> str:
    return f"{method}/{name}"


def read_reference(reference: Path) -> dict[str, float]:
    """config -> test score of the successful reference runs (the mean where a config ran more than once)."""
    from peftbench.analysis.runs import load_results

    if not reference.exists():
        raise ConfigError(f"--reference {reference}: no such file or folder")
    scores: dict[str, list[float]] = {}
    for run in load_results([reference]).runs:
        score = run.metrics.get("test_score")
        if score is not None and not math.isnan(score):
            scores.setdefault(config_key(run.result.method, run.result.name), []).append(score)
    if not scores:
        raise ConfigError(f"--reference {reference}: no successful result with a test score")
    return {config: float(np.mean(values)) for config, values in scores.items()}


@dataclass
class OfflineRuns:
    scores: dict[str, dict[int, float]]  # config -> seed -> test score (a diverged run counts 0: it learned nothing)
    # config -> seed -> final training loss (RANK_BY "train_loss"; a diverged run counts its first step's loss: the
    # untrained model's)
    losses: dict[str, dict[int, float]]
    not_scored: dict[str, str]  # "config seed N" -> status and error (failed: e.g. the config does not fit)
    cpu_s: float  # the runs' CPU seconds, summed
    wall_s: float  # first run's start to last run's end, from the result files' times
    precisions: set[str]


def read_offline(results: Path, task: str, seeds: Optional[Sequence[int]] = None) -> OfflineRuns:
    """The scored runs of `task` in `results` (of `seeds` only, when given)."""
    from peftbench.results.reader import read_result_file

    if not results.is_dir():
        raise ConfigError(f"--results {results}: no such folder")
    runs = OfflineRuns({}, {}, {}, 0.0, 0.0, set())
    spans = []
    for path in sorted(results.glob("*.json")):
        read = read_result_file(path)
        result = read.result
        if result is None or read.source != "peftbench" or result.task not in ("", task):
            continue
        config, seed = config_key(result.method, result.name), result.seed if result.seed is not None else 0
        if seeds is not None and seed not in seeds:
            continue
        if result.status == "success" and result.test_score is not None:
            runs.scores.setdefault(config, {})[seed] = float(result.test_score)
            loss = result.final_train_loss
        elif result.status == "diverged":
            runs.scores.setdefault(config, {})[seed] = 0.0
            loss = _first_loss(result.train_curve)
        else:
            loss = None
            runs.not_scored[f"{config} seed {seed}"] = f"{result.status}: {result.error_msg.splitlines()[0][:100] if result.error_msg else ''}"
        if isinstance(loss, (int, float)) and math.isfinite(loss):
            runs.losses.setdefault(config, {})[seed] = loss
        cpu = result.extra.get("cpu_time_s")
        runs.cpu_s += float(cpu) if isinstance(cpu, (int, float)) else 0.0
        if result.total_time_s:
            end = path.stat().st_mtime
            spans.append((end - result.total_time_s, end))
        if result.precision:
            runs.precisions.add(result.precision)
    if spans:
        runs.wall_s = max(end for _, end in spans) - min(start for start, _ in spans)
    return runs


def _first_loss(curve) -> float:
    """The first step's loss: what a run that diverged counts (the untrained model's loss; nan without one)."""
    return next((float(p["loss"]) for p in curve if isinstance(p, dict) and isinstance(p.get("loss"), (int, float))
                 and math.isfinite(p["loss"])), math.nan)


# ----------------------------------------------------------------------------- analysis


@dataclass(frozen=True)
class ConfigRow:
    config: str
    half: str
    scores: dict[int, float]  # seed -> what the configs are ranked by (ValidityReport.rank_by)
    reference: float
    test_mean: float  # the mean offline test score over seeds: whether the config learns

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.scores.values())))

    @property
    def sd(self) -> float:
        return seed_sd(self.scores)


@dataclass
class ValidityReport:
    task: str
    recipe: Optional[Recipe]
    results: Path
    reference: Optional[Path]
    learns_above: float
    learns_rule: str
    rank_by: str  # a key of RANK_BY
    rows: list[ConfigRow]
    agreement: dict[str, dict[str, RankAgreement]]  # subset ("all", "learn") -> half ("both", CHOOSE, REPORT)
    ceiling: dict[str, Optional[NoiseCeiling]]  # subset -> noise ceiling
    noise: dict[str, SeedNoise]  # subset -> seed noise
    runs: OfflineRuns
    unmatched: list[str]  # offline configs without a reference result

    @property
    def n_learn(self) -> int:
        return sum(row.test_mean >= self.learns_above for row in self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task, "recipe": self.recipe.to_dict() if self.recipe else None,
            "reference": _reference_name(self.reference), "learns_above": self.learns_above, "learns_rule": self.learns_rule,
            "rank_by": self.rank_by, "rank_by_rule": RANK_BY[self.rank_by],
            "n_configs": len(self.rows), "n_learn": self.n_learn,
            "agreement": {subset: {half: a.to_dict() for half, a in halves.items()}
                          for subset, halves in self.agreement.items()},
            "noise_ceiling": {subset: None if c is None else {
                "seed_halves": [list(h) for h in c.halves], **c.agreement.to_dict(),
                "spearman_brown_all_seeds": _finite(c.mean_of_all_seeds),
                "bound_vs_noise_free_reference": _finite(c.bound_vs_noise_free_reference)}
                for subset, c in self.ceiling.items()},
            "seed_noise": {subset: {**{key: _finite(value) if isinstance(value, float) else value
                                       for key, value in asdict(noise).items()},
                                    "spread_per_sd": _finite(noise.spread_per_sd)}
                           for subset, noise in self.noise.items()},
            "cpu_s": round(self.runs.cpu_s, 1), "wall_s": round(self.runs.wall_s, 1),
            "precisions": sorted(self.runs.precisions),
            "configs": [{"config": r.config, "half": r.half, "scores": {str(s): v for s, v in sorted(r.scores.items())},
                         "mean": r.mean, "sd": _finite(r.sd), "test_mean": _finite(r.test_mean),
                         "reference": _finite(r.reference)} for r in self.rows],
            "not_scored": self.runs.not_scored, "unmatched": self.unmatched,
        }


def _reference_name(reference: Optional[Path]) -> Optional[str]:
    """The reference as a saved report names it: the shipped results by their place in the package."""
    if reference is None:
        return None
    return "peftbench/published/metamathqa" if reference.resolve() == PUBLISHED_METAMATHQA.resolve() else str(reference)


def _finite(value: float) -> Optional[float]:
    return None if value is None or math.isnan(value) or math.isinf(value) else value


def analyse(task: str, results: Path, reference: Optional[Path], *, learns_above: Optional[float] = None,
            seeds: Optional[Sequence[int]] = None, n_resamples: int = 2000, rank_by: Optional[str] = None) -> ValidityReport:
    protocol = protocol_of(task)
    rank_by = rank_by or protocol.rank_by
    if rank_by not in RANK_BY:
        raise ConfigError(f"--rank-by {rank_by!r}; valid: {', '.join(RANK_BY)}")
    learns_above = protocol.learns_above if learns_above is None else learns_above
    rule = protocol.learns_rule if learns_above == protocol.learns_above else f"mean score over seeds >= {learns_above}"
    published = read_reference(reference) if reference is not None else None
    runs = read_offline(results, task, seeds)
    ranked = runs.scores if rank_by == "test" else runs.losses
    sign = -1.0 if rank_by == "train_loss" else 1.0  # lower loss ranks higher; the reference is a test score
    # without a reference: the seed noise and the noise ceiling only
    rows = [ConfigRow(config, half_of(config.split("/")[0]), scores,
                      math.nan if published is None else published[config],
                      float(np.mean(list(runs.scores[config].values()))))
            for config, scores in sorted(ranked.items()) if published is None or config in published]
    unmatched = sorted(config for config in ranked if published is not None and config not in published)
    subsets = {"all": rows, "learn": [row for row in rows if row.test_mean >= learns_above]}
    agreement = {} if published is None else {
        subset: {half: rank_agreement([sign * r.mean for r in chosen], [r.reference for r in chosen],
                                      n_resamples=n_resamples)
                 for half, chosen in (("both", members), (CHOOSE, [r for r in members if r.half == CHOOSE]),
                                      (REPORT, [r for r in members if r.half == REPORT]))}
        for subset, members in subsets.items()
    }
    ceiling = {subset: noise_ceiling({r.config: r.scores for r in members}, n_resamples=n_resamples)
               for subset, members in subsets.items()}
    noise = {subset: seed_noise({r.config: r.scores for r in members}) for subset, members in subsets.items()}
    return ValidityReport(task, read_recipe(results), results, reference, learns_above, rule, rank_by, rows,
                          agreement, ceiling, noise, runs, unmatched)


# ----------------------------------------------------------------------------- running


def _folder_lr(folder: Path, suite_default_lr: float) -> float:
    params_file = folder / "training_params.json"
    params = json.loads(params_file.read_text(encoding="utf-8")) if params_file.exists() else {}
    return float(params.get("optimizer_kwargs", {}).get("lr", suite_default_lr))


def _sweep_rates(path: Path) -> dict[str, float]:
    """config -> chosen_lr of a sweep summary (docs/sweep.md)."""
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
        rates = {config: float(entry["chosen_lr"]) for config, entry in summary["experiments"].items()
                 if isinstance(entry, dict) and isinstance(entry.get("chosen_lr"), (int, float))}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"--lr-from {path}: not a sweep summary ({error})") from None
    return rates


def with_scaled_schedule(folder: Path, steps: int, published_steps: int, scratch: Path) -> Path:
    """The folder itself, or, for configs with a step schedule (AdaLoRA), a copy in `scratch` whose schedule is
    scaled from the suite's steps to `steps` (same <method>/<name>, so the same result name)."""
    config_file = folder / "adapter_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.exists() else {}
    if not any(config.get(key) for key in SCHEDULE_KEYS):
        return folder
    copy_dir = scratch / folder.parent.name / folder.name
    shutil.rmtree(copy_dir, ignore_errors=True)
    shutil.copytree(folder, copy_dir)
    for key in SCHEDULE_KEYS:
        if config.get(key):
            config[key] = max(1, round(config[key] * steps / published_steps))
    (copy_dir / "adapter_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return copy_dir


def run_order(folder: Path) -> str:
    """A fixed pseudo-random order of configs: a run stopped early covers a spread of methods, the same for
    every seed (each config's seeds run one after the other)."""
    return hashlib.sha256(config_key(folder.parent.name, folder.name).encode()).hexdigest()


def plan_runs(recipe: Recipe, experiments: Path, results: Path, reference: Optional[dict[str, float]],
              only: Sequence[str] = ()) -> list:
    """The RunRequests of the recipe: every config under `experiments` with a reference result (every config,
    without a reference), each seed."""
    from peftbench.experiments import discover_experiments
    from peftbench.run.request import RunRequest
    from peftbench.tasks import get_task

    protocol = protocol_of(recipe.task)
    if recipe.lr_policy not in LR_POLICIES:
        raise ConfigError(f"--lr-policy {recipe.lr_policy!r}; valid: {', '.join(LR_POLICIES)}")
    suite_defaults_file = experiments.parent / SUITE_DEFAULTS_FILE
    if not experiments.is_dir() or not suite_defaults_file.exists():
        raise ConfigError(f"--experiments {experiments}: expected a PEFT suite's experiments/ folder, with "
                          f"{SUITE_DEFAULTS_FILE} beside it")
    suite_defaults = json.loads(suite_defaults_file.read_text(encoding="utf-8"))
    suite_lr = float(suite_defaults.get("optimizer_kwargs", {}).get("lr", 1e-4))
    suite_steps = int(suite_defaults.get(SUITE_STEPS_KEY, 1))
    task_defaults = get_task(recipe.task).default_params()
    task_lr = float(task_defaults.get("optimizer_kwargs", {}).get("lr", suite_lr))
    steps = recipe.steps or int(task_defaults.get("max_steps", suite_steps))
    rates = _sweep_rates(Path(recipe.lr_from)) if recipe.lr_policy == "sweep" else {}

    folders = [f for f in discover_experiments(experiments)
               if (reference is None or config_key(f.parent.name, f.name) in reference)
               and (not only or any(part in config_key(f.parent.name, f.name) for part in only))]
    if recipe.lr_policy == "sweep":
        missing = [config_key(f.parent.name, f.name) for f in folders if config_key(f.parent.name, f.name) not in rates]
        if missing:
            raise ConfigError(f"--lr-from {recipe.lr_from} has no chosen rate for {len(missing)} config(s): "
                              f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    requests = []
    for folder in sorted(folders, key=run_order):
        config = config_key(folder.parent.name, folder.name)
        overrides: dict[str, Any] = {key: task_defaults[key] for key in protocol.pinned}
        overrides.update(protocol.fixed)
        if recipe.steps:
            overrides.update(max_steps=recipe.steps, eval_steps=recipe.steps)
        if recipe.test_size:
            overrides["test_size"] = recipe.test_size
        if recipe.lr_policy == "scaled":
            overrides["optimizer_kwargs"] = {"lr": _folder_lr(folder, suite_lr) * task_lr / suite_lr}
        elif recipe.lr_policy == "sweep":
            overrides["optimizer_kwargs"] = {"lr": rates[config]}
        overrides.update(recipe.overrides)
        source = with_scaled_schedule(folder, steps, suite_steps, results / SCRATCH_DIR)
        for seed in recipe.seeds:
            requests.append(RunRequest(task=recipe.task, results_dir=str(results.resolve()),
                                       experiment_dir=str(source), overrides=overrides, seed=seed,
                                       save_checkpoint=False, num_threads=1, show_progress=False))
    return requests


def validate(task: str, results: Path, *, reference: Optional[Path] = None, recipe: Optional[Recipe] = None,
             experiments: Optional[Path] = None, workers: int = 2, only: Sequence[str] = (),
             learns_above: Optional[float] = None, seeds: Optional[Sequence[int]] = None,
             n_resamples: int = 2000, rank_by: Optional[str] = None) -> ValidityReport:
    """Run the recipe's configs (when `experiments` is given), then analyse `results` (the runs of `seeds` only,
    when given) against `reference`."""
    protocol = protocol_of(task)
    reference = reference or protocol.reference
    if experiments is not None:
        from peftbench.runners.batch import run_trials

        recipe = recipe or Recipe(task=task, lr_policy=protocol.lr_policy)
        requests = plan_runs(recipe, experiments, results, read_reference(reference) if reference else None, only)
        if not requests:
            matching = f" matching --only {','.join(only)}" if only else ""
            where = f" has a result in {reference}" if reference else ""
            raise ConfigError(f"--experiments {experiments}: no config there{matching}{where}")
        claim_results_folder(results, recipe)
        run_trials(requests, workers=workers, description="validity runs")
    return analyse(task, results, reference, learns_above=learns_above, seeds=seeds, n_resamples=n_resamples,
                   rank_by=rank_by)
