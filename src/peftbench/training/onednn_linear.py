"""fp32 linear layers on oneDNN instead of PyTorch's BLAS, for the CPUs where that is faster (`cpu_matmul`).

On x86, PyTorch runs fp32 matrix products through MKL, and MKL picks its fastest (AVX-512) kernels on Intel
CPUs only: on an AMD CPU with AVX-512 it runs its AVX2 kernels, at about 40% of what oneDNN (also shipped
inside PyTorch, dispatching on the CPU's features) reaches on the same products. bf16 products already go to
oneDNN; fp32 ones never do unless reduced precision is allowed. `onednn_linears()` routes every fp32
`F.linear` on the CPU (nn.Linear, peft's adapters, the LM head) to oneDNN's inner product, forward and
backward, in full fp32: the same products, rounded in another order (benchmarks/math-faithful.md, "Speed").

A TorchFunctionMode rather than patched modules: it also reaches the F.linear calls that peft's methods make
with weights they compute (DoRA, OFT, ...), and it leaves the model untouched (nothing to undo before saving
or merging). Anything else (other dtypes, autocast, devices, 1-D inputs) goes to torch as usual. The mode
does not reach into the backward pass (autograd runs it outside): the gradients are computed by the Function
below, but gradient checkpointing's recomputation would run on torch's kernels, so the config refuses that
pairing.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from peftbench.timing import best_one_thread_seconds


def _inner_product(x2d: torch.Tensor, weight: torch.Tensor, bias=None) -> torch.Tensor:
    """x2d @ weight.T (+ bias) on oneDNN; weight is (out, in), any strides."""
    return torch.ops.mkldnn._linear_pointwise(x2d, weight, bias, "none", [], "")


class _OneDNNLinear2d(torch.autograd.Function):
    """On 2-D inputs: its output is then a tensor of its own, not a view, which peft's layers may add to in
    place (autograd forbids that on a view made inside a Function); linear() reshapes around it."""

    @staticmethod
    def forward(ctx, x2d, weight, bias):
        # what torch's own linear keeps, no more: the input only for a weight gradient, the weight only for an
        # input gradient (a frozen layer must not hold its input alive: that is the activation memory measured)
        ctx.save_for_backward(x2d if weight.requires_grad else None, weight if x2d.requires_grad else None)
        ctx.has_bias = bias is not None
        return _inner_product(x2d, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x2d, weight = ctx.saved_tensors
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = _inner_product(grad, weight.t())
        if ctx.needs_input_grad[1]:
            # oneDNN copies its transposed source first: give it the narrower of grad and x2d (a LoRA B's x2d is
            # r wide). Either way round the products are the same, bit for bit (tests/test_onednn_linear.py).
            if x2d.shape[1] < grad.shape[1]:
                grad_weight = _inner_product(x2d.t(), grad.t()).t()
            else:
                grad_weight = _inner_product(grad.t(), x2d.t())
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum(0)
        return grad_x, grad_weight, grad_bias


def linear(x: torch.Tensor, weight: torch.Tensor, bias=None) -> torch.Tensor:
    """F.linear on oneDNN, with gradients."""
    out = _OneDNNLinear2d.apply(x.reshape(-1, x.shape[-1]), weight, bias)
    return out.view(*x.shape[:-1], weight.shape[0])


def _on_onednn(x, weight, bias) -> bool:
    tensors = (x, weight) if bias is None else (x, weight, bias)
    return (
        all(type(t) in (torch.Tensor, torch.nn.Parameter) and t.dtype == torch.float32 and t.device.type == "cpu"
            for t in tensors)
        and x.dim() >= 2 and weight.dim() == 2 and x.numel() > 0 and x.shape[-1] == weight.shape[1]
        and not torch.is_autocast_enabled("cpu")
    )


def _linear_arguments(input, weight, bias=None):
    """F.linear's arguments however they were passed (peft's HRA passes all three by keyword)."""
    return input, weight, bias


class _OneDNNLinearMode(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            x, weight, bias = _linear_arguments(*args, **kwargs)
            if _on_onednn(x, weight, bias):
                return linear(x, weight, bias)
        return func(*args, **kwargs)


@contextlib.contextmanager
def onednn_linears(enabled: bool = True) -> Iterator[None]:
    """Within the block, fp32 CPU linear layers run on oneDNN (a no-op when not `enabled`)."""
    if not enabled:
        yield
        return
    # Pushed and popped here rather than by `with mode`: cancellation raises wherever its signal lands
    # (peftbench.cancel), and around functions written in Python torch pops the mode, calls it and pushes it back
    # in Python. An interrupt landing before that push leaves the mode off the stack, and `with` would then
    # replace the interrupt with torch's "empty mode stack" error.
    mode = _OneDNNLinearMode()
    torch._C._push_on_torch_function_stack(mode)
    try:
        yield
    finally:
        depth = torch._C._len_torch_function_stack()
        if depth and torch._C._get_function_stack_at(depth - 1) is mode:
            torch._C._pop_torch_function_stack()


def linear_timings(rows: int = 1024, size: int = 384, repeats: int = 5) -> tuple[float, float]:
    """Best seconds of a (rows x size) @ (size x size) fp32 product with torch's kernel and with oneDNN's."""
    x, weight = torch.randn(rows, size), torch.randn(size, size)
    best = best_one_thread_seconds({"torch": lambda: F.linear(x, weight), "onednn": lambda: _inner_product(x, weight)},
                                   repeats)
    return best["torch"], best["onednn"]
