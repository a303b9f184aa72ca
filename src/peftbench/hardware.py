"""What hardware a run is on, whether it runs bf16 natively (for `use_amp: "auto"`), and which kernel runs its
fp32 linear layers fastest (for `cpu_matmul: "auto"`).

bf16 autocast halves a CPU training step where the hardware has bf16 instructions, and multiplies it many
times over where it has not (the kernels then convert and emulate: measured 6-13x slower than fp32 on an
AVX2-only CPU; see benchmarks/math-tiny.md). `auto` therefore means bf16 only where it is native:
- CUDA: torch.cuda.is_bf16_supported();
- x86: the CPU flags avx512_bf16 or amx_bf16, and torch dispatching to its AVX-512 kernels;
- ARM: the CPU feature bf16.
Where the flags cannot settle it (no flags readable, kernels restricted below what the flags promise, or
AVX-NE-CONVERT without AVX-512), a micro-benchmark of a few milliseconds decides: bf16 autocast must run a
matmul at least as fast as fp32.

On x86, PyTorch's fp32 matrix products go to MKL, which uses its AVX-512 kernels on Intel CPUs only; oneDNN
(training.onednn_linear) uses them on any CPU that has them. `cpu_matmul: auto` times both on one product and
takes oneDNN where it is at least ONEDNN_MIN_SPEEDUP times faster (AMD CPUs with AVX-512: about 2.3x).

Precision is an experimental condition (it moves scores), so a suite or sweep resolves `auto` once, in the
parent, and every experiment of the batch gets the same answer; every result file records the precision and
the hardware description that decided it.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from peftbench.config import ConfigError, read_untrusted_text
from peftbench.timing import best_one_thread_seconds

# CPU flags that matter for precision (x86 names from /proc/cpuinfo, ARM's "bf16" feature); recorded in results.
X86_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
RELEVANT_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx_ne_convert", "avx_vnni", "bf16", "asimd", "sve")
# torch's CPU capabilities (torch.backends.cpu.get_cpu_capability()) that use AVX-512 kernels.
AVX512_CAPABILITIES = ("AVX512", "AVX512_BF16", "AMX")
# `cpu_matmul: auto` takes oneDNN when it runs an fp32 product at least this many times faster than torch: a
# margin that a loaded machine's noise does not cross where both are the same kind of kernel (measured 1.1x
# with both limited to AVX2, 2.3x on an AVX-512 AMD CPU).
ONEDNN_MIN_SPEEDUP = 1.3
# Where a results folder records the `cpu_matmul: auto` answer that all of its runs use (hidden: not a result).
CPU_MATMUL_RECORD = ".peftbench/cpu_matmul.json"
# Environment variables that restrict the kernels below what the CPU offers: then the flags are not the truth.
KERNEL_RESTRICTING_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


@dataclass(frozen=True)
class Hardware:
    """The machine as far as precision is concerned; stored in every result's `peftbench.hardware`."""

    device: str  # "cpu" or "cuda"
    name: str  # CPU model or GPU name
    flags: tuple[str, ...]  # the RELEVANT_FLAGS this CPU has (empty for CUDA or when unreadable)
    torch_cpu_capability: Optional[str]  # the kernel set torch dispatches to on this CPU
    bf16_native: bool
    decided_by: str  # why bf16_native is what it is, in words

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "flags": list(self.flags)}


def cpu_model_and_flags() -> tuple[str, Optional[set[str]]]:
    """The CPU's model name and feature flags (None when this OS does not expose them in /proc/cpuinfo)."""
    name, flags = platform.processor() or platform.machine() or "unknown CPU", None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "cpu model") and value.strip():
                    name = value.strip()
                elif key in ("flags", "features") and flags is None:  # x86 "flags", ARM "Features"
                    flags = set(value.split())
    except OSError:
        pass
    return name, flags


def _restricting_env() -> list[str]:
    return [f"{key}={os.environ[key]}" for key in KERNEL_RESTRICTING_ENV if os.environ.get(key)]


def bf16_matmul_is_fast(size: int = 128, repeats: int = 10) -> tuple[bool, float, float]:
    """Time a (2*size x size) @ (size x 3*size) matmul in fp32 and under bf16 autocast (ms where bf16 is native,
    about 0.1 s where it is emulated). Returns (bf16 at least as fast as fp32, best fp32 seconds, best bf16
    seconds)."""
    import torch

    a = torch.randn(2 * size, size)
    b = torch.randn(size, 3 * size)

    def bf16() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            a @ b

    best = best_one_thread_seconds({"fp32": lambda: a @ b, "bf16": bf16}, repeats)
    return best["bf16"] <= best["fp32"], best["fp32"], best["bf16"]


def _cpu_hardware() -> Hardware:
    import torch

    name, flags = cpu_model_and_flags()
    capability = torch.backends.cpu.get_cpu_capability()
    present = tuple(f for f in RELEVANT_FLAGS if flags and f in flags)
    machine = platform.machine().lower()
    restricted = _restricting_env()
    if flags is not None and machine in ("x86_64", "amd64", "i686", "x86"):
        bf16_flags = [f for f in X86_BF16_FLAGS if f in flags]
        if not bf16_flags and "avx_ne_convert" not in flags:
            return Hardware("cpu", name, present, capability, False, "x86 without avx512_bf16/amx_bf16: bf16 is emulated")
        if bf16_flags and capability in AVX512_CAPABILITIES and not restricted:
            return Hardware("cpu", name, present, capability, True, f"x86 with {', '.join(bf16_flags)}")
        why = f"flags {', '.join(bf16_flags or ['avx_ne_convert'])}, torch capability {capability}"
        why += f", {' '.join(restricted)}" if restricted else ""
    elif flags is not None and machine in ("aarch64", "arm64"):
        if "bf16" not in flags:
            return Hardware("cpu", name, present, capability, False, "ARM without the bf16 feature: bf16 is emulated")
        if not restricted:
            return Hardware("cpu", name, present, capability, True, "ARM with the bf16 feature")
        why = f"ARM bf16 feature, {' '.join(restricted)}"
    else:
        why = f"no CPU flags readable on {platform.system()} {platform.machine()}"
    native, fp32_s, bf16_s = bf16_matmul_is_fast()
    verdict = f"micro-benchmark ({why}): bf16 matmul {bf16_s * 1e3:.2f} ms vs fp32 {fp32_s * 1e3:.2f} ms"
    return Hardware("cpu", name, present, capability, native, verdict)


_DETECTION_LOCK = threading.Lock()  # a suite's worker threads must not benchmark at the same time


def detect_hardware(device_type: str = "cpu", device_index: int = 0) -> Hardware:
    """Describe the hardware of `device_type` ("cpu" or "cuda"); cached, so one process decides once."""
    with _DETECTION_LOCK:
        return _detect_hardware(device_type, device_index)


@functools.lru_cache(maxsize=None)
def _detect_hardware(device_type: str, device_index: int) -> Hardware:
    import torch

    if device_type == "cuda":
        native = bool(torch.cuda.is_bf16_supported())
        return Hardware(
            "cuda", torch.cuda.get_device_name(device_index), (), None, native,
            "torch.cuda.is_bf16_supported()" + ("" if native else " is False"),
        )
    return _cpu_hardware()


def device_type_of(device_setting: str) -> str:
    """"cpu" or "cuda" for a TrainConfig `device` value ("auto" means cuda when available)."""
    if device_setting == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if device_setting.startswith("cuda") else "cpu"


def _device_index(device_setting: str) -> int:
    _, _, index = device_setting.partition(":")
    return int(index) if index.isdigit() else 0


def resolve_use_amp(use_amp: bool | str, device_setting: str) -> tuple[bool, Hardware]:
    """`use_amp` as a bool ("auto": bf16 where native) and the hardware description behind it."""
    hardware = detect_hardware(device_type_of(device_setting), _device_index(device_setting))
    return (hardware.bf16_native if use_amp == "auto" else bool(use_amp)), hardware


@functools.lru_cache(maxsize=None)
def _fastest_fp32_linear() -> tuple[str, str]:
    import torch

    from peftbench.training.onednn_linear import linear_timings

    if not torch.backends.mkldnn.is_available():
        return "torch", "this torch build has no oneDNN"
    torch_s, onednn_s = linear_timings()
    kernel = "onednn" if torch_s >= ONEDNN_MIN_SPEEDUP * onednn_s else "torch"
    return kernel, f"micro-benchmark: fp32 product {onednn_s * 1e3:.2f} ms on oneDNN vs {torch_s * 1e3:.2f} ms on torch's"


def resolve_cpu_matmul(setting: str, device_setting: str, *, compiled: bool, checkpointed: bool,
                       results_dir: Optional[str | Path] = None) -> tuple[str, str]:
    """`cpu_matmul` as "onednn" or "torch" ("auto": the faster, where it applies) and what decided it. With a
    results folder, the micro-benchmark's answer is the one recorded there (see CPU_MATMUL_RECORD)."""
    if setting != "auto":
        return setting, "set"
    if device_type_of(device_setting) != "cpu":
        return "torch", "not a CPU run"
    if compiled:
        return "torch", "compile: inductor picks its own kernels"
    if checkpointed:  # see TrainConfig.validate
        return "torch", "use_gc: recomputed layers would use torch's kernels"
    with _DETECTION_LOCK:
        return _fastest_fp32_linear() if results_dir is None else _decided_once(Path(results_dir) / CPU_MATMUL_RECORD)


def _decided_once(record: Path) -> tuple[str, str]:
    """The faster kernel as first measured for this results folder on this CPU. On a loaded machine the
    micro-benchmark can come out either way from one process to the next, and a suite resumed later, or run by
    two processes, must not mix kernels. The first process to write the record wins; every other reads it."""
    cpu = cpu_model_and_flags()[0]
    recorded = _read_cpu_matmul_record(record)
    if recorded is None:
        kernel, why = _fastest_fp32_linear()
        try:
            record.parent.mkdir(parents=True, exist_ok=True)
            staging = record.with_name(f"{record.name}.tmp-{os.getpid()}")
            staging.write_text(json.dumps({"cpu": cpu, "cpu_matmul": kernel, "decided_by": why}), encoding="utf-8")
            try:
                os.link(staging, record)  # fails if another process recorded its answer first: then that one holds
            except FileExistsError:
                pass
            finally:
                staging.unlink()
        except OSError:
            return kernel, why  # a folder that takes no file: the result files will say so
        recorded = _read_cpu_matmul_record(record) or {"cpu": cpu, "cpu_matmul": kernel, "decided_by": why}
    if recorded["cpu"] != cpu:  # the folder's runs were decided on another machine: this one measures its own
        return _fastest_fp32_linear()
    return recorded["cpu_matmul"], f"{recorded['decided_by']}; recorded for this results folder in {record}"


def _read_cpu_matmul_record(record: Path) -> Optional[dict[str, str]]:
    try:
        recorded = json.loads(read_untrusted_text(record))
    except (OSError, ValueError, ConfigError):
        return None
    valid = (isinstance(recorded, dict) and recorded.get("cpu_matmul") in ("onednn", "torch")
             and all(isinstance(recorded.get(key), str) for key in ("cpu", "decided_by")))
    return recorded if valid else None


def precision_name(dtype: Optional[str], use_amp: Any) -> str:
    """The precision a run computed in, as one comparable label: "fp32", "bf16", "fp16", or "bf16-autocast"
    (fp32 weights, bf16 matmuls). `use_amp` must be resolved (a bool); "auto" means it never was."""
    if use_amp == "auto":
        return "unresolved (use_amp auto)"
    if use_amp is True:
        return "bf16-autocast"
    return {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(dtype or "", str(dtype or "unknown"))


def resolve_device(config):
    """The torch device a run computes on: `device` "auto" is CUDA's first where there is one, else the CPU."""
    import torch

    if config.device == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {config.device!r} requested but CUDA is not available; use 'cpu' or 'auto'")
    return device


def describe_device(device) -> str:
    """"cpu", or a CUDA device with its name: "cuda:0 (NVIDIA H200)"."""
    import torch

    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return "cpu"
