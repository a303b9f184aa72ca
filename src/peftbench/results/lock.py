"""An advisory lock per result file, so that two processes on one results folder never run the same result.

The lock is `flock` on `.<stem>.json.lock` beside the result file. It is held by the process that runs the
experiment (the parent, while its child trains) and released by the kernel when that process exits, however it
exits, so a crashed process never leaves a stale lock. The lock file is deleted on release; a process that
locked a file just deleted by another one notices (the path no longer names its file) and locks again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Callable, Iterator, Optional


def lock_path(result_file: Path) -> Path:
    return result_file.with_name(f".{result_file.name}.lock")


@contextlib.contextmanager
def result_lock(result_file: str | Path, on_wait: Optional[Callable[[], None]] = None) -> Iterator[bool]:
    """Hold the lock of `result_file` inside the block; yields whether another process held it first.

    When another process holds it, `on_wait()` is called once and this one waits until it is released.
    """
    path = lock_path(Path(result_file))
    waited = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not waited and on_wait is not None:
                    on_wait()
                waited = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same_file = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same_file = False
            if not same_file:  # the holder deleted it on release: lock the new one instead
                continue
            try:
                yield waited
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(path)  # while still locked: a waiter notices it locked a deleted file
            return
        finally:
            os.close(fd)
