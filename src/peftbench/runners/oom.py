"""Was a SIGKILLed child killed by the kernel's out-of-memory killer? Only evidence counts.

Two sources, each read where this process may read it:
- the cgroup's OOM-kill counter (cgroup v2 `memory.events`, v1 `memory.oom_control`: `oom_kill N`), read
  before the child starts and after it dies: the counter counts kills of this cgroup's processes by any OOM
  killer, the machine's or the cgroup's;
- the kernel log (/dev/kmsg), which names the killed pid.
Without evidence a SIGKILL is recorded as `killed` (a user, a scheduler or a job limit sent it).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

from peftbench.stop_status import CPU_ALLOCATOR_FAILURE

CGROUP_ROOT = Path("/sys/fs/cgroup")


def stderr_says_out_of_memory(stderr_tail: str) -> bool:
    """Whether a child that died without a result ended on an out-of-memory error (its last traceback's line)."""
    lines = [line for line in stderr_tail.strip().splitlines() if line.strip()]
    return bool(lines) and (lines[-1].startswith("MemoryError") or CPU_ALLOCATOR_FAILURE in lines[-1])


def _counter_files() -> list[Path]:
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    candidates = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2
            candidates += [CGROUP_ROOT / path.lstrip("/") / "memory.events", CGROUP_ROOT / "memory.events"]
        elif "memory" in controllers.split(","):  # cgroup v1; in a container the own path may be the root
            base = CGROUP_ROOT / "memory"
            candidates += [base / path.lstrip("/") / "memory.oom_control", base / "memory.oom_control"]
    return [p for p in dict.fromkeys(candidates) if p.is_file()]


def oom_kill_count() -> Optional[int]:
    """This process's cgroup OOM-kill counter, or None where no counter can be read."""
    for path in _counter_files():
        try:
            match = re.search(r"^oom_kill (\d+)$", path.read_text(), re.MULTILINE)
        except OSError:
            continue
        if match:
            return int(match.group(1))
    return None


def kernel_log_names(pid: int) -> bool:
    """Whether the kernel log says the OOM killer killed `pid` (False where the log cannot be read)."""
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    pattern = re.compile(rf"(Killed process {pid}\b|oom-kill:.*\bpid={pid}\b)")
    try:
        while True:
            try:
                record = os.read(fd, 8192)
            except BlockingIOError:
                return False  # read everything
            except OSError:  # EPIPE: records overwritten while reading; EINVAL: a record too long
                continue
            if not record:
                return False
            if pattern.search(record.decode("utf-8", "replace")):
                return True
    finally:
        os.close(fd)


def killed_by_oom_killer(pid: int, count_before: Optional[int]) -> bool:
    count_after = oom_kill_count()
    if count_before is not None and count_after is not None and count_after > count_before:
        return True
    return kernel_log_names(pid)
