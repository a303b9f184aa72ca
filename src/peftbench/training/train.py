"""The training loop: plain PyTorch, the whole loop in view.

Every method gets exactly this: AdamW (or the configured optimizer), cosine schedule with linear warm-up,
gradient clipping, the task's length-bucketed batches, validation every `eval_steps`. The only
method-specific calls go through `training.methods` (optimizer builders, AdaLoRA's rank update). The loss is
the task's. A NaN/inf loss stops the run with status "diverged"; Ctrl-C gives "cancelled"; running out of
memory gives "oom". A sweep's successive halving (`stop_after_validation`, training.pruning) may stop a run after a
validation (of the score every `eval_steps`, or of the loss every `valid_loss_steps`): status "pruned".
"""

from __future__ import annotations

import math
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from peftbench.config import TrainConfig
from peftbench.stop_status import stop_status
from peftbench.tasks.base import Task, TaskData
from peftbench.training.methods import MethodSupport, build_optimizer
from peftbench.training.tensor_memory import StepSampler, TensorMemoryTracker


@dataclass
class TrainOutcome:
    """What the loop measured. Fields named as RunResult's are that field's value (the engine fills the result
    by name); the others are the engine's to turn into one."""

    status: str = "success"  # success | diverged | oom | cancelled | failed | pruned
    error_msg: str = ""
    steps: int = 0  # steps done
    train_seconds: float = 0.0  # training only: the loop minus validation
    valid_seconds: float = 0.0
    train_units: int = 0  # what the task's throughput counts (TrainBatch.num_units): tokens, or images
    train_samples: int = 0
    losses: list[float] = field(default_factory=list)
    train_curve: list[dict[str, Any]] = field(default_factory=list)  # {step, loss, lr}
    valid_curve: list[dict[str, Any]] = field(default_factory=list)  # {step, score}
    valid_loss_curve: list[dict[str, Any]] = field(default_factory=list)  # {step, loss}, every valid_loss_steps
    metrics: list[dict[str, Any]] = field(default_factory=list)  # the PEFT suite's train_info.metrics entries
    memory_log: list[int] = field(default_factory=list)  # memory in use after each step (bytes above baseline)
    peak_memory_tracked_steps: list[int] = field(default_factory=list)  # steps the tensor tracker watched
    # the optimizer's actual hyperparameters (its `defaults`): what optimizer_kwargs amounted to, AdamW's own
    # defaults included (a suite that merges training_params.json shallowly can drop a key silently)
    optimizer_settings: dict[str, Any] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def build_lr_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig):
    from transformers import get_constant_schedule, get_cosine_schedule_with_warmup

    if config.lr_scheduler == "cosine":
        warmup_steps = int(config.warmup_ratio * config.max_steps)
        return get_cosine_schedule_with_warmup(optimizer, warmup_steps, config.max_steps)
    return get_constant_schedule(optimizer)


def autocast_context(config: TrainConfig, device: torch.device):
    """bf16 autocast when use_amp is set (bf16 needs no gradient scaler). "auto" must have been resolved by the
    runner (peftbench.hardware) before training: precision is recorded, never decided silently here."""
    if config.use_amp == "auto":
        raise ValueError("use_amp 'auto' reached the training loop unresolved; resolve it with peftbench.hardware")
    if config.use_amp:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def train(
    *,
    model: torch.nn.Module,
    task: Task,
    data: TaskData,
    processor: Any,
    config: TrainConfig,
    device: torch.device,
    support: MethodSupport,
    memory_now: Callable[[], int] = lambda: 0,
    memory_allocated_now: Callable[[], Optional[int]] = lambda: None,
    tensor_memory: Optional[TensorMemoryTracker] = None,
    # a context the validations run in, so that the process-level training peak leaves them out
    memory_excluded: Callable[[], Any] = nullcontext,
    show_progress: bool = True,
    on_progress: Callable[[str, int, int], None] = lambda phase, step, total: None,  # ("train" | "valid", step, total)
    # seconds the PEFT suite's train-time clock had run when the loop starts (a validation's "elapsed time")
    suite_elapsed_before_s: float = 0.0,
    # after each validation, (step, "score" | "loss", value): True stops the run there, "pruned" (a halving
    # sweep's rung decision)
    stop_after_validation: Optional[Callable[[int, str, float], bool]] = None,
) -> TrainOutcome:
    outcome = TrainOutcome()
    optimizer = build_optimizer(model, config.optimizer_type, config.optimizer_kwargs)
    scheduler = build_lr_scheduler(optimizer, config)
    outcome.optimizer_settings = {
        key: (list(value) if isinstance(value, tuple) else value) for key, value in optimizer.defaults.items()
        if isinstance(value, (bool, int, float, str, type(None))) or isinstance(value, tuple)
    }
    trainable = [p for p in model.parameters() if p.requires_grad]
    forward_model = torch.compile(model, dynamic=True) if config.compile else model
    batches = iter(task.train_batches(data.train, processor, config, seed=config.seed))
    step_durations: list[float] = []  # of the steps since the last validation
    allocated: list[Optional[int]] = []  # the allocator's bytes after each of those steps (None on a CPU)
    units_at_last_validation = 0
    # tensor-level peak memory, on the few steps that can set it (see training.tensor_memory.StepSampler)
    sampler = StepSampler(tensor_memory, model, optimizer) if tensor_memory is not None else None

    model.train()
    tic_loop = time.perf_counter()
    progress = tqdm(total=config.max_steps, desc="train", unit="step", disable=not show_progress, dynamic_ncols=True)
    try:
        for step in range(1, config.max_steps + 1):
            # a step's duration, as the PEFT suite's: from making its batch to the memory sample after the update
            tic_step = time.perf_counter()
            host_batch = next(batches, None)
            if host_batch is None:  # a task's batches may end before max_steps (the PEFT suite's one pass)
                break
            batch = task.to_device(host_batch, device)
            if sampler:
                sampler.begin(step, batch.inputs)
            optimizer.zero_grad(set_to_none=True)
            with autocast_context(config, device):
                loss = task.compute_loss(forward_model, batch)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                outcome.status = "diverged"
                outcome.error_msg = f"loss became {loss_value} at step {step}"
                break
            loss.backward()
            if config.grad_norm_clip:
                torch.nn.utils.clip_grad_norm_(trainable, config.grad_norm_clip)
            optimizer.step()
            scheduler.step()
            support.after_optimizer_step(model, step)
            if sampler:
                sampler.end()

            outcome.steps = step
            outcome.train_units += batch.num_units
            outcome.train_samples += _batch_size(batch)
            outcome.losses.append(loss_value)
            lr = scheduler.get_last_lr()[0]
            outcome.train_curve.append({"step": step, "loss": loss_value, "lr": lr})
            outcome.memory_log.append(memory_now())
            allocated.append(memory_allocated_now())
            step_durations.append(time.perf_counter() - tic_step)
            progress.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", refresh=False)
            progress.update(1)
            on_progress("train", step, config.max_steps)

            if config.valid_loss_steps and step % config.valid_loss_steps == 0 and len(data.valid) > 0:
                tic_valid = time.perf_counter()
                with memory_excluded(), autocast_context(config, device):
                    valid_loss = task.validation_loss(model, processor, data.valid, config)
                model.train()
                outcome.valid_seconds += time.perf_counter() - tic_valid
                outcome.valid_loss_curve.append({"step": step, "loss": valid_loss})
                if stop_after_validation is not None and stop_after_validation(step, "loss", valid_loss):
                    outcome.status = "pruned"
                    outcome.error_msg = f"pruned at step {step} with valid loss {valid_loss:.4g}"
                    break

            if step % config.eval_steps == 0 and len(data.valid) > 0:
                on_progress("valid", step, config.max_steps)
                tic_valid = time.perf_counter()
                with memory_excluded():
                    result = task.evaluate(model, processor, data.valid, config, desc="valid")
                model.train()
                valid_time = time.perf_counter() - tic_valid
                outcome.valid_seconds += valid_time
                # the PEFT suite's entry: means over the steps since the last validation, and the time since its
                # train-time clock started (validations included)
                window = len(step_durations)
                train_time_window = sum(step_durations)
                units_window = outcome.train_units - units_at_last_validation
                outcome.valid_curve.append({"step": step, "score": result.score})
                outcome.metrics.append(
                    {
                        "step": step,
                        f"valid {task.score_name}": result.score,
                        "train loss": sum(outcome.losses[-window:]) / window,
                        "train samples": outcome.train_samples,
                        "train time": train_time_window,
                        "eval time": valid_time,
                        f"{task.throughput_unit} / sec": units_window / max(train_time_window, 1e-9),
                        "mem allocated avg": None if None in allocated else sum(allocated) / window,
                        "mem reserved avg": sum(outcome.memory_log[-window:]) / window,
                        "elapsed time": suite_elapsed_before_s + time.perf_counter() - tic_loop,
                    }
                )
                step_durations, allocated, units_at_last_validation = [], [], outcome.train_units
                progress.write(
                    f"step {step}: valid {task.score_name} {result.score:.3f}, loss {loss_value:.4f}", file=sys.stderr
                )
                if stop_after_validation is not None and stop_after_validation(step, "score", result.score):
                    outcome.status = "pruned"
                    outcome.error_msg = f"pruned at step {step} with valid {task.score_name} {result.score:.4g}"
                    break
    except (KeyboardInterrupt, Exception) as error:  # recorded in the result; the runner goes on with the next run
        outcome.status, outcome.error_msg = stop_status(error, during=" during training", traceback_limit=8)
    finally:
        if sampler:
            sampler.end()
            outcome.peak_memory_tracked_steps = sampler.tracked_steps
        progress.close()
    outcome.train_seconds = time.perf_counter() - tic_loop - outcome.valid_seconds
    model.eval()
    return outcome


def _batch_size(batch) -> int:
    for value in batch.inputs.values():
        if hasattr(value, "shape") and len(value.shape) > 0:
            return int(value.shape[0])
    return 0


def trainable_and_total_params(model: torch.nn.Module) -> tuple[int, int]:
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


