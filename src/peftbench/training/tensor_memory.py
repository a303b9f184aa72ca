"""Tensor-level memory: the bytes of live tensors, by what they are for, and their peak.

`TensorMemoryTracker` is a TorchDispatchMode: every tensor an operator returns is seen as it is created, and
a weak reference to its storage tells when it is freed. The running total is the sum of live storages,
which is what `torch.cuda.max_memory_allocated` counts on a GPU (there rounded up to the caching allocator's
512-byte blocks, as here), on any device and under FakeTensorMode alike (then for a model that was never
allocated: see training.memory_estimate). Each storage has one category:

- parameters, buffers: the model's, registered when tracking starts;
- inputs: the batch's tensors;
- gradients: what autograd accumulates into `param.grad` (a post-accumulate-grad hook);
- activations: tensors saved for backward (a saved-tensors pack hook sees each one);
- optimizer_state: tensors created inside `optimizer.step()` (its state; at a peak inside the step, also the
  step's own temporaries, which are freed before it returns);
- temporaries: everything else (forward intermediates not saved, activation gradients in backward, outputs).

torch.distributed._tools.mem_tracker.MemTracker does the same job but is private API, counts every forward
tensor as an activation whether it is saved or not, snapshots every module on every operator (cost grows with
the model's module count) and refuses a second training iteration; this class is the cheap core of it.

Python sees every operator, so a tracked step is slower (a few times on a tiny model whose operators take
microseconds). `StepSampler` therefore tracks only the steps that can set the peak (see there).
"""

from __future__ import annotations

import math
import weakref
from contextlib import ExitStack
from typing import Any, Iterable, Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

CATEGORIES = ("parameters", "buffers", "gradients", "optimizer_state", "activations", "temporaries", "inputs")
# Categories a storage may leave for a more specific one (a forward result turns out to be saved for backward,
# a backward result becomes a parameter's gradient). Parameters, inputs and optimizer state never change.
_REFINABLE = ("temporaries",)
_CUDA_BLOCK_BYTES = 512  # the CUDA caching allocator's smallest block; every allocation is a multiple of it


def _allocated_bytes(nbytes: int, device_type: str) -> int:
    if device_type == "cuda":
        return math.ceil(nbytes / _CUDA_BLOCK_BYTES) * _CUDA_BLOCK_BYTES
    return nbytes


def _tensors(tree: Any) -> Iterable[torch.Tensor]:
    return (leaf for leaf in tree_flatten(tree)[0] if isinstance(leaf, torch.Tensor))


class TensorMemoryTracker(TorchDispatchMode):
    """Live tensor bytes by category and their peak, while entered (`with tracker:`; re-entrant across steps).

    Storages registered or created while tracking stay counted until they are freed, tracked or not; the
    tracker must therefore see every long-lived tensor: call `register` with the model and optimizer (and the
    batch) each time before entering. What was registered before is not counted twice.
    `device_type` "cuda" counts every storage in the CUDA allocator's 512-byte blocks, "cpu" in exact bytes;
    None goes by each tensor's own device.
    """

    def __init__(self, device_type: Optional[str] = None) -> None:
        super().__init__()
        self.device_type = device_type  # None: each tensor's own device
        self.current = dict.fromkeys(CATEGORIES, 0)
        self.current_total = 0
        self.peak_total = 0
        self.peak_breakdown = dict(self.current)
        self._live: dict[int, list] = {}  # id(storage) -> [bytes, category, weakref to the storage, serial]
        # Storages are numbered as they are first seen; one seen before the peak and still alive when its
        # category is refined (a forward result found to be saved for backward) was live at the peak, so the
        # peak's breakdown is refined with it.
        self._serial = 0
        self._peak_serial = 0
        self._optimizer_depth = 0
        self._model: Optional[torch.nn.Module] = None  # the last registered: its gradients are watched
        self._optimizer: Optional[torch.optim.Optimizer] = None  # the last registered: its steps are watched
        self._hooks: list[Any] = []
        self._stack: Optional[ExitStack] = None

    # ---- registering what exists ----
    def register(self, model: Optional[torch.nn.Module] = None, optimizer: Optional[torch.optim.Optimizer] = None,
                 inputs: Any = None) -> None:
        if model is not None:
            for parameter in model.parameters():
                self._track(parameter, "parameters")
                if parameter.grad is not None:
                    self._track(parameter.grad, "gradients")
            for buffer in model.buffers():
                self._track(buffer, "buffers")
            self._model = model
        if optimizer is not None:
            self._track_optimizer_state(optimizer)
            self._optimizer = optimizer
        for tensor in _tensors(inputs):
            self._track(tensor, "inputs")

    def _track_optimizer_state(self, optimizer: torch.optim.Optimizer) -> None:
        for state in optimizer.state.values():
            for value in _tensors(state):
                self._track(value, "optimizer_state")

    def _track(self, tensor: torch.Tensor, category: str) -> None:
        try:
            storage = tensor.untyped_storage()
        except (NotImplementedError, RuntimeError):  # tensors without storage (sparse, some subclasses)
            return
        key = id(storage)
        nbytes = _allocated_bytes(storage.nbytes(), self.device_type or tensor.device.type)
        entry = self._live.get(key)
        if entry is None:
            self._serial += 1
            entry = [nbytes, category, weakref.ref(storage, lambda _, key=key: self._forget(key)), self._serial]
            self._live[key] = entry
            self._add(category, nbytes)
            return
        if entry[0] != nbytes:  # resized in place
            self._add(entry[1], nbytes - entry[0])
            entry[0] = nbytes
        if entry[1] != category and entry[1] in _REFINABLE and category not in _REFINABLE:
            for breakdown in (self.current, self.peak_breakdown) if entry[3] <= self._peak_serial else (self.current,):
                breakdown[entry[1]] -= entry[0]
                breakdown[category] += entry[0]
            entry[1] = category

    def _add(self, category: str, nbytes: int) -> None:
        self.current[category] += nbytes
        self.current_total += nbytes
        if self.current_total > self.peak_total:
            self.peak_total = self.current_total
            self.peak_breakdown = dict(self.current)
            self._peak_serial = self._serial

    def reset_peak(self) -> tuple[int, dict[str, int]]:
        """Start a new peak from what is live now; returns the previous peak and its breakdown."""
        previous = (self.peak_total, dict(self.peak_breakdown))
        self.peak_total, self.peak_breakdown, self._peak_serial = self.current_total, dict(self.current), self._serial
        return previous

    def _forget(self, key: int) -> None:
        entry = self._live.pop(key, None)
        if entry is not None:
            self.current[entry[1]] -= entry[0]
            self.current_total -= entry[0]

    # ---- watching ----
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        category = "optimizer_state" if self._optimizer_depth else "temporaries"
        for tensor in _tensors(result):
            self._track(tensor, category)
        return result

    def _saved(self, tensor: torch.Tensor) -> torch.Tensor:
        self._track(tensor, "activations")
        return tensor

    def __enter__(self):
        stack = ExitStack()
        stack.enter_context(torch.autograd.graph.saved_tensors_hooks(self._saved, lambda tensor: tensor))
        if self._model is not None:
            for parameter in self._model.parameters():
                if parameter.requires_grad:
                    self._hooks.append(parameter.register_post_accumulate_grad_hook(
                        lambda p: self._track(p.grad, "gradients")))
        if self._optimizer is not None:
            self._hooks.append(self._optimizer.register_step_pre_hook(self._optimizer_step_starts))
            self._hooks.append(self._optimizer.register_step_post_hook(self._optimizer_step_ends))
        self._stack = stack
        return super().__enter__()

    def __exit__(self, *exc_info):
        try:
            return super().__exit__(*exc_info)
        finally:
            for hook in self._hooks:
                hook.remove()
            self._hooks.clear()
            self._optimizer_depth = 0
            self._stack.close()

    def _optimizer_step_starts(self, optimizer, args, kwargs) -> None:
        self._optimizer_depth += 1

    def _optimizer_step_ends(self, optimizer, args, kwargs) -> None:
        self._optimizer_depth -= 1
        self._track_optimizer_state(optimizer)



class StepSampler:
    """Tracks the training steps that can set the peak, so that tracking costs a handful of steps per run.

    A step's peak is set by what persists (parameters, optimizer state: the same every step from the second
    on) plus what the batch makes (activations, gradients of activations), which grows with each dimension of
    the batch's tensors. So after step 1 (no optimizer state yet, but it is created inside that step) and
    step 2 (the first step with it), a step can only beat the tracked ones if its batch is larger than every
    tracked batch in at least one dimension. On the length-bucketed batches that is the first batch of a few
    buckets; with a fixed batch shape, steps 1 and 2 only.
    """

    def __init__(self, tracker: TensorMemoryTracker, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.tracker = tracker
        self.model, self.optimizer = model, optimizer
        self.tracked_steps: list[int] = []
        self._steady_shapes: list[tuple[tuple[int, ...], ...]] = []
        self._active = False

    @staticmethod
    def _shape(inputs: Any) -> tuple[tuple[int, ...], ...]:
        return tuple(tuple(tensor.shape) for tensor in _tensors(inputs))

    def _dominated(self, shape: tuple[tuple[int, ...], ...]) -> bool:
        return any(
            len(seen) == len(shape) and all(
                len(a) == len(b) and all(x <= y for x, y in zip(a, b)) for a, b in zip(shape, seen)
            )
            for seen in self._steady_shapes
        )

    def begin(self, step: int, inputs: Any) -> None:
        """Call before the step's first operation (zero_grad); `inputs` are the batch's tensors."""
        shape = self._shape(inputs)
        if step > 1 and self._dominated(shape):
            return
        if step > 1:
            self._steady_shapes.append(shape)
        self.tracked_steps.append(step)
        self.tracker.register(self.model, self.optimizer, inputs)
        self.tracker.__enter__()
        self._active = True

    def end(self) -> None:
        """Call after the step's last operation; safe to call again (e.g. from a `finally`)."""
        if self._active:
            self._active = False
            self.tracker.__exit__(None, None, None)
