"""Run one experiment in this process: build, train, evaluate, measure, write the result file.

This is what the child process (runners/child.py) does; the parent (runners/isolated.py) only starts it and
waits. Two modes share the same steps:
- train:    experiment folder -> (peft) model -> training loop -> test score, forgetting, checkpoint;
- evaluate: base model + a saved adapter folder -> test score, forgetting (no training), e.g. after conversion.
Whatever happens, a result file is written (status success, failed, oom, diverged or cancelled), or
ResultWriteError says why it could not be.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

from peftbench.config import ConfigError, TrainConfig, with_origin
from peftbench.experiments import ExperimentSpec, build_peft_config, git_commit_of, load_experiment
from peftbench.hardware import precision_name
from peftbench.results.record import RunResult
from peftbench.results.writer import CHECKPOINTS_DIR, result_document, write_json_atomic
from peftbench.cancel import ORPHANED, cancel_reason, interrupt_behind
from peftbench.runners.oom import is_out_of_memory
from peftbench.runners.request import RunRequest
from peftbench.tasks import get_task
from peftbench.tasks.base import Task
from peftbench.timing import CHECKS, DATA, HARNESS, OUTPUT, PREPARE, REFERENCE, TEST, TRAIN, VALID, RunClock

ARTIFACTS_DIR = "artifacts"  # files a task saves with a run (images), RESULTS/artifacts/<result stem>/


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
    source: Path  # the experiment folder (train) or adapter folder (evaluate)
    harness: dict[str, Any] = field(default_factory=dict)


def prepare(request: RunRequest) -> PreparedRun:
    """Validate a request: experiment folder, task, training parameters, data files. Raises ConfigError."""
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
    from peftbench.training.methods import check_optimizer_type  # imports torch: after the cheap checks

    try:
        check_optimizer_type(config.optimizer_type)
        task.check_inputs(config)
    except ConfigError as error:
        raise with_origin(error, [(overrides, "--set"), (training_params, source)]) from None
    if spec is not None:
        build_peft_config(spec)  # the adapter config's values, checked before any model loads
    harness = dict(request.harness) if request.harness.get("tasks") else dict(task.harness)
    if harness.get("tasks"):
        from peftbench.evaluation.harness import check_harness

        check_harness(harness["tasks"], harness.get("include_path"))
    method, name = request.names
    return PreparedRun(
        task=task, config=config, method=method, name=name, experiment_name=f"{method}/{name}",
        result_file=request.result_file(), spec=spec, git_commit=git_commit_of(request.source),
        source=request.source, harness=harness,
    )


def check_requests(requests: list[RunRequest]) -> list[RunRequest]:
    """Check a batch before any of it runs, so that a typo does not surface after an hour of training: every
    request is prepared (ConfigError for the first bad one), a folder given twice is kept once, two folders
    that would write the same result file are refused, and each results folder must take a real file write.
    Returns the requests to run."""
    from peftbench.results.writer import check_writable

    first_by_file: dict[Path, PreparedRun] = {}
    kept = []
    for request in requests:
        run = prepare(request)
        first = first_by_file.setdefault(run.result_file, run)
        if first is not run and first.source == run.source:
            continue
        if first.source != run.source:
            raise ConfigError(
                f"two experiment folders would write the same result file {run.result_file}: {first.source} and "
                f"{run.source} (both are {run.experiment_name!r}); rename one of them, or run them with "
                "different --results folders"
            )
        kept.append(request)
    for results_dir in dict.fromkeys(request.results_dir for request in kept):
        check_writable(results_dir)
    return kept


def resolve_precision(request: RunRequest, config: TrainConfig) -> RunRequest:
    """Decide `use_amp: "auto"` and `cpu_matmul: "auto"` for this machine, once; returns `request` with the answers
    and what decided them.

    The answer goes into the returned request's overrides (so the child trains with it and its result records
    it) and the hardware description into its `hardware`; a cached detection gives every run of this process
    the same answer. An explicit true/false is kept, with the hardware recorded beside it. `request` itself is
    left as it is: the requests of a batch may share their overrides.
    """
    from peftbench.hardware import resolve_cpu_matmul, resolve_use_amp

    use_amp, hardware = resolve_use_amp(config.use_amp, config.device)
    cpu_matmul, cpu_matmul_why = resolve_cpu_matmul(config.cpu_matmul, config.device, compiled=config.compile,
                                                   checkpointed=config.use_gc, results_dir=request.results_dir)
    resolved = replace(request, overrides={**request.overrides, "use_amp": use_amp, "cpu_matmul": cpu_matmul},
                       hardware={**hardware.to_dict(), "use_amp_setting": config.use_amp,
                                 "cpu_matmul_setting": config.cpu_matmul, "cpu_matmul_decided_by": cpu_matmul_why})
    config.use_amp, config.cpu_matmul = use_amp, cpu_matmul
    return resolved


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


def new_result(run: PreparedRun, request: RunRequest, status: str, created_at: Optional[str] = None,
               error_msg: str = "") -> RunResult:
    """The result of a run before it has measured anything: who, what, which config."""
    return RunResult(
        task=run.task.name, method=run.method, name=run.name, experiment_name=run.experiment_name,
        seed=run.config.seed, status=status, error_msg=error_msg,
        created_at=created_at or dt.datetime.now(tz=dt.timezone.utc).replace(microsecond=0).isoformat(),
        git_commit=run.git_commit, train_config=run.config.to_dict(), score_name=run.task.score_name,
        higher_is_better=run.task.higher_is_better, forgetting_name=run.task.forgetting_name,
        forgetting_higher_is_better=run.task.forgetting_higher_is_better,
        throughput_unit=f"{run.task.throughput_unit}/s", suite_memory_scope=run.task.suite_memory_scope,
        model_id=run.config.model_id, extra={**run.task.provenance(), **request.result_fields()},
        precision=precision_name(run.config.dtype, run.config.use_amp), hardware=request.hardware,
    )


def execute(request: RunRequest) -> tuple[Path, str]:
    """Run a request end to end in this process and write its result; returns (result file, status)."""
    clock = RunClock()
    created_at = dt.datetime.now(tz=dt.timezone.utc).replace(microsecond=0).isoformat()
    with clock.phase(CHECKS):
        run = prepare(request)  # ConfigError here: nothing ran, the caller reports it
    if request.hardware is None or "auto" in (run.config.use_amp, run.config.cpu_matmul):  # no parent decided
        request = resolve_precision(request, run.config)
    m = new_result(run, request, status="failed", created_at=created_at)
    try:
        from peftbench.training.onednn_linear import onednn_linears

        with onednn_linears(run.config.cpu_matmul == "onednn"):
            _run_measured(request, run, m, clock)
    except KeyboardInterrupt as interrupt:  # Ctrl-C, SIGTERM, SIGHUP, the parent's death (peftbench.cancel)
        m.status, m.error_msg = "cancelled", cancel_reason(interrupt)
    except ConfigError as error:  # bad input found once the model exists (e.g. target modules)
        m.status, m.error_msg = "failed", str(error)
    except Exception as error:  # recorded in the result; other experiments go on
        interrupt = interrupt_behind(error)
        if interrupt is not None:  # a cleanup that failed while the run was being cancelled
            m.status, m.error_msg = "cancelled", cancel_reason(interrupt)
        elif is_out_of_memory(error):  # MemoryError, CUDA's, or the CPU allocator's under a process limit
            m.status, m.error_msg = "oom", f"out of memory: {error}"
        elif isinstance(error, BrokenPipeError):  # its stderr's reader, the parent, is gone
            m.status, m.error_msg = "cancelled", ORPHANED
        else:
            m.status = "failed"
            m.error_msg = f"{type(error).__name__}: {error}\n{traceback.format_exc(limit=10)}"
    clock.stop()
    m.total_time_s, m.suite_total_time_s = clock.elapsed(), clock.suite_total_time()
    m.time_by_phase_s = dict(clock.seconds)
    # CPU seconds of this child since it started (imports included): unlike wall times, barely moved by other
    # processes on the machine, and at one torch thread equal to the wall time on an idle core
    m.extra["cpu_time_s"] = time.process_time()
    write_json_atomic(run.result_file, result_document(m), allow_nan=True)
    return run.result_file, m.status


def _run_measured(request: RunRequest, run: PreparedRun, m: RunResult, clock: RunClock) -> None:
    import torch

    from peftbench.evaluation.validity import run_warnings
    from peftbench.runners.progress import ProgressFile
    from peftbench.training.memory import PeakMemoryMeter
    from peftbench.training.methods import method_support, peft_type_name, wrap_model
    from peftbench.training.train import seed_everything, train, trainable_and_total_params

    config, task = run.config, run.task
    task.artifacts_dir = run.result_file.parent / ARTIFACTS_DIR / run.result_file.stem
    progress = ProgressFile(request.progress_file)
    progress.update("loading")
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    seed_everything(config.seed)
    device = resolve_device(config)
    m.device = describe_device(device)

    with clock.phase(DATA):
        data = task.load_data(config)
    m.dataset_info = data.info  # the same dict: what before_training notes in it (training rows left out) too
    processor = task.load_processor(config)

    meter = PeakMemoryMeter(device)
    meter.start_run()  # baseline: before the model is built
    base_model = task.load_model(config, device)
    if getattr(config, "float32_loading", "float32") == "checkpoint" and config.dtype == "float32":
        # the checkpoint's own dtype, whatever `dtype` says: record the precision the weights had
        weights_dtype = str(next(base_model.parameters()).dtype).removeprefix("torch.")
        m.precision = precision_name(weights_dtype, config.use_amp)
        m.extra["weights_dtype"] = weights_dtype
    if request.mode == "train":
        peft_config = build_peft_config(run.spec)
        model = wrap_model(base_model, peft_config, processor, config, source=str(run.spec.path / "adapter_config.json"))
    else:
        from peftbench.adapter_loading import load_adapter_strictly

        # is_trainable=True so that the trainable-parameter count is the adapter's, as after training; strictly, so
        # that a partly loaded adapter (AdapterLoadError, a ConfigError) is recorded as failed, never measured
        model = load_adapter_strictly(base_model, request.adapter_dir, is_trainable=True)
        peft_config = model.peft_config[model.active_adapter]
    model.to(device)
    m.peft_config = peft_config_dict(peft_config)
    support = method_support(peft_type_name(peft_config))
    full_finetuning = peft_config is None

    forgetting_rows = data.forgetting
    # track_memory "run": the tensor tracker also watches evaluation and forgetting (see docs/engine.md "Memory")
    track = (lambda function: meter.tracked(model, function)) if config.track_memory == "run" else (lambda f: f)
    forgetting_reference = harness_reference = None
    if full_finetuning and len(forgetting_rows):
        # no adapter to disable afterwards: measure the base model now
        with clock.phase(REFERENCE):
            forgetting_reference = track(task.forgetting_reference)(model, processor, forgetting_rows, config)
    if full_finetuning and run.harness and request.mode == "train":
        from peftbench.evaluation.harness import harness_scores

        with clock.phase(HARNESS):
            harness_reference = harness_scores(model, processor, run.harness["tasks"], **_harness_options(run, config))

    with clock.phase(PREPARE):
        task.before_training(model, processor, data, config)  # e.g. caches

    meter.start_training()
    if request.mode == "train":
        outcome = train(
            model=model, task=task, data=data, processor=processor, config=config, device=device, support=support,
            memory_now=meter.current, memory_allocated_now=meter.allocated_now, memory_excluded=meter.excluded,
            show_progress=request.show_progress, on_progress=progress.update,
            suite_elapsed_before_s=clock.total(task.suite_train_phases),
            # compiled code runs its own kernels, out of a dispatch mode's sight: no tensor-level figure then
            tensor_memory=None if config.compile else meter.tensors,
        )
    else:
        from peftbench.training.train import TrainOutcome

        outcome = TrainOutcome()
    meter.end_training()
    # again after training, as the suite logs it: AdaLoRA writes its final rank_pattern into the model's config
    m.peft_config = peft_config_dict(model.peft_config[model.active_adapter] if peft_config is not None else None)
    clock.add(TRAIN, outcome.train_time_s)
    clock.add(VALID, outcome.valid_time_s)
    m.trainable_params, m.total_params = trainable_and_total_params(model)
    m.status, m.error_msg = outcome.status, outcome.error_msg
    m.steps, m.train_samples, m.train_tokens = outcome.steps_done, outcome.total_samples, outcome.total_tokens
    m.train_curve, m.valid_curve, m.metrics = outcome.train_curve, outcome.valid_curve, outcome.metrics
    m.memory_reserved_avg, m.memory_reserved_99th = memory_log_summary(outcome.memory_log)
    if outcome.optimizer_settings:
        m.extra["optimizer"] = {"type": config.optimizer_type, "settings": outcome.optimizer_settings}
    m.train_time_s = clock.seconds[TRAIN]
    m.throughput = outcome.total_tokens / outcome.train_time_s if outcome.train_time_s > 0 else None
    m.tokens_per_second = m.throughput if m.throughput_unit == "tokens/s" else None
    if outcome.losses:
        window = outcome.losses[-config.eval_steps :]
        m.final_train_loss = sum(window) / len(window)
    if outcome.valid_curve:
        m.valid_score = outcome.valid_curve[-1]["score"]

    try:
        if outcome.status == "success":
            tic_eval = time.perf_counter()
            progress.update("test")
            eval_model = merged_copy(model, peft_config) if config.merge_for_eval else model
            m.extra["evaluated_merged"] = eval_model is not model  # what merge_for_eval did for this adapter
            test = track(task.evaluate)(eval_model, processor, data.test, config, desc="test")
            del eval_model  # the forgetting measure below needs the adapter that can be switched off
            m.test_score, m.per_item_correct = test.score, test.per_item_correct
            m.predictions = item_predictions(test)
            m.completions_at_length_limit = test.completions_at_length_limit
            m.run_warnings = run_warnings(m, len(data.test))
            if len(forgetting_rows):
                progress.update("forgetting")
                forgetting = track(task.measure_forgetting)(
                    model, processor, forgetting_rows, config, reference=forgetting_reference,
                    adapter_disabled=None if full_finetuning else model.disable_adapter,
                )
                m.forgetting, m.forgetting_loss_before, m.forgetting_loss_after = (
                    forgetting.value, forgetting.before, forgetting.after
                )
            clock.add(TEST, time.perf_counter() - tic_eval)
            m.suite_train_time_s = clock.total(task.suite_train_phases)
        m.eval_time_s = clock.total((VALID, TEST))

        report = meter.report()
        m.peak_memory_kind = report.kind
        m.peak_memory_train_bytes, m.peak_memory_total_bytes = report.train_bytes, report.total_bytes
        m.peak_memory_train_allocated_bytes = report.train_allocated_bytes
        m.peak_memory_total_allocated_bytes = report.total_allocated_bytes
        m.peak_memory_train_breakdown = report.train_breakdown
        m.peak_memory_tracked_steps = outcome.memory_tracked_steps
        m.peak_memory_cuda_train_allocated_bytes = report.cuda_train_allocated_bytes
        m.peak_memory_cuda_total_allocated_bytes = report.cuda_total_allocated_bytes

        if outcome.status == "success" and run.harness:  # after the memory report: the harness is not the run's
            from peftbench.evaluation.harness import measure_harness

            try:
                with clock.phase(HARNESS):
                    m.extra["harness"] = measure_harness(
                        model, processor, run.harness["tasks"], **_harness_options(run, config),
                        reference=harness_reference, adapter_disabled=None if full_finetuning else model.disable_adapter,
                    )
            except Exception as error:  # the run itself succeeded: keep its measurements, say what the harness did
                m.extra["harness"] = {"error": f"{type(error).__name__}: {error}"[:2000]}

        if outcome.status == "success":  # the task's own output after the measured run (e.g. sample images)
            with clock.phase(OUTPUT):
                m.extra.update(task.after_run(model, processor, config))
    except Exception:
        if outcome.status == "success":  # training finished: its adapter is kept though scoring or measuring failed
            _save_or_measure_checkpoint(request, run, model, m, full_finetuning)
        raise
    # saved after the measurements, which it would otherwise add to; an unfinished adapter is not worth keeping
    # (nor may it replace a good one)
    if outcome.status == "success":
        _save_or_measure_checkpoint(request, run, model, m, full_finetuning)


def memory_log_summary(memory_log: list[int]) -> tuple[Optional[int], Optional[int]]:
    """(mean, 99th percentile) of the memory sampled during training: the PEFT suite's reserved-memory figures."""
    if not memory_log:
        return None, None
    ordered = sorted(memory_log)
    index = min(len(ordered) - 1, max(0, round(0.99 * (len(ordered) - 1))))
    return int(sum(memory_log) / len(memory_log)), int(ordered[index])


def merged_copy(model, peft_config):
    """A copy of `model` with the adapter merged into its weights (`model` itself is left as it is), or `model`
    where there is nothing peft can merge: full fine-tuning, prompt learning, a tuner without merging."""
    if peft_config is None or peft_config.is_prompt_learning:
        return model
    import copy

    try:
        return copy.deepcopy(model).merge_and_unload()
    except (AttributeError, NotImplementedError, ValueError, TypeError) as error:  # peft: this tuner cannot merge
        warnings.warn(f"merge_for_eval: evaluating unmerged, peft cannot merge this adapter ({error})", stacklevel=2)
        return model


def _harness_options(run: PreparedRun, config: TrainConfig) -> dict[str, Any]:
    return {"include_path": run.harness.get("include_path"), "limit": run.harness.get("limit"),
            "batch_size": config.batch_size_eval, "max_length": config.max_seq_length}


def item_predictions(test) -> list[dict[str, Any]]:
    """Each test item's input, prediction, target and score, for people to read (the report shows some)."""
    if not test.targets:
        return []
    inputs = test.inputs or [None] * len(test.targets)
    return [
        {"input": text, "prediction": prediction, "target": target, "score": score}
        for text, prediction, target, score in zip(inputs, test.predictions, test.targets, test.per_item_correct)
    ]


def _save_or_measure_checkpoint(request: RunRequest, run: PreparedRun, model, m: RunResult, full: bool) -> None:
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
