"""Run one RunRequest in a child process on this machine, and wait for its result file.

The parent plans the run (run/plan.py: every check, the hardware decisions) and the child
(`python -m peftbench.runners.child -`) reads the plan as JSON from stdin, so no file exists to be left behind. A crash, an OOM kill or a leak in the child cannot take the parent down, and the
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from peftbench import runners
from peftbench.cancel import cancel_reason, cancel_signal
from peftbench.runners.child import EXIT_CANCELLED
from peftbench.run.assemble import new_result
from peftbench.run.plan import RunPlan, decide_hardware, plan_run
from peftbench.runners.oom import killed_by_oom_killer, oom_kill_count, stderr_says_out_of_memory
from peftbench.run.request import RunRequest
from peftbench.results.lock import result_lock
from peftbench.results.reader import read_result_file
from peftbench.results.writer import ResultWriteError, result_document, write_json_atomic

STDERR_TAIL_BYTES = 4000
# Statuses that are a run's final word; a result with another status (failed, cancelled) is run again. A halving
# sweep's pruned trial stopped by its rule, which would stop it again.
FINAL_STATUSES = ("success", "diverged", "pruned")
# Runs stopped from outside: run again by default (memory may be free now), kept with `keep_killed`.
KILLED_STATUSES = ("oom", "killed")
CANCEL_GRACE_S = 120  # how long a cancelled child may take to write its `cancelled` result
CHILD_COMMAND = [sys.executable, "-m", "peftbench.runners.child"]  # + "-": the request comes on stdin
# Start children warm: forked from a process that has torch, transformers and peft imported already (a fresh
# interpreter imports them again, seconds of CPU per child), each still a process of its own (a crash, an
# OOM kill or a leak stays in it). From this process itself when no other thread runs (planning imported
# them here); while threads run (a suite's workers) a fork would copy the locks they hold but not the
# threads, so then from multiprocessing's fork server, a single-threaded process that imports them once and
# forks every later child. It exits with this process, and its children with it (die_with_parent).
FORK_WARM_CHILD = hasattr(os, "fork")
FORK_SERVER_PRELOAD = ["torch", "transformers", "peft", "peftbench.run.engine", "peftbench.training.train"]
_RUNNING: set[int] = set()  # pids of the children now running, for interrupt_running_children
# Preparing reads the task's data through `datasets`, and neither it nor tqdm is thread-safe: datasets' thread_map
# deletes tqdm's class lock when it leaves, under another thread's progress bar ("'tqdm' object has no attribute
# '_lock'"), and that trial failed before its child started. A pool's workers take this lock to use either;
# their children, which do the work, still run at once.
_DATASETS_AND_TQDM = threading.Lock()


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
    """Plan a request and run the plan in a child process; returns (result file, status, whether it was skipped).

    Bad input (ConfigError) is raised before any child starts. An existing result with a final status
    (success, diverged; with `keep_killed` also oom, killed) is not run again unless `force`: then its own
    status is returned, and skipped is True. A result that cannot be written raises ResultWriteError, naming
    the file.
    """
    with _DATASETS_AND_TQDM:
        plan = plan_run(request)  # raises ConfigError before anything starts
    return run_plan(plan)


def run_plan(plan: RunPlan) -> tuple[Path, str, bool]:
    """`run_request` for a request planned already (run.plan.plan_batch)."""
    request = plan.request
    if should_skip(plan.result_file, request.force, request.keep_killed, plan.task.name):
        return plan.result_file, existing_status(plan.result_file), True
    plan = decide_hardware(plan)  # in the parent: every run of a batch gets the same precision
    plan.result_file.parent.mkdir(parents=True, exist_ok=True)
    asked_at = _mtime(plan.result_file)

    def tell_waiting() -> None:
        print(f"waiting for {plan.result_file}: another process is running it", file=sys.stderr, flush=True)

    with result_lock(plan.result_file, on_wait=tell_waiting) as waited:
        # Whoever held the lock may have just produced this result: then it is not run twice, even if forced.
        if waited and _mtime(plan.result_file) != asked_at and existing_status(plan.result_file) in FINAL_STATUSES:
            status = existing_status(plan.result_file)
            print(f"skip {plan.result_file}: another process has just written it ({status})", file=sys.stderr)
            return plan.result_file, status, True
        return *_run_child(plan), False


def _run_child(plan: RunPlan) -> tuple[Path, str]:
    before = _mtime(plan.result_file)
    oom_kills_before = oom_kill_count()
    ended = run_in_child(plan.to_dict(), echo=plan.request.show_progress)
    if _mtime(plan.result_file) not in (None, before):
        status = existing_status(plan.result_file) or "failed"
    else:
        status, message = died_without_result(ended, oom_kills_before)
        _write_fallback_result(plan, status, message)
    if ended.interrupt is not None:
        raise ended.interrupt
    return plan.result_file, status


@dataclass
class ChildEnded:
    """How a child process ended: its process (returncode, pid), the interrupt that stopped it (re-raise it once
    the outcome is recorded), the tail of its stderr."""

    process: Any
    interrupt: Optional[KeyboardInterrupt]
    stderr_tail: str


def run_in_child(payload: dict[str, Any], *, echo: bool) -> ChildEnded:
    """Start a child process (warm where safe, see FORK_WARM_CHILD), give it `payload` as JSON on its stdin
    (runners.child reads it) and wait for it. Ctrl-C, SIGTERM or SIGHUP are forwarded, and the child is given
    time to record its cancellation. With `echo` off, its stderr is only kept (its tail), not shown."""
    interrupt: Optional[KeyboardInterrupt] = None
    process = _start_child()
    _RUNNING.add(process.pid)
    # With echo off (suites and sweeps draw one bar for the whole batch), the children's own bars and warnings
    # would interleave into noise: keep only their tail for the result.
    tail = _StderrTail(process.stderr, echo=echo)
    try:
        try:
            process.stdin.write(json.dumps({**payload, "parent_pid": process.parent_pid}).encode("utf-8"))
            process.stdin.close()
        except BrokenPipeError:
            pass  # the child died at once; its exit code and stderr say why
        process.wait()
    except KeyboardInterrupt as error:  # Ctrl-C, or SIGTERM/SIGHUP (peftbench.cancel)
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
    _RUNNING.discard(process.pid)
    tail.join()
    return ChildEnded(process, interrupt, tail.text())


def _start_child():
    """The child process, reading its request from stdin: warm where that is safe (see FORK_WARM_CHILD), else a
    fresh interpreter. It has the parts of subprocess.Popen that _run_child uses, and `parent_pid`: the process
    whose exit it must follow."""
    if FORK_WARM_CHILD and "torch" in sys.modules:
        with _DATASETS_AND_TQDM:
            _stop_tqdm_monitor()
        direct = runners.PARENT_COMPUTES_ON_ONE_THREAD and threading.active_count() == 1
        return _ForkedChild() if direct else _ForkServerChild()
    process = subprocess.Popen(
        [*CHILD_COMMAND, "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    process.parent_pid = os.getpid()
    return process


def _stop_tqdm_monitor() -> None:
    """Stop tqdm's monitor thread, which its first bar in this process started (loading a dataset shows one):
    it only refreshes stalled bars, and alone it would make a single `run` start its child from the fork
    server, a second interpreter that imports torch, transformers and peft again."""
    tqdm_module = sys.modules.get("tqdm.std")
    if tqdm_module is None:
        return
    tqdm_module.tqdm.monitor_interval = 0  # none again in this process (tqdm.auto's class inherits it)
    for thread in threading.enumerate():
        if isinstance(thread, tqdm_module.TMonitor):
            thread.exit()  # wakes it and joins it
            thread.tqdm_cls.monitor = None


def interrupt_running_children(signum: int = signal.SIGINT) -> None:
    """Send `signum` to every child now running a request: they treat the first SIGINT, SIGTERM or SIGHUP as
    "cancel, write a cancelled result" and ignore repeats."""
    for pid in list(_RUNNING):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass  # it has just exited


def _child_body(stdin_fd: int, stderr_fd: int) -> int:
    """What a warm child runs: `python -m peftbench.runners.child -` with the given pipes as stdin and stderr.
    Returns its exit code; the caller exits with it, never going back into the code that forked it."""
    code = 1
    try:
        os.dup2(stdin_fd, 0)
        os.dup2(stderr_fd, 2)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        sys.stdin = open(0, encoding="utf-8", closefd=False)
        from peftbench.runners.child import main

        code = main(["-"])
    except BaseException:  # noqa: BLE001 - whatever happens, this process must exit with a code
        traceback.print_exc()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001
        pass
    return code


class _WarmChild:
    """What both kinds of warm child share: signals go to its pid while it runs."""

    pid: int

    def poll(self) -> Optional[int]:
        raise NotImplementedError

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class _ForkedChild(_WarmChild):
    """A child forked from this process."""

    def __init__(self) -> None:
        stdin_read, stdin_write = os.pipe()
        stderr_read, stderr_write = os.pipe()
        pid = os.fork()
        if pid == 0:
            for fd in (stdin_write, stderr_read):
                os.close(fd)
            os._exit(_child_body(stdin_read, stderr_write))
        os.close(stdin_read)
        os.close(stderr_write)
        self.pid, self.parent_pid = pid, os.getpid()
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


def _fork_server_child(stdin_end, stderr_end, environment: dict[str, str], cwd: str) -> None:
    """The target of a fork-server child, started as subprocess.Popen would start it: with the environment and
    working directory that the parent has now, not those it had when the fork server started."""
    os.environ.clear()
    os.environ.update(environment)
    os.chdir(cwd)
    # exits through multiprocessing, whose exit handlers release the child's semaphores (tqdm makes one)
    sys.exit(_child_body(stdin_end.fileno(), stderr_end.fileno()))


class _ForkServerChild(_WarmChild):
    """A child forked by multiprocessing's fork server (see FORK_WARM_CHILD)."""

    def __init__(self) -> None:
        import multiprocessing
        from multiprocessing.connection import Connection

        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(FORK_SERVER_PRELOAD)
        stdin_read, stdin_write = os.pipe()
        stderr_read, stderr_write = os.pipe()
        # Connections travel to the child as file descriptors (multiprocessing passes them over its socket)
        child_ends = (Connection(stdin_read, writable=False), Connection(stderr_write, readable=False))
        self._process = context.Process(target=_fork_server_child, name="peftbench-trial",
                                        args=(*child_ends, dict(os.environ), os.getcwd()))
        try:
            self._process.start()
        finally:
            for end in child_ends:
                end.close()
        self.pid = self._process.pid
        self.parent_pid = _fork_server_pid(self.pid)
        self.stdin = os.fdopen(stdin_write, "wb")
        self.stderr = os.fdopen(stderr_read, "rb")

    @property
    def returncode(self) -> Optional[int]:
        return self._process.exitcode

    def poll(self) -> Optional[int]:
        return self._process.exitcode

    def wait(self, timeout: Optional[float] = None) -> int:
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout)
        return self._process.exitcode


def _fork_server_pid(child_pid: int) -> Optional[int]:
    """The fork server's pid: the parent of a child it has just forked (None if that child is gone)."""
    import psutil

    try:
        return psutil.Process(child_pid).ppid()
    except psutil.Error:
        return None


def died_without_result(ended: ChildEnded, oom_kills_before: Optional[int]) -> tuple[str, str]:
    """Status and message for a child that exited without writing its result."""
    process, interrupt, stderr_tail = ended.process, ended.interrupt, ended.stderr_tail
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
    if stderr_says_out_of_memory(stderr_tail):  # e.g. under a process limit (ulimit -v) before the run began
        return "oom", f"the child process ran out of memory and died without writing a result:\n{stderr_tail}"
    return "failed", (
        f"the child process died (exit code {process.returncode}) without writing a result; "
        f"its stderr ended with:\n{stderr_tail}"
    )


def _write_fallback_result(plan: RunPlan, status: str, message: str) -> None:
    try:
        write_json_atomic(plan.result_file, result_document(new_result(plan, status=status, error_msg=message)))
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
