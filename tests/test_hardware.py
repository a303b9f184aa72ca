"""`use_amp: "auto"`: bf16 only where the hardware runs it natively, decided from flags or a micro-benchmark."""

from __future__ import annotations

import pytest

from peftbench import hardware
from peftbench.config import ConfigError, TrainConfig
from peftbench.hardware import precision_name


@pytest.fixture
def cpu(monkeypatch):
    """Pretend to be a CPU: machine, flags, torch capability, restricting environment, benchmark verdict."""
    import torch

    def pretend(machine: str, flags, capability="AVX512", env=None, benchmark_native=None):
        monkeypatch.setattr(hardware.platform, "machine", lambda: machine)
        monkeypatch.setattr(hardware, "cpu_model_and_flags", lambda: ("Test CPU", None if flags is None else set(flags)))
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
        for key in hardware.KERNEL_RESTRICTING_ENV:
            monkeypatch.delenv(key, raising=False)
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        calls = []

        def benchmark():
            calls.append(1)
            assert benchmark_native is not None, "the flags should have decided without a benchmark"
            return benchmark_native, 0.001, 0.0005 if benchmark_native else 0.02

        monkeypatch.setattr(hardware, "bf16_matmul_is_fast", benchmark)
        return calls

    return pretend


def test_x86_without_bf16_flags_is_fp32_without_benchmark(cpu):
    cpu("x86_64", ["avx2", "fma"], capability="AVX2")
    chosen = hardware._cpu_hardware()
    assert not chosen.bf16_native and chosen.flags == ("avx2",) and "emulated" in chosen.decided_by


def test_x86_with_avx512_bf16_or_amx_is_bf16(cpu):
    cpu("x86_64", ["avx2", "avx512f", "avx512_bf16"])
    assert hardware._cpu_hardware().bf16_native
    cpu("x86_64", ["avx2", "avx512f", "amx_bf16"], capability="AMX")
    assert hardware._cpu_hardware().bf16_native


def test_restricted_kernels_make_the_flags_ambiguous_and_the_benchmark_decides(cpu):
    calls = cpu("x86_64", ["avx2", "avx512_bf16"], capability="AVX2", env={"ONEDNN_MAX_CPU_ISA": "AVX2"},
                benchmark_native=False)
    chosen = hardware._cpu_hardware()
    assert calls and not chosen.bf16_native
    assert "micro-benchmark" in chosen.decided_by and "ONEDNN_MAX_CPU_ISA=AVX2" in chosen.decided_by


def test_arm_and_unknown_cpus(cpu):
    cpu("aarch64", ["asimd", "bf16"])
    assert hardware._cpu_hardware().bf16_native
    cpu("aarch64", ["asimd"])
    assert not hardware._cpu_hardware().bf16_native
    calls = cpu("arm64", None, benchmark_native=True)  # macOS: no /proc/cpuinfo
    assert hardware._cpu_hardware().bf16_native and calls


def test_resolve_use_amp_keeps_explicit_values_and_decides_auto(monkeypatch):
    native = hardware.Hardware("cpu", "Test CPU", (), "AVX512", True, "test")
    monkeypatch.setattr(hardware, "detect_hardware", lambda device_type, index=0: native)
    assert hardware.resolve_use_amp("auto", "cpu") == (True, native)
    assert hardware.resolve_use_amp(False, "cpu") == (False, native)


def test_the_benchmark_runs_and_detection_is_cached():
    native, fp32_s, bf16_s = hardware.bf16_matmul_is_fast()
    assert isinstance(native, bool) and fp32_s > 0 and bf16_s > 0
    assert hardware.detect_hardware("cpu") is hardware.detect_hardware("cpu")


def test_use_amp_values_and_precision_names():
    assert TrainConfig(model_id="m", use_amp="auto").use_amp == "auto"
    with pytest.raises(ConfigError, match="use_amp.*auto"):
        TrainConfig(model_id="m", use_amp="yes")
    assert precision_name("float32", True) == "bf16-autocast"
    assert precision_name("float32", False) == "fp32"
    assert precision_name("bfloat16", False) == "bf16"
