"""SIGINT (Ctrl-C), SIGTERM and SIGHUP all mean "cancel": the run stops and records a `cancelled` result.

Both the parent and the child turn these signals into `Cancelled`, a KeyboardInterrupt that says which
signal it was, so that every `except KeyboardInterrupt` cleanup path (writing the `cancelled` result,
deleting temp files, stopping the other trials) runs for all three, not only for Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Optional

REASONS = {
    signal.SIGINT: "cancelled by the user (Ctrl-C)",
    signal.SIGTERM: "cancelled by SIGTERM",
    signal.SIGHUP: "cancelled by SIGHUP (the terminal closed)",
}
ORPHANED = "cancelled: the parent peftbench process exited"
PARENT_DEATH_SIGNAL = signal.SIGTERM  # what the kernel sends a child when its parent dies (die_with_parent)


class Cancelled(KeyboardInterrupt):
    def __init__(self, signum: int, reason: str) -> None:
        super().__init__(reason)
        self.signum, self.reason = signum, reason


def cancel_reason(interrupt: BaseException) -> str:
    return getattr(interrupt, "reason", REASONS[signal.SIGINT])


def cancel_signal(interrupt: BaseException) -> int:
    return getattr(interrupt, "signum", signal.SIGINT)


def interrupt_behind(error: BaseException) -> Optional[KeyboardInterrupt]:
    """The interrupt during whose handling `error` was raised, if any: cancellation raises wherever its signal
    lands, so cleanup code (a library's `with`, a `finally`) can fail on the state it left half-changed."""
    seen = set()
    context = error.__context__
    while context is not None and id(context) not in seen:
        if isinstance(context, KeyboardInterrupt):
            return context
        seen.add(id(context))
        context = context.__context__
    return None


def cancel_on_signals(signals=(signal.SIGTERM, signal.SIGHUP), parent_pid: Optional[int] = None) -> None:
    """Raise Cancelled on the first of `signals`; ignore the later ones, so that cleanup is not interrupted.

    With `parent_pid` (the child), a signal that arrives after that parent has exited is reported as such.
    Call from the main thread.
    """

    def handler(signum, frame) -> None:
        for other in signals:
            signal.signal(other, signal.SIG_IGN)
        reason = REASONS.get(signum, f"cancelled by signal {signum}")
        if parent_pid is not None and _parent_gone(parent_pid, wait_s=0.5 if signum == PARENT_DEATH_SIGNAL else 0):
            reason = ORPHANED
            _silence_stderr()  # its reader is gone: writing to it would raise BrokenPipeError
        raise Cancelled(signum, reason)

    def deliver_dropped_again(unraisable, previous=sys.unraisablehook) -> None:
        # The signal landed in a weakref callback or a __del__ (the memory tracker has many), whose exceptions
        # Python hands here and drops: the run would go on, deaf to the signals the handler now ignores. Send
        # it again, from another thread, so that it lands after this hook returns.
        if not isinstance(unraisable.exc_value, Cancelled):
            return previous(unraisable)
        signum = unraisable.exc_value.signum
        signal.signal(signum, handler)
        again = threading.Timer(0.05, os.kill, (os.getpid(), signum))
        again.daemon = True
        again.start()

    for signum in signals:
        signal.signal(signum, handler)
    sys.unraisablehook = deliver_dropped_again


def _parent_gone(parent_pid: int, wait_s: float) -> bool:
    """Whether this process has been re-parented away from `parent_pid`, waiting up to `wait_s` for it.

    The kernel sends the parent-death signal when the thread that started us exits, which in a dying
    multi-threaded parent can come before the last of its threads is gone and we are re-parented."""
    deadline = time.monotonic() + wait_s
    while os.getppid() == parent_pid:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to send SIGTERM to this process when its parent exits (Linux), then check it has not."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, PARENT_DEATH_SIGNAL, 0, 0, 0)
    except (OSError, AttributeError):
        return  # not Linux: an orphan notices when its output pipe breaks (recorded as cancelled too)
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGTERM)


def _silence_stderr() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    except OSError:
        pass
