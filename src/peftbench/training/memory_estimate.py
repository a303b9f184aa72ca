"""Peak training memory of an experiment on a model that is never allocated: `peftbench memory`.

The task's real base model is built from its config.json alone under FakeTensorMode (tensors with shapes,
dtypes and storages but no data), wrapped by peft exactly as `peftbench run` wraps it, and real training
steps run on it: forward, backward, gradient clipping, optimizer step. The same TensorMemoryTracker as in
training counts the live bytes, so the estimate has the same accounting and categories as a measured run.

What is emulated, because the estimate is for a CUDA GPU while this runs on a CPU:
- the optimizer runs its `foreach` implementation, torch's default on CUDA (one extra temporary copy of the
  trainable parameters' size during the step, which the CPU default would not have);
- tensors are counted in the CUDA allocator's 512-byte blocks;
- attention is torch's scaled_dot_product_attention as dispatched for a CPU tensor: the fused kernel, which
  like CUDA's flash / memory-efficient kernels saves the output and log-sum-exp, not the attention matrix.
Allocator caching and fragmentation (the difference between torch.cuda.max_memory_reserved and
max_memory_allocated) are not modelled: the estimate is allocated memory.

Data-dependent values have no data to come from: `.item()` reads 1 (the optimizer's step count) and
`bool(tensor)` False (so that checks such as "any NaN or inf?" pass). Transformers treats fake tensors as
traced and builds the attention mask without asking whether there is padding (see batch shapes below).

Batch shapes: those of the run's real training batches (the task's own length-bucketed batches, max_steps of
them) where the training data and tokenizer are at hand, else batch_size x max_seq_length. Only the shapes
that can set the peak are traced, as in training.tensor_memory.StepSampler: the first step, then one
steady-state step per batch shape not smaller in every dimension than another.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from peftbench.config import ConfigError, TrainConfig
from peftbench.experiments import ExperimentSpec, build_peft_config
from peftbench.tasks.base import Task, is_local_source
from peftbench.tasks.text import DATA_KEYS
from peftbench.training.tensor_memory import TensorMemoryTracker
from torch.utils._python_dispatch import TorchDispatchMode



@dataclass
class BatchShapes:
    shapes: list[tuple[int, int]]  # (batch, sequence length) of the batches traced
    source: str  # one line: where the shapes come from


@dataclass
class MemoryEstimate:
    experiment_name: str
    model_id: str
    peak_bytes: int
    breakdown: dict[str, int]
    batch_shapes: list[tuple[int, int]]
    shape_source: str
    trainable_params: int
    total_params: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "experiment_name": self.experiment_name,
            "model_id": self.model_id,
            "peak_bytes": self.peak_bytes,
            "breakdown": self.breakdown,
            "batch_shapes": [list(shape) for shape in self.batch_shapes],
            "shape_source": self.shape_source,
            "trainable_params": self.trainable_params,
            "total_params": self.total_params,
            "notes": self.notes,
        }


def _scalar_without_data(tensor: torch.Tensor):
    """`.item()` of a tensor without data: 1 (an optimizer's step count), or False for a bool (a check such as
    "any NaN?" passes)."""
    return False if tensor.dtype == torch.bool else 1


class _NoDataOnMeta(TorchDispatchMode):
    """While a model is built on the meta device: data-dependent scalars as in `_scalar_without_data`, data
    copied off the meta device (a method's initialisation from the base weights, e.g. an SVD) arrives as zeros.
    Only shapes matter for memory; the values of such an initialisation are never used."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._local_scalar_dense.default:
            return _scalar_without_data(args[0])
        if func is torch.ops.aten._to_copy.default and args[0].is_meta:
            target = kwargs.get("device") or args[0].device
            if target.type != "meta":
                return torch.zeros(args[0].shape, dtype=kwargs.get("dtype") or args[0].dtype, device=target)
        if func is torch.ops.aten.copy_.default and args[1].is_meta and not args[0].is_meta:
            return args[0].zero_()
        return func(*args, **kwargs)


class _FakeRunTracker(TensorMemoryTracker):
    """The tracker, plus an answer to data-dependent scalars, which fake tensors cannot give (see module doc)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            return _scalar_without_data(args[0])
        return super().__torch_dispatch__(func, types, args, kwargs)


def check_text_task(task: Task) -> None:
    from peftbench.tasks.text import TextTask

    if not isinstance(task, TextTask):
        raise ConfigError(
            f"peftbench memory estimates causal language-model tasks (math, math-tiny); task {task.name!r} is not one"
        )


def load_model_config(config: TrainConfig):
    """The base model's transformers config, from a local folder (or the local hub cache); must be a causal LM."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    folder = Path(config.model_id)
    if folder.is_dir() and not (folder / "config.json").is_file():
        raise ConfigError(f"model_id {config.model_id}: the folder has no config.json")
    try:
        model_config = AutoConfig.from_pretrained(
            config.model_id, local_files_only=True, trust_remote_code=config.trust_remote_code
        )
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"cannot read the model config of model_id {config.model_id!r} ({str(error).splitlines()[0]}); "
            "give a local folder holding its config.json: --set model_id=<folder> (no weights needed)"
        ) from None
    model_type = getattr(model_config, "model_type", None)
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        architectures = ", ".join(getattr(model_config, "architectures", None) or []) or "none listed"
        raise ConfigError(
            f"model config {config.model_id} (model_type {model_type!r}, architectures: {architectures}) is not a "
            "causal language model, which this task trains "
            "(causal model types: llama, mistral, qwen2, gemma, gpt2, ...)"
        )
    return model_config


def load_tokenizer_if_any(task: Task, config: TrainConfig) -> Optional[Any]:
    try:
        return task.load_processor(config)
    except (OSError, ValueError, ConfigError):
        return None


def batch_shapes(task: Task, config: TrainConfig, tokenizer: Optional[Any]) -> BatchShapes:
    """The shapes of the run's training batches (see module doc), reduced to those that can set the peak."""
    fixed = BatchShapes(
        [(config.batch_size, config.max_seq_length)],
        f"batch shape {config.batch_size} x {config.max_seq_length} (batch_size x max_seq_length): ",
    )
    sources = {key: getattr(config, key) for key in DATA_KEYS}
    not_local = [f"{key}={source}" for key, source in sources.items() if source is not None and not is_local_source(source)]
    if not_local:
        fixed.source += f"the training data is not at hand ({', '.join(not_local)})"
        return fixed
    if tokenizer is None:
        fixed.source += f"no tokenizer in {config.model_id}"
        return fixed
    data = task.load_data(config)
    batches = task.train_batches(data.train, tokenizer, config, seed=config.seed)
    shapes = {tuple(next(batches).inputs["input_ids"].shape) for _ in range(config.max_steps)}
    frontier = sorted(s for s in shapes if not any(o != s and o[0] >= s[0] and o[1] >= s[1] for o in shapes))
    longest = max(length for _, length in shapes)
    return BatchShapes(
        frontier,
        f"batch shapes of the run's {config.max_steps} real training batches (longest {longest} tokens); "
        f"traced: {', '.join(f'{b} x {n}' for b, n in frontier)}",
    )


def _optimizer(model: torch.nn.Module, config: TrainConfig, device_type: str) -> torch.optim.Optimizer:
    from peftbench.training.methods import build_optimizer

    if device_type != "cuda":
        return build_optimizer(model, config.optimizer_type, config.optimizer_kwargs)
    try:  # foreach: the implementation torch picks on CUDA
        return build_optimizer(model, config.optimizer_type, {**config.optimizer_kwargs, "foreach": True})
    except ConfigError:  # an optimizer without a foreach option
        return build_optimizer(model, config.optimizer_type, config.optimizer_kwargs)


def estimate_training_memory(spec: ExperimentSpec, task: Task, config: TrainConfig, shapes: BatchShapes,
                             tokenizer: Optional[Any] = None, device_type: str = "cuda") -> MemoryEstimate:
    """Trace training steps of `spec` on the fake base model at `shapes`; raises ConfigError on bad input.

    `device_type` "cuda" emulates a GPU run (see the module doc); "cpu" counts as a CPU run does (exact bytes,
    the optimizer's CPU implementation), to check the estimate against a measured CPU run.
    """
    from torch._subclasses.fake_tensor import FakeTensorMode
    from transformers import AutoModelForCausalLM

    from peftbench.training.methods import wrap_model
    from peftbench.training.train import autocast_context, trainable_and_total_params

    notes = []
    if config.use_amp == "auto":  # bf16 where the hardware runs it natively (peftbench.hardware)
        if device_type == "cuda":  # no GPU to ask: take one that does, as every GPU since Ampere
            use_amp = True
            notes.append("use_amp 'auto' taken as bf16 autocast, as on a GPU with native bf16 (Ampere or newer); "
                         "--set use_amp=false for fp32")
        else:
            from peftbench.hardware import resolve_use_amp

            use_amp = resolve_use_amp("auto", "cpu")[0]
        config = dataclasses.replace(config, use_amp=use_amp)
    model_config = load_model_config(config)
    tracker = _FakeRunTracker(device_type=device_type)
    device = torch.device("cpu")
    with torch.device("meta"), _NoDataOnMeta():  # built and wrapped without data, then given fake storages (_to_fake)
        base = AutoModelForCausalLM.from_config(
            model_config, dtype=getattr(torch, config.dtype), attn_implementation=config.attn_implementation
        )
        source = str(spec.path / "adapter_config.json")
        model = wrap_model(base, build_peft_config(spec), tokenizer, config, source=source)
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    _to_fake(model, fake_mode, device)
    with fake_mode:
        model.train()
        optimizer = _optimizer(model, config, device_type)
        trainable = [p for p in model.parameters() if p.requires_grad]
        # the first step creates the optimizer state; then one steady-state step per shape
        largest = max(shapes.shapes, key=lambda shape: shape[0] * shape[1])
        for batch, length in [largest, *shapes.shapes]:
            input_ids = torch.zeros((batch, length), dtype=torch.long)
            inputs = {"input_ids": input_ids, "labels": input_ids.clone()}  # a text task's batch: no mask (tasks/text.py)
            tracker.register(model, optimizer, inputs)
            with tracker:
                optimizer.zero_grad(set_to_none=True)
                with autocast_context(config, device):
                    loss = model(**inputs).loss
                loss.backward()
                del loss
                if config.grad_norm_clip:
                    torch.nn.utils.clip_grad_norm_(trainable, config.grad_norm_clip)
                optimizer.step()
            del inputs, input_ids
        trainable_params, total_params = trainable_and_total_params(model)
    if config.use_amp:
        notes.append("use_amp: bf16 autocast traced on the CPU autocast rules")
    return MemoryEstimate(
        experiment_name=spec.experiment_name, model_id=config.model_id, peak_bytes=tracker.peak_total,
        breakdown=dict(tracker.peak_breakdown), batch_shapes=list(shapes.shapes), shape_source=shapes.source,
        trainable_params=trainable_params, total_params=total_params, notes=notes,
    )


def _to_fake(model: torch.nn.Module, fake_mode, device: torch.device) -> None:
    """Replace the model's meta parameters and buffers by fake tensors on `device`, ties kept.

    Meta tensors would do for counting bytes, but operators dispatch by device: on meta, attention takes the
    unfused path that saves the whole attention matrix, which no GPU run does.
    """
    replaced: dict[int, torch.Tensor] = {}
    for module in model.modules():
        for tensors, make in ((module._parameters, torch.nn.Parameter), (module._buffers, None)):
            for name, tensor in list(tensors.items()):
                if tensor is None:
                    continue
                if id(tensor) not in replaced:
                    with fake_mode:
                        data = torch.empty(tensor.shape, dtype=tensor.dtype, device=device)
                    replaced[id(tensor)] = make(data, requires_grad=tensor.requires_grad) if make else data
                tensors[name] = replaced[id(tensor)]
