"""Peak memory of one run, for training alone and for the whole run.

The headline figure, on every device, is tensor-level: the peak bytes of live tensors during training, with
a breakdown by category (training.tensor_memory), which is what torch.cuda.max_memory_allocated reports on a
GPU. Beside it, the process-level figure:
- CUDA: torch's max_memory_reserved (and max_memory_allocated, to compare with the tracker), reset before training.
- CPU: the process's peak resident set size (RSS) above a baseline taken before the model is built. Each run
  is its own child process, so the figure is the run's own. The training-only peak uses Linux's resettable
  high-water mark (write "5" to /proc/self/clear_refs, read VmHWM); where that is unavailable a sampling
  thread (psutil, every 10 ms) records the peak instead.
The validations inside the training loop are left out of the training figures (`excluded`), as in PEFT's image
benchmark; they count in the whole run's.
"""

from __future__ import annotations

import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch

from peftbench.training.tensor_memory import TensorMemoryTracker

_STATUS = Path("/proc/self/status")


def _read_status_kib(field: str) -> Optional[int]:
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


def current_rss_bytes() -> int:
    rss = _read_status_kib("VmRSS")
    if rss is None:
        import psutil

        rss = psutil.Process().memory_info().rss
    return rss


def _reset_high_water_mark() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return _read_status_kib("VmHWM") is not None


def reset_peak_rss() -> bool:
    """Start a new peak-RSS window (Linux: the kernel's high-water mark); False where it cannot be reset."""
    return _reset_high_water_mark()


def peak_rss_bytes() -> Optional[int]:
    """The process's peak RSS since the last reset_peak_rss (None where the kernel does not report it)."""
    return _read_status_kib("VmHWM")


class _RssSampler:
    """Fallback peak tracker: samples RSS on a background thread."""

    def __init__(self, interval_s: float = 0.01) -> None:
        self.peak = current_rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval_s,), daemon=True)
        self._thread.start()

    def _run(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            self.peak = max(self.peak, current_rss_bytes())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, current_rss_bytes())


@dataclass
class MemoryReport:
    """The run's peak memory figures, named as RunResult's fields (docs/engine.md "Memory")."""

    peak_memory_kind: str  # of the two process-level figures: "cuda" (reserved) | "cpu_rss"
    peak_memory_train_bytes: int  # process-level peak during training (reserved on CUDA, RSS on CPU)
    peak_memory_total_bytes: int  # process-level peak over the whole run
    peak_memory_train_allocated_bytes: Optional[int]  # tensor tracker: peak of live tensors during training
    peak_memory_train_breakdown: dict[str, int]  # the tracker's categories at that peak
    peak_memory_total_allocated_bytes: Optional[int] = None  # the same over the whole run (track_memory "run" only)
    peak_memory_cuda_train_allocated_bytes: Optional[int] = None  # torch.cuda.max_memory_allocated during training
    peak_memory_cuda_total_allocated_bytes: Optional[int] = None  # the same over the whole run


class PeakMemoryMeter:
    """Call start_run() before the model is built, start_training()/end_training() around the loop,
    and report() at the end."""

    def __init__(self, device: torch.device) -> None:
        self.tensors = TensorMemoryTracker()  # the training loop enters it on the steps it samples
        self._tensor_peaks: dict[str, tuple[int, dict[str, int]]] = {}  # phase -> (peak, breakdown)
        self._tracks_run = False  # whether phases outside training were tracked too (track_memory "run")
        self.cuda = device.type == "cuda"
        self.device = device
        self.baseline = 0
        self._peak_before_training = 0
        self._train = (0, None)
        self._total_allocated_before_training = 0
        self._sampler: Optional[_RssSampler] = None
        self._use_hwm = False
        self._train_before_exclusions = (0, 0)  # training's peaks (reserved or RSS, allocated) before an excluded phase
        self._excluded_peak = (0, 0)  # the peaks reached during excluded phases (they count in the whole run's)

    def start_run(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline = torch.cuda.memory_reserved(self.device)
            self._allocated_baseline = torch.cuda.memory_allocated(self.device)
        else:
            self.baseline = current_rss_bytes()
            self._use_hwm = _reset_high_water_mark()
            if not self._use_hwm:
                self._sampler = _RssSampler()

    def current(self) -> int:
        """Memory in use now, above the baseline (for the per-step log); 0 when the process holds less than at
        the start (freed caches, pages returned to the OS), not a negative amount."""
        now = torch.cuda.memory_reserved(self.device) if self.cuda else current_rss_bytes()
        return max(0, now - self.baseline)

    def allocated_now(self) -> Optional[int]:
        """The allocator's bytes in use now, above the reserved baseline as PEFT's scripts log them (their
        "mem allocated avg"); None on a CPU, which has no such figure."""
        return torch.cuda.memory_allocated(self.device) - self.baseline if self.cuda else None

    def tracked(self, model: torch.nn.Module, function: Callable) -> Callable:
        """`function` run under the tensor tracker (for track_memory "run": evaluation, forgetting)."""
        self._tracks_run = True

        def run_tracked(*args, **kwargs):
            self.tensors.register(model)
            with self.tensors:
                return function(*args, **kwargs)

        return run_tracked

    def start_training(self) -> None:
        self._tensor_peaks["before"] = self.tensors.reset_peak()
        if self.cuda:
            self._peak_before_training = torch.cuda.max_memory_reserved(self.device)
            self._total_allocated_before_training = torch.cuda.max_memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self._use_hwm:
            self._peak_before_training = _read_status_kib("VmHWM")
            _reset_high_water_mark()
        else:
            self._peak_before_training = self._sampler.stop()
            self._sampler = _RssSampler()

    @contextmanager
    def excluded(self) -> Iterator[None]:
        """A phase inside training that the training peak leaves out, as PEFT's image benchmark does for its
        validations (it resets the peak counter after each): the peak so far is kept, the phase runs, its own peak
        goes to the whole run's figure, and the counter starts again."""
        if self.cuda:
            before = (torch.cuda.max_memory_reserved(self.device), torch.cuda.max_memory_allocated(self.device))
        elif self._use_hwm:
            before = (_read_status_kib("VmHWM") or 0, 0)
        else:
            before = (self._sampler.stop(), 0)
            self._sampler = _RssSampler()
        try:
            yield
        finally:
            if self.cuda:
                during = (torch.cuda.max_memory_reserved(self.device), torch.cuda.max_memory_allocated(self.device))
                torch.cuda.reset_peak_memory_stats(self.device)
            elif self._use_hwm:
                during = (_read_status_kib("VmHWM") or 0, 0)
                _reset_high_water_mark()
            else:
                during = (self._sampler.stop(), 0)
                self._sampler = _RssSampler()
            self._train_before_exclusions = tuple(map(max, self._train_before_exclusions, before))
            self._excluded_peak = tuple(map(max, self._excluded_peak, during))

    def end_training(self) -> None:
        self._tensor_peaks["train"] = self.tensors.reset_peak()
        kept_reserved, kept_allocated = self._train_before_exclusions
        if self.cuda:
            self._train = (max(torch.cuda.max_memory_reserved(self.device), kept_reserved),
                           max(torch.cuda.max_memory_allocated(self.device), kept_allocated))
        elif self._use_hwm:
            self._train = (max(_read_status_kib("VmHWM") or 0, kept_reserved), None)
        else:
            self._train = (max(self._sampler.stop(), kept_reserved), None)
            self._sampler = _RssSampler()

    def report(self) -> MemoryReport:
        train_peak, train_breakdown = self._tensor_peaks.get("train", (0, {}))
        tracked = train_peak or None  # None: no step was tracked (no training, or compiled)
        breakdown = train_breakdown if tracked else {}
        peaks = [self._tensor_peaks.get("before", (0, {}))[0], train_peak, self.tensors.peak_total]
        tracked_total = max(peaks) if self._tracks_run and tracked else None
        if self.cuda:
            # after end_training the peak counters were not reset: they cover training and what followed
            total = max(self._peak_before_training, torch.cuda.max_memory_reserved(self.device), self._train[0],
                        self._excluded_peak[0])
            total_allocated = max(self._total_allocated_before_training, torch.cuda.max_memory_allocated(self.device),
                                  self._train[1], self._excluded_peak[1])
            return MemoryReport(
                peak_memory_kind="cuda",
                peak_memory_train_bytes=self._train[0] - self.baseline,
                peak_memory_total_bytes=total - self.baseline,
                peak_memory_train_allocated_bytes=tracked,
                peak_memory_train_breakdown=breakdown,
                peak_memory_total_allocated_bytes=tracked_total,
                peak_memory_cuda_train_allocated_bytes=self._train[1] - self._allocated_baseline,
                peak_memory_cuda_total_allocated_bytes=total_allocated - self._allocated_baseline,
            )
        if self._use_hwm:
            after = _read_status_kib("VmHWM")
        else:
            after = self._sampler.stop() if self._sampler else current_rss_bytes()
        train_peak = self._train[0] or self._peak_before_training
        total = max(self._peak_before_training or 0, after or 0, train_peak or 0, self._excluded_peak[0])
        return MemoryReport(
            peak_memory_kind="cpu_rss",
            peak_memory_train_bytes=max(train_peak - self.baseline, 0),
            peak_memory_total_bytes=max(total - self.baseline, 0),
            peak_memory_train_allocated_bytes=tracked,
            peak_memory_train_breakdown=breakdown,
            peak_memory_total_allocated_bytes=tracked_total,
        )
