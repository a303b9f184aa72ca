"""`cpu_matmul`: fp32 linear layers on oneDNN give torch's results (to fp32 rounding) and leave other dtypes
alone; `auto` is decided once, recorded, and never applied to GPU or compiled runs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from peftbench import hardware
from peftbench.config import ConfigError, TrainConfig
from peftbench.training import onednn_linear
from peftbench.training.onednn_linear import onednn_linears


@pytest.fixture
def counted(monkeypatch):
    """The number of products that went to oneDNN."""
    calls = []
    original = onednn_linear._inner_product

    def counting(*args):
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(onednn_linear, "_inner_product", counting)
    return calls


def _forward_backward(x, weight, bias, on_onednn: bool):
    x, weight = (t.detach().clone().requires_grad_(t.requires_grad) for t in (x, weight))
    bias = None if bias is None else bias.detach().clone().requires_grad_(True)
    with onednn_linears(on_onednn):
        out = F.linear(x, weight, bias)
        (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
    return out, [t.grad for t in (x, weight, bias) if t is not None]


@pytest.mark.parametrize("features_in,features_out", [(16, 8), (4, 24)])  # the weight gradient's two orientations
@pytest.mark.parametrize("x_grad,weight_grad,with_bias", [(True, True, True), (True, False, False), (False, True, True)])
def test_forward_and_gradients_match_torch(counted, x_grad, weight_grad, with_bias, features_in, features_out):
    torch.manual_seed(0)
    x = torch.randn(3, 7, features_in).requires_grad_(x_grad)
    weight = torch.randn(features_out, features_in).requires_grad_(weight_grad)
    bias = torch.randn(features_out) if with_bias else None
    reference, reference_grads = _forward_backward(x, weight, bias, on_onednn=False)
    assert not counted
    out, grads = _forward_backward(x, weight, bias, on_onednn=True)
    assert counted, "the product did not go to oneDNN"
    assert out.shape == reference.shape == (3, 7, features_out)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)
    expected_grads = [x_grad, weight_grad] + ([True] if with_bias else [])
    assert [g is not None for g in grads] == [g is not None for g in reference_grads] == expected_grads
    for grad, expected in zip(grads, reference_grads):
        torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-5)


def test_the_weight_gradient_is_the_same_either_way_round():
    """backward() picks the orientation that copies less; both give the same products, bit for bit."""
    torch.manual_seed(0)
    grad, x2d = torch.randn(300, 64), torch.randn(300, 8)
    assert torch.equal(onednn_linear._inner_product(grad.t(), x2d.t()),
                       onednn_linear._inner_product(x2d.t(), grad.t()).t())


def test_other_dtypes_autocast_and_vectors_go_to_torch(counted):
    weight = torch.randn(4, 6)
    with onednn_linears():
        assert F.linear(torch.randn(2, 6, dtype=torch.float64), weight.double()).dtype == torch.float64
        assert F.linear(torch.randn(6), weight).shape == (4,)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert F.linear(torch.randn(2, 6), weight).dtype == torch.bfloat16
        assert not counted
        F.linear(torch.randn(2, 6), weight)  # an fp32 module layer, as nn.Linear calls it
    assert len(counted) == 1


def test_arguments_passed_by_keyword_go_to_onednn_too(counted):
    """peft's HRA calls F.linear(input=..., weight=..., bias=...): arguments by keyword, by position or mixed all
    go to oneDNN."""
    torch.manual_seed(0)
    x, weight, bias = torch.randn(5, 6), torch.randn(4, 6), torch.randn(4)
    expected = F.linear(x, weight, bias)
    with onednn_linears():
        outs = [F.linear(input=x, weight=weight, bias=bias), F.linear(x, weight=weight, bias=bias),
                F.linear(x, weight, bias=bias)]
    assert len(counted) == 3
    for out in outs:
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["lora", "hra"])  # HRA passes F.linear's arguments by keyword
def test_a_peft_model_trains_the_same_on_either_kernel(counted, method):
    from peft import HRAConfig, LoraConfig, get_peft_model

    def adapter_config():
        if method == "lora":
            return LoraConfig(r=4, target_modules=["0", "2"], init_lora_weights=False)
        return HRAConfig(r=4, target_modules=["0", "2"], init_weights=False)

    def losses(on_onednn: bool) -> list[float]:
        torch.manual_seed(0)
        base = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
        model = get_peft_model(base, adapter_config())
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        inputs, targets = torch.randn(32, 12), torch.randn(32, 4)
        values = []
        with onednn_linears(on_onednn):
            for _ in range(5):
                loss = F.mse_loss(model(inputs), targets)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                values.append(loss.item())
        return values

    assert losses(True) == pytest.approx(losses(False), rel=1e-5)
    assert counted


PLAIN = {"compiled": False, "checkpointed": False}


def test_setting_is_checked():
    with pytest.raises(ConfigError, match="cpu_matmul.*valid: auto, onednn, torch"):
        TrainConfig(model_id="m", cpu_matmul="mkl")
    with pytest.raises(ConfigError, match="cpu_matmul.*without use_gc and compile"):
        TrainConfig(model_id="m", cpu_matmul="onednn", use_gc=True)


def test_auto_is_decided_by_the_benchmark_and_only_on_cpu(monkeypatch):
    hardware._fastest_fp32_linear.cache_clear()
    monkeypatch.setattr(onednn_linear, "linear_timings", lambda: (0.003, 0.001))
    kernel, why = hardware.resolve_cpu_matmul("auto", "cpu", **PLAIN)
    assert kernel == "onednn" and "1.00 ms on oneDNN vs 3.00 ms" in why
    hardware._fastest_fp32_linear.cache_clear()
    monkeypatch.setattr(onednn_linear, "linear_timings", lambda: (0.0012, 0.001))  # below ONEDNN_MIN_SPEEDUP
    assert hardware.resolve_cpu_matmul("auto", "cpu", **PLAIN)[0] == "torch"
    hardware._fastest_fp32_linear.cache_clear()
    assert hardware.resolve_cpu_matmul("auto", "cuda", **PLAIN) == ("torch", "not a CPU run")
    assert hardware.resolve_cpu_matmul("auto", "cpu", compiled=True, checkpointed=False)[0] == "torch"
    assert hardware.resolve_cpu_matmul("auto", "cpu", compiled=False, checkpointed=True)[0] == "torch"
    assert hardware.resolve_cpu_matmul("onednn", "cuda", **PLAIN) == ("onednn", "set")


def test_linear_timings_measure_both_kernels():
    torch_s, onednn_s = onednn_linear.linear_timings(rows=64, size=32, repeats=2)
    assert 0 < torch_s < 1 and 0 < onednn_s < 1


def test_an_interrupt_that_lands_inside_torchs_mode_switch_stays_an_interrupt(monkeypatch):
    """Cancellation raises KeyboardInterrupt wherever the signal lands (peftbench.cancel). Around functions written
    in Python (F.silu, ...), torch pops the mode, calls it and pushes it back in Python; an interrupt landing
    before the push leaves the mode off the stack. Leaving the block must then not fail with torch's "empty mode
    stack" error, which would record a cancelled run as failed."""
    x = torch.randn(3, 4)
    with pytest.raises(KeyboardInterrupt):
        with onednn_linears():
            def interrupted_push(mode):
                raise KeyboardInterrupt  # as a signal handler does at the call's first instruction

            monkeypatch.setattr(torch.overrides, "_push_mode", interrupted_push)
            F.silu(x)
    assert torch._C._len_torch_function_stack() == 0


def test_auto_is_decided_once_per_results_folder(monkeypatch, tmp_path):
    """Two processes on a loaded machine timed the kernels differently, and a resumed suite mixed them: the
    first answer is recorded in the results folder and every later decision for that folder is the same."""
    import json

    from peftbench.run.plan import RunPlan, decide_hardware
    from peftbench.run.request import RunRequest
    from peftbench.tasks import get_task

    results = tmp_path / "results"
    decisions = []
    for timings in ((0.003, 0.001), (0.001, 0.003)):  # oneDNN 3x faster, then 3x slower: a noisy machine
        hardware._fastest_fp32_linear.cache_clear()  # another process: its own measurement
        monkeypatch.setattr(onednn_linear, "linear_timings", lambda timings=timings: timings)
        decisions.append(hardware.resolve_cpu_matmul("auto", "cpu", **PLAIN, results_dir=results))
    hardware._fastest_fp32_linear.cache_clear()
    assert decisions[0][0] == decisions[1][0] == "onednn"
    assert "recorded for this results folder" in decisions[1][1]
    record = json.loads((results / hardware.CPU_MATMUL_RECORD).read_text())
    assert record["cpu_matmul"] == "onednn" and record["cpu"] == hardware.cpu_model_and_flags()[0]
    assert hardware.resolve_cpu_matmul("torch", "cpu", **PLAIN, results_dir=results) == ("torch", "set")  # --set wins
    # a run's plan is decided for its request's results folder
    config = TrainConfig(model_id="m", cpu_matmul="auto", use_amp=False, device="cpu")
    request = RunRequest(task="math-tiny", results_dir=str(results), experiment_dir="e")
    plan = RunPlan(request, get_task("math-tiny"), config, results / "e.json", spec=None, git_commit=None)
    assert decide_hardware(plan).config.cpu_matmul == "onednn"
