"""The plan of one run: a RunRequest resolved once, in the parent, into everything its child needs.

`plan_run` checks and resolves without loading any model: the task, its typed config (the task's defaults, the
experiment's training_params.json, --set), the optimizer's arguments against its signature, the adapter
config's values, the harness tasks, the data files. `decide_hardware` then answers `use_amp: "auto"` and
`cpu_matmul: "auto"` for this machine. The child receives the plan as JSON (`to_dict`), rebuilds its objects
(`from_dict`) and decides nothing again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

from peftbench.config import ConfigError, TrainConfig, value_origin, with_origin
from peftbench.experiments import ExperimentSpec, build_peft_config, git_commit_of, load_experiment
from peftbench.run.request import RunRequest
from peftbench.tasks import get_task
from peftbench.tasks.base import Task


@dataclass
class RunPlan:
    """A request checked and resolved: the task, its typed config, the result file, the experiment folder."""

    request: RunRequest
    task: Task
    config: TrainConfig
    result_file: Path
    spec: Optional[ExperimentSpec]  # train mode: the experiment folder, parsed; evaluate mode: None
    git_commit: Optional[str]
    harness: dict[str, Any] = field(default_factory=dict)  # lm-evaluation-harness: {tasks, include_path, limit}
    # hardware.Hardware.to_dict() and what decided use_amp and cpu_matmul (decide_hardware); None: undecided
    hardware: Optional[dict[str, Any]] = None

    @property
    def method(self) -> str:
        return self.request.names[0]

    @property
    def name(self) -> str:
        return self.request.names[1]

    @property
    def experiment_name(self) -> str:
        return f"{self.method}/{self.name}"

    @property
    def source(self) -> Path:
        """The experiment folder (train) or the adapter folder (evaluate)."""
        return self.request.source

    def handed_on(self, request: RunRequest) -> "RunPlan":
        """This plan with `request` as a batch hands it on to be run (with its progress file): the same run,
        not planned again. A request that differs in anything else is not this plan's (ValueError)."""
        if replace(request, progress_file=None) != replace(self.request, progress_file=None):
            raise ValueError(f"{request.result_stem}: the request differs from the one planned")
        return replace(self, request=request)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: what the child process receives on its stdin."""
        spec = None if self.spec is None else {**dataclasses.asdict(self.spec), "path": str(self.spec.path)}
        return {"request": self.request.to_dict(), "config": self.config.to_dict(), "result_file": str(self.result_file),
                "spec": spec, "git_commit": self.git_commit, "harness": self.harness, "hardware": self.hardware}

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> "RunPlan":
        """The plan `to_dict` wrote: its task instance and typed config rebuilt, nothing decided again."""
        request = RunRequest.from_dict(fields["request"])
        task = get_task(request.task)
        try:
            config = task.config_class(**fields["config"])
        except TypeError as error:  # a plan written by another version of the task
            raise ConfigError(f"the run's plan does not fit task {task.name!r}: {error}") from None
        spec = fields["spec"]
        return cls(request=request, task=task, config=config, result_file=Path(fields["result_file"]),
                   spec=None if spec is None else ExperimentSpec(**{**spec, "path": Path(spec["path"])}),
                   git_commit=fields["git_commit"], harness=fields["harness"], hardware=fields["hardware"])


def plan_run(request: RunRequest) -> RunPlan:
    """Check and resolve a request: experiment folder, task, training parameters, optimizer arguments, adapter
    config, data files, harness tasks. Raises ConfigError, naming the key and where its value came from."""
    task = get_task(request.task)
    if request.mode == "train":
        if not request.experiment_dir:
            raise ConfigError("train mode needs an experiment folder")
        spec = load_experiment(request.experiment_dir)
        training_params, source = spec.training_params, str(spec.training_params_path)
    elif request.mode == "evaluate":
        if not request.adapter_dir or not (Path(request.adapter_dir) / "adapter_config.json").exists():
            raise ConfigError(f"no adapter_config.json in adapter folder {request.adapter_dir}")
        spec, training_params, source = None, {}, "training_params.json"
    else:
        raise ConfigError(f"unknown mode {request.mode!r}; valid: train, evaluate")
    overrides = dict(request.overrides)
    if request.seed is not None:
        overrides["seed"] = request.seed
    if request.num_threads is not None:
        overrides["num_threads"] = request.num_threads
    config = task.build_config(training_params, source, overrides, "--set")
    from peftbench.training.methods import check_optimizer  # imports torch: after the cheap checks

    layers = [(overrides, "--set"), (training_params, source)]
    try:
        check_optimizer(config.optimizer_type, config.optimizer_kwargs, lambda key: value_origin(key, layers))
        task.check_inputs(config)
        if config.valid_loss_steps and not task.has_validation_loss:
            raise ConfigError(f"valid_loss_steps: task {task.name} has no validation loss (its score is generated); "
                              "valid: 0", key="valid_loss_steps")
    except ConfigError as error:
        raise with_origin(error, layers) from None
    if spec is not None:
        build_peft_config(spec)  # the adapter config's values, checked before any model loads
    harness = dict(request.harness) if request.harness.get("tasks") else dict(task.harness)
    if harness.get("tasks"):
        from peftbench.evaluation.harness import check_harness

        check_harness(harness["tasks"], harness.get("include_path"))
    return RunPlan(request=request, task=task, config=config, result_file=request.result_file(), spec=spec,
                   git_commit=git_commit_of(request.source), harness=harness)


def plan_batch(requests: list[RunRequest]) -> list[RunPlan]:
    """Plan a batch before any of it runs, so that a typo does not surface after an hour of training: every
    request is planned (ConfigError for the first bad one), a folder given twice is kept once, two folders
    that would write the same result file are refused, and each results folder must take a real file write.
    Returns the plans to run."""
    from peftbench.results.writer import check_writable

    first_by_file: dict[Path, RunPlan] = {}
    kept = []
    for request in requests:
        plan = plan_run(request)
        first = first_by_file.setdefault(plan.result_file, plan)
        if first is not plan and first.source == plan.source:
            continue
        if first.source != plan.source:
            raise ConfigError(
                f"two experiment folders would write the same result file {plan.result_file}: {first.source} and "
                f"{plan.source} (both are {plan.experiment_name!r}); rename one of them, or run them with "
                "different --results folders"
            )
        kept.append(plan)
    for results_dir in dict.fromkeys(plan.request.results_dir for plan in kept):
        check_writable(results_dir)
    return kept


def decide_hardware(plan: RunPlan) -> RunPlan:
    """`plan` with `use_amp: "auto"` and `cpu_matmul: "auto"` decided for this machine, and the hardware that
    decided them. A cached detection gives every run of this process the same answer; an explicit true/false is
    kept, with the hardware recorded beside it."""
    from peftbench.hardware import resolve_cpu_matmul, resolve_use_amp

    config = plan.config
    use_amp, hardware = resolve_use_amp(config.use_amp, config.device)
    cpu_matmul, cpu_matmul_why = resolve_cpu_matmul(config.cpu_matmul, config.device, compiled=config.compile,
                                                   checkpointed=config.use_gc, results_dir=plan.request.results_dir)
    return replace(plan, config=replace(config, use_amp=use_amp, cpu_matmul=cpu_matmul),
                   hardware={**hardware.to_dict(), "use_amp_setting": config.use_amp,
                             "cpu_matmul_setting": config.cpu_matmul, "cpu_matmul_decided_by": cpu_matmul_why})
