"""Run one RunRequest in a child process on this machine, and wait for its result file.

The child (`python -m peftbench.runners.child -`) reads its request as JSON from stdin, so no request file
exists to be left behind. A crash, an OOM kill or a leak in the child cannot take the parent down, and the
child's memory figures are its own. If the child dies without writing a result, the parent writes one itself:
`failed` with the tail of the child's stderr, `oom` or `killed` after a SIGKILL, or `cancelled` after Ctrl-C,
SIGTERM or SIGHUP. The child's stderr (progress bars, warnings) passes through to ours.

While the child runs, the parent holds the result file's advisory lock (results/lock.py): a second process
asked for the same result waits, then skips it if the first one produced it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Optional

from peftbench.runners.cancel import cancel_reason, cancel_signal
from peftbench.runners.child import EXIT_CANCELLED
from peftbench.runners.engine import PreparedRun, new_result, prepare, resolve_precision
from peftbench.runners.oom import killed_by_oom_killer, oom_kill_count
from peftbench.runners.request import RunRequest
from peftbench.results.lock import result_lock
from peftbench.results.reader import read_result_file
from peftbench.results.writer import ResultWriteError, result_document, write_json_atomic

STDERR_TAIL_BYTES = 4000
# Statuses that are a run's final word; a result with another status (failed, cancelled) is run again.
FINAL_STATUSES = ("success", "diverged")
# Runs stopped from outside: run again by default (memory may be free now), kept with `keep_killed`.
KILLED_STATUSES = ("oom", "killed")
CANCEL_GRACE_S = 120  # how long a cancelled child may take to write its `cancelled` result
CHILD_COMMAND = [sys.executable, "-m", "peftbench.runners.child"]  # + "-": the request comes on stdin
# Fork the child from this process where that is safe: it then starts with torch, transformers and peft
# already imported (prepare() imported them here; a fresh interpreter imports them again, about 5 s of CPU)
# and is still a process of its own (a crash, an OOM kill or a leak stays in it). Not while other threads
# run (a fork copies the locks they hold but not the threads; suites run trials from threads), and not
# before torch is imported (nothing to gain).
FORK_WARM_CHILD = hasattr(os, "fork")


def existing_status(result_file: Path) -> Optional[str]:
    """The status in an existing result file, or None when there is none (or it is unreadable)."""
    return read_result_file(result_file).status


def should_skip(result_file: Path, force: bool, keep_killed: bool = False, task: Optional[str] = None) -> bool:
    """An existing result with a final status is kept unless forced; failed/cancelled runs are retried, and
    so are oom/killed ones unless `keep_killed`. A result of another task (e.g. of a task file since edited:
    another content hash) is run again."""
    if force:
        return False
    read = read_result_file(result_file)
    if read.status not in FINAL_STATUSES + (KILLED_STATUSES if keep_killed else ()):
        return False
    recorded_task = read.result.task if read.source == "peftbench" else None
    return task is None or recorded_task in (None, "", task)


def _mtime(path: Path) -> Optional[int]:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def run_request(request: RunRequest) -> tuple[Path, str, bool]:
    """Train (or evaluate) in a child process; returns (result file, status, whether it was skipped).

    Bad input (ConfigError) is raised before any child starts. An existing result with a final status
    (success, diverged; with `keep_killed` also oom, killed) is not run again unless `force`: then its own
    status is returned, and skipped is True. A result that cannot be written raises ResultWriteError, naming
    the file.
    """
    run = prepare(request)  # raises ConfigError before anything starts
    if should_skip(run.result_file, request.force, request.keep_killed, run.task.name):
        return run.result_file, existing_status(run.result_file), True
    request = resolve_precision(request, run.config)  # in the parent: every run of a batch gets the same precision
    run.result_file.parent.mkdir(parents=True, exist_ok=True)
    asked_at = _mtime(run.result_file)

    def tell_waiting() -> None:
        print(f"waiting for {run.result_file}: another process is running it", file=sys.stderr, flush=True)

    with result_lock(run.result_file, on_wait=tell_waiting) as waited:
        # Whoever held the lock may have just produced this result: then it is not run twice, even if forced.
        if waited and _mtime(run.result_file) != asked_at and existing_status(run.result_file) in FINAL_STATUSES:
            status = existing_status(run.result_file)
            print(f"skip {run.result_file}: another process has just written it ({status})", file=sys.stderr)
            return run.result_file, status, True
        return *_run_child(run, request), False


def _run_child(run: PreparedRun, request: RunRequest) -> tuple[Path, str]:
    before = _mtime(run.result_file)
    oom_kills_before = oom_kill_count()
    interrupt: Optional[KeyboardInterrupt] = None
    process = _start_child()
    # With show_progress off (suites and sweeps draw one bar for the whole batch), the children's
    # own bars and warnings would interleave into noise: keep only their tail for the result.
    tail = _StderrTail(process.stderr, echo=request.show_progress)
    try:
        try:
            process.stdin.write(json.dumps({**request.to_dict(), "parent_pid": os.getpid()}).encode("utf-8"))
            process.stdin.close()
        except BrokenPipeError:
            pass  # the child died at once; its exit code and stderr say why
        process.wait()
    except KeyboardInterrupt as error:  # Ctrl-C, or SIGTERM/SIGHUP (runners.cancel)
        # Forward the signal (the terminal may have sent it to the child already; the child ignores
        # repeats) and give the child time to write its `cancelled` result.
        interrupt = error
        if process.poll() is None:
            process.send_signal(cancel_signal(error))
        try:
            process.wait(timeout=CANCEL_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    tail.join()

    if _mtime(run.result_file) not in (None, before):
        status = existing_status(run.result_file) or "failed"
    else:
        status, message = _died_without_result(process, interrupt, tail.text(), oom_kills_before)
        _write_fallback_result(run, request, status, message)
    if interrupt is not None:
        raise interrupt
    return run.result_file, status


def _start_child():
    """The child process, reading its request from stdin: forked from this warm process where that is safe
    (see FORK_WARM_CHILD), else a fresh interpreter."""
    if FORK_WARM_CHILD and "torch" in sys.modules and threading.active_count() == 1:
        return _ForkedChild()
    return subprocess.Popen(
        [*CHILD_COMMAND, "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


class _ForkedChild:
    """A forked child with the parts of subprocess.Popen that _run_child uses (returncode -N for signal N)."""

    def __init__(self) -> None:
        stdin_read, stdin_write = os.pipe()
        stderr_read, stderr_write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: `python -m peftbench.runners.child -`, then exit, never back into our code
            code = 1
            try:
                os.dup2(stdin_read, 0)
                os.dup2(stderr_write, 2)
                os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
                for fd in (stdin_read, stdin_write, stderr_read, stderr_write):
                    os.close(fd)
                sys.stdin = open(0, encoding="utf-8", closefd=False)
                from peftbench.runners.child import main

                code = main(["-"])
            except BaseException:  # noqa: BLE001 - whatever happens, this process must exit here
                traceback.print_exc()
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)
        os.close(stdin_read)
        os.close(stderr_write)
        self.pid = pid
        self.returncode: Optional[int] = None
        self.stdin = os.fdopen(stdin_write, "wb")
        self.stderr = os.fdopen(stderr_read, "rb")

    def _reap(self, flags: int) -> Optional[int]:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, flags)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def poll(self) -> Optional[int]:
        return self._reap(os.WNOHANG)

    def wait(self, timeout: Optional[float] = None) -> int:
        if timeout is None:
            return self._reap(0)
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout)
            time.sleep(0.1)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _died_without_result(process, interrupt: Optional[KeyboardInterrupt], stderr_tail: str,
                         oom_kills_before: Optional[int]) -> tuple[str, str]:
    """Status and message for a child that exited without writing its result."""
    if interrupt is not None:
        return "cancelled", cancel_reason(interrupt)
    if process.returncode == -signal.SIGKILL:
        if killed_by_oom_killer(process.pid, oom_kills_before):
            return "oom", f"the kernel's out-of-memory killer killed the child process; its stderr ended with:\n{stderr_tail}"
        return "killed", (
            "the child process was killed by SIGKILL, and neither the cgroup's OOM-kill counter nor the kernel "
            f"log says it was the out-of-memory killer; its stderr ended with:\n{stderr_tail}"
        )
    if process.returncode in (-signal.SIGTERM, -signal.SIGHUP, -signal.SIGINT):
        return "cancelled", f"the child process was stopped by {signal.Signals(-process.returncode).name}"
    if process.returncode == EXIT_CANCELLED:
        return "cancelled", f"the child process was cancelled before its run began: {stderr_tail}"
    return "failed", (
        f"the child process died (exit code {process.returncode}) without writing a result; "
        f"its stderr ended with:\n{stderr_tail}"
    )


def _write_fallback_result(run: PreparedRun, request: RunRequest, status: str, message: str) -> None:
    try:
        write_json_atomic(run.result_file, result_document(new_result(run, request, status=status, error_msg=message)))
    except ResultWriteError as error:
        last_line = message.strip().splitlines()[-1] if message.strip() else ""
        raise ResultWriteError(error.errno, f"{error.strerror}; the run ended {status}: {last_line}") from None


class _StderrTail:
    """Copies a child's stderr to ours as it comes (progress bars stay live, unless `echo` is off) and keeps
    its last bytes."""

    def __init__(self, stream, echo: bool = True) -> None:
        self._stream = stream
        self._echo = echo
        self._tail = b""
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        out = getattr(sys.stderr, "buffer", None)
        while chunk := os.read(self._stream.fileno(), 8192):
            self._tail = (self._tail + chunk)[-STDERR_TAIL_BYTES:]
            if not self._echo:
                continue
            try:
                if out is not None:
                    out.write(chunk)
                    out.flush()
                else:
                    sys.stderr.write(chunk.decode("utf-8", "replace"))
            except (OSError, ValueError):
                pass

    def join(self) -> None:
        self._thread.join(timeout=10)
        self._stream.close()

    def text(self) -> str:
        return self._tail.decode("utf-8", "replace").strip()
