"""Run one experiment in a child process on this machine, and wait for its result file.

The child (`python -m peftbench.runners.child`, or a fork of this process, see FORK_WARM_CHILD) gets its
request as a JSON file. A crash, an OOM kill or a
leak in the child cannot take the parent down, and the child's memory figures are its own. If the child dies
without writing a result, the parent writes a `failed` result holding the tail of the child's stderr (or
`cancelled` after Ctrl-C). The child's stderr (progress bars, warnings) passes through to ours.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

from peftbench.runners.execute import PreparedRun, RunRequest, new_measurements, prepare
from peftbench.results.schema import build_result
from peftbench.results.writer import write_json_atomic

STDERR_TAIL_BYTES = 4000
# Statuses that are a run's final word; a result with another status (failed, cancelled) is run again.
FINAL_STATUSES = ("success", "diverged", "oom")
CANCEL_GRACE_S = 120  # how long a Ctrl-C'd child may take to write its `cancelled` result
CHILD_COMMAND = [sys.executable, "-m", "peftbench.runners.child"]  # + the request file
# Fork the child from this process where that is safe: it then starts with torch, transformers and peft
# already imported (prepare() imported them here; a fresh interpreter imports them again, about 5 s of CPU)
# and is still a process of its own (a crash, an OOM kill or a leak stays in it). Not while other threads
# run (a fork copies the locks they hold but not the threads; suites run trials from threads), and not
# before torch is imported (nothing to gain).
FORK_WARM_CHILD = hasattr(os, "fork")


def existing_status(result_file: Path) -> Optional[str]:
    """The status in an existing result file, or None when there is none (or it is unreadable)."""
    try:
        data = json.loads(result_file.read_text(encoding="utf-8"))
        return data.get("peftbench", {}).get("status") or data.get("train_info", {}).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def should_skip(result_file: Path, force: bool) -> bool:
    """An existing result with a final status is kept unless forced; failed/cancelled runs are retried."""
    return not force and existing_status(result_file) in FINAL_STATUSES


def run_experiment(
    experiment_dir: str | Path,
    task_name: str,
    results_dir: str | Path,
    overrides: Optional[dict[str, Any]] = None,
    seed: Optional[int] = None,
    force: bool = False,
    save_checkpoint: bool = True,
    result_name: Optional[str] = None,
    extra_result_fields: Optional[dict[str, Any]] = None,
    num_threads: Optional[int] = None,
    show_progress: bool = True,
) -> tuple[Optional[Path], str]:
    """Train and evaluate one experiment in a child process; returns (result file, status).

    Bad input (ConfigError) is raised before any child starts. An existing result with a final status
    (success, diverged, oom) is not run again unless `force`; then its own status is returned.
    """
    request = RunRequest(
        task=task_name, results_dir=str(Path(results_dir).resolve()), mode="train",
        experiment_dir=str(Path(experiment_dir).resolve()), overrides=dict(overrides or {}), seed=seed,
        save_checkpoint=save_checkpoint, result_name=result_name, extra_result_fields=dict(extra_result_fields or {}),
        num_threads=num_threads, show_progress=show_progress,
    )
    return run_request(request, force=force)


def evaluate_adapter(
    adapter_dir: str | Path,
    task_name: str,
    results_dir: str | Path,
    result_name: Optional[str] = None,
    method: Optional[str] = None,
    name: Optional[str] = None,
    overrides: Optional[dict[str, Any]] = None,
    seed: Optional[int] = None,
    force: bool = True,
    extra_result_fields: Optional[dict[str, Any]] = None,
    num_threads: Optional[int] = None,
    show_progress: bool = True,
) -> tuple[Optional[Path], str]:
    """Evaluate a saved adapter (base model from the task + `adapter_dir`) without training, in a child
    process, and write an ordinary result file (test score, forgetting, size, parameters, memory)."""
    request = RunRequest(
        task=task_name, results_dir=str(Path(results_dir).resolve()), mode="evaluate",
        adapter_dir=str(Path(adapter_dir).resolve()), method=method, name=name, overrides=dict(overrides or {}),
        seed=seed, save_checkpoint=False, result_name=result_name,
        extra_result_fields=dict(extra_result_fields or {}), num_threads=num_threads, show_progress=show_progress,
    )
    return run_request(request, force=force)


def run_request(request: RunRequest, force: bool = False) -> tuple[Optional[Path], str]:
    run = prepare(request)  # raises ConfigError before anything starts
    if should_skip(run.result_file, force):
        return run.result_file, existing_status(run.result_file)
    run.result_file.parent.mkdir(parents=True, exist_ok=True)
    before = run.result_file.stat().st_mtime_ns if run.result_file.exists() else None

    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="peftbench-request-", delete=False) as handle:
        json.dump(asdict(request), handle)
        request_file = handle.name
    interrupted = False
    try:
        process, stderr = _start_child(request_file)
        # With show_progress off (suites and sweeps draw one bar for the whole batch), the children's
        # own bars and warnings would interleave into noise: keep only their tail for the result.
        tail = _StderrTail(stderr, echo=request.show_progress)
        try:
            process.wait()
        except KeyboardInterrupt:
            # Forward the interrupt (the terminal may have sent it to the child already; the child ignores
            # repeats) and give the child time to write its `cancelled` result.
            interrupted = True
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=CANCEL_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        tail.join()
    finally:
        os.unlink(request_file)

    written = run.result_file.exists() and run.result_file.stat().st_mtime_ns != before
    if written:
        status = existing_status(run.result_file) or "failed"
    else:
        status, message = _died_without_result(process.returncode, interrupted, tail.text())
        _write_fallback_result(run, request, status, message)
    if interrupted:
        raise KeyboardInterrupt
    return run.result_file, status


def _start_child(request_file: str):
    """The child process (the subprocess.Popen calls used here) and its stderr stream."""
    if FORK_WARM_CHILD and "torch" in sys.modules and threading.active_count() == 1:
        return _fork_child(request_file)
    process = subprocess.Popen([*CHILD_COMMAND, request_file], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return process, process.stderr


def _fork_child(request_file: str):
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run the request as `python -m peftbench.runners.child` would, then exit
        code = 1
        try:
            os.close(read_fd)
            os.dup2(write_fd, 2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            from peftbench.runners.child import main

            code = main([request_file])
        except BaseException:  # noqa: BLE001 - whatever happens, this process must not return into the parent's code
            traceback.print_exc()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    os.close(write_fd)
    return _ForkedChild(pid), os.fdopen(read_fd, "rb")


class _ForkedChild:
    """A forked child behind the subprocess.Popen calls run_request makes (returncode: -N for signal N)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: Optional[int] = None

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


def _died_without_result(returncode: int, interrupted: bool, stderr_tail: str) -> tuple[str, str]:
    """Status and message for a child that exited without writing its result."""
    if interrupted:
        return "cancelled", "cancelled by the user (Ctrl-C)"
    if returncode == -signal.SIGKILL:
        # nobody else sends SIGKILL to a training run: it is the kernel's out-of-memory killer in practice
        return "oom", (
            "the child process was killed by SIGKILL, most likely by the kernel's out-of-memory killer; "
            f"its stderr ended with:\n{stderr_tail}"
        )
    return "failed", (
        f"the child process died (exit code {returncode}) without writing a result; "
        f"its stderr ended with:\n{stderr_tail}"
    )


def _write_fallback_result(run: PreparedRun, request: RunRequest, status: str, message: str) -> None:
    write_json_atomic(run.result_file, build_result(new_measurements(run, request, status=status, error_msg=message)))


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
