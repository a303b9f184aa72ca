"""The result file's layout (docs/ARCHITECTURE.md): the PEFT suite's `run_info` / `train_info` / `meta_info`,
so that its published results and ours load through the same code, plus peftbench's own `peftbench` section.

`build_result` is the one place that turns a run's measurements into that layout.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from typing import Any, Optional

SCHEMA_VERSION = 1
STATUSES = ("success", "failed", "oom", "killed", "diverged", "cancelled")  # docs/reliability.md


@dataclass
class RunMeasurements:
    """Everything one run produced. Fields a failed run never reached stay None/empty."""

    task: str
    method: str
    name: str
    experiment_name: str  # "<method>/<name>"
    seed: Optional[int]
    status: str
    created_at: str
    error_msg: str = ""
    git_commit: Optional[str] = None
    train_config: Optional[dict[str, Any]] = None
    peft_config: Optional[dict[str, Any]] = None
    score_name: str = "accuracy"
    higher_is_better: bool = True
    forgetting_name: str = "forgetting"
    forgetting_higher_is_better: bool = False
    throughput_unit: str = "tokens/s"  # the task's: tokens/s (text), images/s (image generation)
    # which process-level peak is the PEFT suite's train_info.accelerator_memory_max: "run" or "train"
    suite_memory_scope: str = "run"
    test_score: Optional[float] = None
    valid_score: Optional[float] = None
    per_item_correct: list[int] = field(default_factory=list)
    # per test item: {input, prediction, target, score} (text tasks), in the order of per_item_correct
    predictions: list[dict[str, Any]] = field(default_factory=list)
    train_curve: list[dict[str, Any]] = field(default_factory=list)
    valid_curve: list[dict[str, Any]] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)  # the PEFT suite's train_info.metrics
    final_train_loss: Optional[float] = None
    forgetting: Optional[float] = None
    forgetting_loss_before: Optional[float] = None  # adapter disabled (or base model before full fine-tuning)
    forgetting_loss_after: Optional[float] = None
    steps: int = 0
    train_samples: int = 0
    train_tokens: int = 0
    peak_memory_kind: Optional[str] = None
    peak_memory_train_bytes: Optional[int] = None
    peak_memory_total_bytes: Optional[int] = None
    # tensor-level (training.tensor_memory), every device: the headline memory figure
    peak_memory_train_allocated_bytes: Optional[int] = None
    peak_memory_total_allocated_bytes: Optional[int] = None
    peak_memory_train_breakdown: dict[str, int] = field(default_factory=dict)  # category -> bytes at the peak
    peak_memory_tracked_steps: list[int] = field(default_factory=list)
    # CUDA only: torch.cuda.max_memory_allocated of the same run, to check the tracker against
    peak_memory_cuda_train_allocated_bytes: Optional[int] = None
    peak_memory_cuda_total_allocated_bytes: Optional[int] = None
    memory_log: list[int] = field(default_factory=list)
    train_time_s: Optional[float] = None  # the training loop minus validation (peftbench's own definition)
    # the PEFT suite's train_time: the above plus data loading, the forgetting losses and the final test
    # generation (everything its train() does except the periodic validation); None when not measured
    suite_train_time_s: Optional[float] = None
    eval_time_s: Optional[float] = None
    total_time_s: Optional[float] = None
    throughput: Optional[float] = None  # training units (throughput_unit) per second of train_time_s
    checkpoint_size_bytes: Optional[int] = None
    checkpoint_dir: Optional[str] = None
    trainable_params: Optional[int] = None
    total_params: Optional[int] = None
    device: Optional[str] = None
    precision: Optional[str] = None  # hardware.precision_name: "fp32", "bf16-autocast", ...
    hardware: Optional[dict[str, Any]] = None  # hardware.Hardware.to_dict(): what decided the precision
    dataset_info: dict[str, Any] = field(default_factory=dict)
    model_id: Optional[str] = None
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. {"sweep": {...}}, {"conversion": {...}}


def _percentile(values: list[int], q: float) -> Optional[int]:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return int(ordered[index])


def package_info() -> dict[str, Optional[str]]:
    from importlib.metadata import PackageNotFoundError, version

    info: dict[str, Optional[str]] = {}
    for package in ("transformers", "peft", "datasets", "torch", "peftbench"):
        try:
            info[f"{package}-version"] = version(package)
        except PackageNotFoundError:
            info[f"{package}-version"] = None
        info[f"{package}-commit-hash"] = None
    return info


def system_info(device: Optional[str]) -> dict[str, Any]:
    import os

    return {
        "system": platform.system(),
        "release": platform.release(),
        "version": platform.version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "accelerator": device,
    }


def pytorch_info() -> Optional[str]:
    import sys

    torch = sys.modules.get("torch")  # a parent recording a crashed child need not import torch for this
    return torch.__config__.show() if torch is not None else None


def build_result(m: RunMeasurements) -> dict[str, Any]:
    if m.status not in STATUSES:
        raise ValueError(f"invalid status {m.status!r}; valid: {', '.join(STATUSES)}")
    metrics = list(m.metrics)
    if m.status == "success":
        metrics.append(
            {
                "step": m.steps,
                f"test {m.score_name}": m.test_score,
                "train loss": m.final_train_loss,
                "train samples": m.train_samples,
                f"train total {m.throughput_unit.removesuffix('/s')}": m.train_tokens,
                m.forgetting_name: m.forgetting,
            }
        )
    peftbench = {
        "schema_version": SCHEMA_VERSION,
        "task": m.task,
        "method": m.method,
        "name": m.name,
        "seed": m.seed,
        "status": m.status,
        "error_msg": m.error_msg,
        "git_commit": m.git_commit,
        "score_name": m.score_name,
        "higher_is_better": m.higher_is_better,
        "forgetting_name": m.forgetting_name,
        "forgetting_higher_is_better": m.forgetting_higher_is_better,
        "test_score": m.test_score,
        "valid_score": m.valid_score,
        "per_item_correct": m.per_item_correct,
        "predictions": m.predictions,
        "train_curve": m.train_curve,
        "valid_curve": m.valid_curve,
        "forgetting": m.forgetting,
        "forgetting_loss_before": m.forgetting_loss_before,
        "forgetting_loss_after": m.forgetting_loss_after,
        "peak_memory_kind": m.peak_memory_kind,
        "peak_memory_train_bytes": m.peak_memory_train_bytes,
        "peak_memory_total_bytes": m.peak_memory_total_bytes,
        "peak_memory_train_allocated_bytes": m.peak_memory_train_allocated_bytes,
        "peak_memory_total_allocated_bytes": m.peak_memory_total_allocated_bytes,
        "peak_memory_train_breakdown": m.peak_memory_train_breakdown,
        "peak_memory_tracked_steps": m.peak_memory_tracked_steps,
        "peak_memory_cuda_train_allocated_bytes": m.peak_memory_cuda_train_allocated_bytes,
        "peak_memory_cuda_total_allocated_bytes": m.peak_memory_cuda_total_allocated_bytes,
        "train_time_s": m.train_time_s,
        "eval_time_s": m.eval_time_s,
        "total_time_s": m.total_time_s,
        "throughput": m.throughput,
        "throughput_unit": m.throughput_unit,
        "tokens_per_second": m.throughput if m.throughput_unit == "tokens/s" else None,
        "checkpoint_size_bytes": m.checkpoint_size_bytes,
        "checkpoint_dir": m.checkpoint_dir,
        "trainable_params": m.trainable_params,
        "total_params": m.total_params,
        "steps": m.steps,
        "train_tokens": m.train_tokens,
        "device": m.device,
        "precision": m.precision,
        "hardware": m.hardware,
        **m.extra,
    }
    memory_log = m.memory_log
    return {
        "run_info": {
            "created_at": m.created_at,
            "total_time": m.total_time_s,
            "experiment_name": m.experiment_name,
            "peft_branch": None,  # the suite records its git branch of peft; peftbench uses released peft
            "train_config": m.train_config,
            "peft_config": m.peft_config,
            "error_msg": m.error_msg,
        },
        "train_info": {
            "accelerator_memory_reserved_avg": int(sum(memory_log) / len(memory_log)) if memory_log else None,
            # the suite's figure: the whole run's peak (MetaMathQA never resets the counter) or training's alone
            # (image-gen resets it after caching and after each validation)
            "accelerator_memory_max": m.peak_memory_train_bytes if m.suite_memory_scope == "train"
            else m.peak_memory_total_bytes,
            "accelerator_memory_reserved_99th": _percentile(memory_log, 99),
            # the suite's definition (published results are compared on it); peftbench's own split is in
            # peftbench.train_time_s / eval_time_s / total_time_s
            "train_time": m.suite_train_time_s if m.suite_train_time_s is not None else m.train_time_s,
            "file_size": m.checkpoint_size_bytes,
            "num_trainable_params": m.trainable_params,
            "num_total_params": m.total_params,
            "status": m.status,
            "metrics": metrics,
        },
        "meta_info": {
            "model_info": {"model_id": m.model_id, "sha": None, "created_at": None},
            "dataset_info": m.dataset_info,
            "package_info": package_info(),
            "system_info": system_info(m.device),
            "pytorch_info": pytorch_info(),
        },
        "peftbench": peftbench,
    }
