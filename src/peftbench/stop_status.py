"""The status and message of a run that an exception stopped: `cancelled` (a signal, peftbench.cancel, or its
parent gone), `oom` (the process ran out of memory) or `failed`. The training loop and the engine both record
a stopped run through `stop_status`, so that the same exception reads the same wherever it lands.
"""

from __future__ import annotations

import sys
import traceback

from peftbench.cancel import ORPHANED, cancel_reason, interrupt_behind
from peftbench.config import ConfigError

# How torch's CPU allocator says that an allocation failed (under a process limit such as `ulimit -v`, or when
# the kernel refuses it): a RuntimeError, unlike CUDA's torch.OutOfMemoryError.
CPU_ALLOCATOR_FAILURE = "DefaultCPUAllocator: can't allocate memory"


def is_out_of_memory(error: BaseException) -> bool:
    """Whether `error` says that the process ran out of memory: Python's MemoryError, torch's OutOfMemoryError
    (CUDA) or its CPU allocator's failure."""
    if isinstance(error, MemoryError):
        return True
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and CPU_ALLOCATOR_FAILURE in str(error)


def stop_status(error: BaseException, *, during: str = "", traceback_limit: int = 10) -> tuple[str, str]:
    """(status, error message) of the run that `error` stopped; call it while handling `error` (a failure's
    message ends with its traceback). `during`: what was running, for the out-of-memory message."""
    if isinstance(error, KeyboardInterrupt):  # Ctrl-C, SIGTERM, SIGHUP, the parent's death (peftbench.cancel)
        return "cancelled", cancel_reason(error)
    if isinstance(error, BrokenPipeError):  # the reader of its output, the parent process, is gone
        return "cancelled", ORPHANED
    interrupt = interrupt_behind(error)
    if interrupt is not None:  # a cleanup that failed while the run was being cancelled
        return "cancelled", cancel_reason(interrupt)
    if is_out_of_memory(error):  # MemoryError, CUDA's, or the CPU allocator's under a process limit
        return "oom", f"out of memory{during}: {error}"
    if isinstance(error, ConfigError):  # bad input found once the model exists (e.g. target modules)
        return "failed", str(error)
    return "failed", f"{type(error).__name__}: {error}\n{traceback.format_exc(limit=traceback_limit)}"
