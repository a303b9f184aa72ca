"""Run one experiment in this process: build, train, evaluate, measure, write the result file.

This is what the child process (runners/child.py) does; the parent (runners/local.py) only starts it and
waits. Two modes share the same steps:
- train:    experiment folder -> (peft) model -> training loop -> test score, forgetting, checkpoint;
- evaluate: base model + a saved adapter folder -> test score, forgetting (no training), e.g. after conversion.
Whatever happens, a result file is written (status success, failed, oom, diverged or cancelled).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from peftbench.config import ConfigError, TrainConfig, build_train_config
from peftbench.experiments import ExperimentSpec, build_peft_config, git_commit_of, load_experiment
from peftbench.results.schema import RunMeasurements, build_result
from peftbench.results.writer import result_path, write_json_atomic
from peftbench.tasks import get_task
from peftbench.tasks.base import Task

CHECKPOINTS_DIR = "checkpoints"


@dataclass
class RunRequest:
    """Everything a child needs, as plain JSON (the parent passes it in a file; no pickle)."""

    task: str
    results_dir: str
    mode: str = "train"  # "train" | "evaluate"
    experiment_dir: Optional[str] = None  # train mode
    adapter_dir: Optional[str] = None  # evaluate mode: a save_pretrained folder (peft adapter)
    method: Optional[str] = None  # evaluate mode: names for the result (default: from adapter_dir)
    name: Optional[str] = None
    overrides: dict[str, Any] = field(default_factory=dict)
    seed: Optional[int] = None
    save_checkpoint: bool = True
    result_name: Optional[str] = None
    extra_result_fields: dict[str, Any] = field(default_factory=dict)
    num_threads: Optional[int] = None
    show_progress: bool = True


@dataclass
class PreparedRun:
    """A request checked and resolved without loading any model (cheap; the parent does it too)."""

    task: Task
    config: TrainConfig
    method: str
    name: str
    experiment_name: str
    result_file: Path
    spec: Optional[ExperimentSpec]
    git_commit: Optional[str]


def prepare(request: RunRequest) -> PreparedRun:
    """Validate a request: experiment folder, task, training parameters, data files. Raises ConfigError."""
    task = get_task(request.task)
    if request.mode == "train":
        if not request.experiment_dir:
            raise ConfigError("train mode needs an experiment folder")
        spec = load_experiment(request.experiment_dir)
        training_params, source = spec.training_params, str(spec.training_params_path)
        method, name, location = spec.method, spec.name, spec.path
    elif request.mode == "evaluate":
        if not request.adapter_dir or not (Path(request.adapter_dir) / "adapter_config.json").exists():
            raise ConfigError(f"no adapter_config.json in adapter folder {request.adapter_dir}")
        spec, training_params, source = None, {}, "training_params.json"
        location = Path(request.adapter_dir).resolve()
        method = request.method or location.parent.name
        name = request.name or location.name
    else:
        raise ConfigError(f"unknown mode {request.mode!r}; valid: train, evaluate")
    overrides = dict(request.overrides)
    if request.seed is not None:
        overrides["seed"] = request.seed
    if request.num_threads is not None:
        overrides["num_threads"] = request.num_threads
    config = build_train_config(task.default_params(), training_params, source, overrides, "--set")
    from peftbench.training.methods import check_optimizer_type  # imports torch: after the cheap checks

    check_optimizer_type(config.optimizer_type)
    task.check_inputs(config)
    stem = request.result_name or f"{method}--{name}"
    return PreparedRun(
        task=task, config=config, method=method, name=name, experiment_name=f"{method}/{name}",
        result_file=result_path(request.results_dir, stem), spec=spec, git_commit=git_commit_of(location),
    )


def resolve_device(config: TrainConfig):
    import torch

    if config.device == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {config.device!r} requested but CUDA is not available; use 'cpu' or 'auto'")
    return device


def describe_device(device) -> str:
    import torch

    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return "cpu"


def weights_size_bytes(folder: Path) -> int:
    """Bytes of the weight files (*.safetensors) in a save_pretrained folder, as the PEFT suite's file_size."""
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def peft_config_dict(peft_config) -> Optional[dict[str, Any]]:
    if peft_config is None:
        return None
    return {k: (sorted(v) if isinstance(v, set) else v) for k, v in peft_config.to_dict().items()}


def new_measurements(run: PreparedRun, request: RunRequest, status: str, created_at: Optional[str] = None,
                     error_msg: str = "") -> RunMeasurements:
    """The measurements of a run before it has measured anything: who, what, which config."""
    return RunMeasurements(
        task=run.task.name, method=run.method, name=run.name, experiment_name=run.experiment_name,
        seed=run.config.seed, status=status, error_msg=error_msg,
        created_at=created_at or dt.datetime.now(tz=dt.timezone.utc).replace(microsecond=0).isoformat(),
        git_commit=run.git_commit, train_config=run.config.to_dict(), score_name=run.task.score_name,
        higher_is_better=run.task.higher_is_better, forgetting_name=run.task.forgetting_name,
        model_id=run.config.model_id, extra=dict(request.extra_result_fields),
    )


def execute(request: RunRequest) -> tuple[Path, str]:
    """Run a request end to end in this process and write its result; returns (result file, status)."""
    tic_total = time.perf_counter()
    created_at = dt.datetime.now(tz=dt.timezone.utc).replace(microsecond=0).isoformat()
    run = prepare(request)  # ConfigError here: nothing ran, the caller reports it
    m = new_measurements(run, request, status="failed", created_at=created_at)
    try:
        _run_measured(request, run, m)
    except KeyboardInterrupt:
        m.status, m.error_msg = "cancelled", "cancelled by the user (Ctrl-C)"
    except MemoryError as error:
        m.status, m.error_msg = "oom", f"out of memory: {error}"
    except ConfigError as error:  # bad input found once the model exists (e.g. target modules)
        m.status, m.error_msg = "failed", str(error)
    except Exception as error:  # recorded in the result; other experiments go on
        import torch

        if isinstance(error, torch.OutOfMemoryError):
            m.status, m.error_msg = "oom", f"out of memory: {error}"
        else:
            m.status = "failed"
            m.error_msg = f"{type(error).__name__}: {error}\n{traceback.format_exc(limit=10)}"
    m.total_time_s = time.perf_counter() - tic_total
    write_json_atomic(run.result_file, build_result(m))
    return run.result_file, m.status


def _run_measured(request: RunRequest, run: PreparedRun, m: RunMeasurements) -> None:
    import torch

    from peftbench.training.memory import PeakMemoryMeter
    from peftbench.training.methods import method_support, peft_type_name, wrap_model
    from peftbench.training.train import seed_everything, train, trainable_and_total_params

    config, task = run.config, run.task
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    seed_everything(config.seed)
    device = resolve_device(config)
    m.device = describe_device(device)

    tic_data = time.perf_counter()
    data = task.load_data(config)
    # the PEFT suite's train_time counts its data loading, forgetting losses and test generation (see below)
    suite_extra_time = time.perf_counter() - tic_data
    m.dataset_info = dict(data.info)
    processor = task.load_processor(config)

    meter = PeakMemoryMeter(device)
    meter.start_run()  # baseline: before the model is built
    base_model = task.load_model(config, device)
    if request.mode == "train":
        peft_config = build_peft_config(run.spec)
        model = wrap_model(base_model, peft_config, processor, config, source=str(run.spec.path / "adapter_config.json"))
    else:
        from peft import PeftModel

        # is_trainable=True so that the trainable-parameter count is the adapter's, as after training
        model = PeftModel.from_pretrained(base_model, request.adapter_dir, is_trainable=True)
        peft_config = model.peft_config[model.active_adapter]
    model.to(device)
    m.peft_config = peft_config_dict(peft_config)
    support = method_support(peft_type_name(peft_config))
    full_finetuning = peft_config is None

    forgetting_rows = data.forgetting
    forgetting_reference = None
    if full_finetuning and len(forgetting_rows):
        # no adapter to disable afterwards: measure the base model now
        tic_reference = time.perf_counter()
        forgetting_reference = task.forgetting_reference(model, processor, forgetting_rows, config)
        suite_extra_time += time.perf_counter() - tic_reference

    meter.start_training()
    if request.mode == "train":
        outcome = train(
            model=model, task=task, data=data, processor=processor, config=config, device=device, support=support,
            memory_now=meter.current, show_progress=request.show_progress,
        )
    else:
        from peftbench.training.train import TrainOutcome

        outcome = TrainOutcome()
    meter.end_training()
    m.trainable_params, m.total_params = trainable_and_total_params(model)
    m.status, m.error_msg = outcome.status, outcome.error_msg
    m.steps, m.train_samples, m.train_tokens = outcome.steps_done, outcome.total_samples, outcome.total_tokens
    m.train_curve, m.valid_curve, m.metrics = outcome.train_curve, outcome.valid_curve, outcome.metrics
    m.memory_log = outcome.memory_log
    m.train_time_s = outcome.train_time_s
    m.tokens_per_second = outcome.total_tokens / outcome.train_time_s if outcome.train_time_s > 0 else None
    if outcome.losses:
        window = outcome.losses[-config.eval_steps :]
        m.final_train_loss = sum(window) / len(window)
    if outcome.valid_curve:
        m.valid_score = outcome.valid_curve[-1]["score"]

    if outcome.status == "success":
        tic_eval = time.perf_counter()
        test = task.evaluate(model, processor, data.test, config, desc="test")
        m.test_score, m.per_item_correct = test.score, test.per_item_correct
        if len(forgetting_rows):
            forgetting = task.measure_forgetting(
                model, processor, forgetting_rows, config, reference=forgetting_reference,
                adapter_disabled=None if full_finetuning else model.disable_adapter,
            )
            m.forgetting, m.forgetting_loss_before, m.forgetting_loss_after = (
                forgetting.value, forgetting.before, forgetting.after
            )
        final_eval_time = time.perf_counter() - tic_eval
        m.eval_time_s = outcome.valid_time_s + final_eval_time
        m.suite_train_time_s = m.train_time_s + suite_extra_time + final_eval_time
    else:
        m.eval_time_s = outcome.valid_time_s

    report = meter.report()
    m.peak_memory_kind = report.kind
    m.peak_memory_train_bytes, m.peak_memory_total_bytes = report.train_bytes, report.total_bytes
    m.peak_memory_train_allocated_bytes = report.train_allocated_bytes
    m.peak_memory_total_allocated_bytes = report.total_allocated_bytes

    if outcome.status == "success":  # an unfinished adapter is not worth keeping (nor may it replace a good one)
        _save_or_measure_checkpoint(request, run, model, m, full_finetuning)


def _save_or_measure_checkpoint(request: RunRequest, run: PreparedRun, model, m: RunMeasurements, full: bool) -> None:
    """Save the trained weights under RESULTS/checkpoints/<stem>/ (or measure their size in a temp folder)."""
    if request.mode == "evaluate":
        m.checkpoint_dir = str(Path(request.adapter_dir).resolve())
        m.checkpoint_size_bytes = weights_size_bytes(Path(request.adapter_dir))
        return
    if request.save_checkpoint:
        final = Path(run.result_file).parent / CHECKPOINTS_DIR / run.result_file.stem
        staging = final.with_name(f"{final.name}.tmp-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            model.save_pretrained(staging)
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging, final)  # a checkpoint folder is complete or absent, never half-written
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        m.checkpoint_dir = str(final)
        m.checkpoint_size_bytes = weights_size_bytes(final)
        m.extra["checkpoint_folder_bytes"] = sum(p.stat().st_size for p in final.rglob("*") if p.is_file())
    elif full:
        # saving a whole model only to measure it is wasteful: its size is its parameters' bytes
        m.checkpoint_size_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        m.extra["checkpoint_size_estimated"] = True
    else:
        with tempfile.TemporaryDirectory(prefix="peftbench-size-") as folder:
            model.save_pretrained(folder)
            m.checkpoint_size_bytes = weights_size_bytes(Path(folder))
