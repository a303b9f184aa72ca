"""The wall-clock ledger of one run: how long each named phase took. Every time figure of the result file is
defined from it in one place (docs/engine.md "Times"):

- peftbench's own: `train_time_s` = TRAIN, `eval_time_s` = VALID + TEST, `total_time_s` = the whole run;
- the PEFT suite's: `train_info.train_time` = the phases its script's `train()` times, which differ per script
  (`Task.suite_train_phases`); `run_info.total_time` = the whole run minus what its scripts never do
  (NOT_IN_SUITE); a validation entry's `elapsed time` = the suite's train-time phases done before training plus
  the wall time since the loop started (its script's clock starts before them).

It also times the micro-benchmarks that choose a kernel (`best_one_thread_seconds`: peftbench.hardware, and
training.onednn_linear, which hardware.py times).
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

CHECKS = "checks"  # the child rebuilding the plan its parent made (the task, its typed config)
DATA = "data"  # the task's rows: train, valid, test and forgetting texts
REFERENCE = "reference"  # the forgetting measure of the base model, before full fine-tuning
PREPARE = "prepare"  # the task's work before the first step (image-gen: the prompt and latent caches)
TRAIN = "train"  # the training loop minus its validations
VALID = "valid"  # the periodic validations
TEST = "test"  # the test score and the forgetting (drift) measure
HARNESS = "harness"  # lm-evaluation-harness before and after training: peftbench's own measure
OUTPUT = "output"  # the task's output after the measured run (image-gen: the sample images)

NOT_IN_SUITE = (CHECKS, HARNESS, OUTPUT)  # work the PEFT suite's scripts never do, or do after their clock stops


class RunClock:
    """Seconds per phase since the clock was made; a phase entered twice adds up."""

    def __init__(self) -> None:
        self._start = time.perf_counter()
        self._stop: float | None = None
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        tic = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - tic

    def add(self, name: str, seconds: float) -> None:
        """Seconds a phase took that were measured elsewhere (the training loop times TRAIN and VALID itself)."""
        self.seconds[name] += seconds

    def stop(self) -> None:
        """The run is over: elapsed() is from now on the same number for every figure computed from it."""
        self._stop = time.perf_counter()

    def elapsed(self) -> float:
        return (self._stop if self._stop is not None else time.perf_counter()) - self._start

    def total(self, names: Iterable[str]) -> float:
        return sum(self.seconds.get(name, 0.0) for name in names)

    def suite_total_time(self) -> float:
        """The PEFT suite's `run_info.total_time`: the run, minus the phases its scripts do not have."""
        return self.elapsed() - self.total(NOT_IN_SUITE)

    def eval_time(self) -> float:
        """peftbench's `eval_time_s`: the validations and the test."""
        return self.total((VALID, TEST))

    def result_times(self) -> dict[str, object]:
        """The time fields of the run's result (RunResult's names) once the clock has stopped: `train_time_s` where
        the run got to training. `eval_time_s` and the suite's train time are the engine's to set when the run got
        that far (eval_time, total)."""
        times: dict[str, object] = {"total_time_s": self.elapsed(), "suite_total_time_s": self.suite_total_time(),
                                    "time_by_phase_s": dict(self.seconds)}
        if TRAIN in self.seconds:
            times["train_time_s"] = self.seconds[TRAIN]
        return times


def best_one_thread_seconds(candidates: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """The best of `repeats` timings of each candidate, on one thread, the candidates alternating.

    Other processes on the machine only ever add time, so the best is the truest; and two threads that must
    meet at every op are slowed down many times over when another process takes a core (that once made an
    fp32 matmul look as slow as emulated bf16 on a loaded machine). The first round allocates and picks
    kernels: not counted.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    best = dict.fromkeys(candidates, float("inf"))
    try:
        for repeat in range(repeats + 1):
            for name, candidate in candidates.items():
                tic = time.perf_counter()
                candidate()
                if repeat:
                    best[name] = min(best[name], time.perf_counter() - tic)
    finally:
        torch.set_num_threads(threads)
    return best
