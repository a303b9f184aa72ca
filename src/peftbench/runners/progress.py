"""Progress of a batch of trials (a suite, a sweep) for the person waiting for it.

Each trial's child process writes a small JSON progress file (`ProgressFile`: phase, step, total steps),
replaced atomically at most once a second; the parent (`BatchProgress`) polls the files of the running trials.
A file is the simplest channel that works for every backend: a child of the local pool and a Ray worker on a
shared results folder alike, and nothing breaks when a child dies mid-write.

The parent prints, for each experiment: when it starts; its phase, step / total and ETA at least every
LINE_INTERVAL_S; its score and time when it finishes, with the batch's running total and time left. In a
terminal the running experiments are live bars; elsewhere (CI logs, nohup, a pipe) plain lines.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from rich.console import Console

WRITE_INTERVAL_S = 1.0  # the child rewrites its progress file at most this often (phase changes: at once)
POLL_INTERVAL_S = 1.0  # the parent reads the running trials' files this often
LINE_INTERVAL_S = 20.0  # plain-line mode: a status line per running trial this often (the promise: <= 30 s)
PROGRESS_DIR = ".progress"  # inside the results folder; hidden folders are never read as results


class ProgressFile:
    """The child's side: `update(phase, step, total)`; cheap to call at every step."""

    def __init__(self, path: Optional[str | Path]) -> None:
        self.path = Path(path) if path else None
        self._last_write = 0.0
        self._last_phase: Optional[str] = None

    def update(self, phase: str, step: Optional[int] = None, total: Optional[int] = None) -> None:
        if self.path is None:
            return
        now = time.monotonic()
        if phase == self._last_phase and now - self._last_write < WRITE_INTERVAL_S and step != total:
            return
        self._last_write, self._last_phase = now, phase
        state = {"phase": phase, "step": step, "total": total, "pid": os.getpid(), "time": time.time()}
        try:
            temporary = self.path.with_name(f"{self.path.name}.tmp")
            temporary.write_text(json.dumps(state), encoding="utf-8")
            os.replace(temporary, self.path)
        except OSError:
            pass  # progress is a courtesy: a full disk or a removed folder must not fail the run


def read_progress(path: Path) -> Optional[dict[str, Any]]:
    """A progress file's state, or None when it does not exist (yet) or cannot be read."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def format_duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "?"
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@dataclass
class _Running:
    trial_id: str
    started: float  # monotonic, when the parent first saw its progress file
    phase: str = "starting"
    step: Optional[int] = None
    total: Optional[int] = None
    train_started: Optional[float] = None  # monotonic, at the first training step seen
    train_start_step: int = 0
    last_line: float = 0.0
    bar: Any = None  # the rich task id in terminal mode

    def train_eta(self, now: float) -> Optional[float]:
        """Seconds of training left, from the step rate seen so far."""
        if self.phase != "train" or not self.step or not self.total or self.train_started is None:
            return None
        done = self.step - self.train_start_step
        if done <= 0:
            return None
        return (now - self.train_started) / done * (self.total - self.step)

    def describe(self, now: float) -> str:
        elapsed = format_duration(now - self.started)
        if self.phase == "train" and self.step is not None and self.total:
            eta = self.train_eta(now)
            eta_text = f", training ETA {format_duration(eta)}" if eta is not None else ""
            return f"{self.trial_id}: train step {self.step}/{self.total}{eta_text} ({elapsed} in)"
        return f"{self.trial_id}: {self.phase} ({elapsed} in)"


@dataclass
class BatchProgress:
    """The parent's side: start() before the trials run, finished(outcome) as each ends, stop() at the end."""

    trial_ids: list[str]
    workers: int
    description: str
    console: Console = field(default_factory=lambda: Console(stderr=True))
    progress_dir: Optional[Path] = None  # one private folder per batch; None: a temporary folder
    live: Optional[bool] = None  # live bars; None: when the console is a terminal
    line_interval_s: Optional[float] = None  # None: LINE_INTERVAL_S
    poll_interval_s: Optional[float] = None  # None: POLL_INTERVAL_S

    def __post_init__(self) -> None:
        if self.progress_dir is None:
            self.progress_dir = Path(tempfile.mkdtemp(prefix="peftbench-progress-"))
        else:
            self.progress_dir.mkdir(parents=True, exist_ok=True)
        if self.live is None:
            self.live = self.console.is_terminal and not self.console.is_dumb_terminal
        self.line_interval_s = LINE_INTERVAL_S if self.line_interval_s is None else self.line_interval_s
        self.poll_interval_s = POLL_INTERVAL_S if self.poll_interval_s is None else self.poll_interval_s
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._running: dict[str, _Running] = {}
        self._finished: set[str] = set()
        self._durations: list[float] = []  # wall seconds of trials that ran here (not skipped ones)
        self._started_at = time.monotonic()
        self._thread: Optional[threading.Thread] = None
        self._bars = None
        self._overall = None

    def file_for(self, trial_id: str) -> str:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in trial_id)
        return str(self.progress_dir / f"{safe}.json")

    # ---- lifecycle ----
    def start(self) -> None:
        if self.console.quiet:  # nothing to show: no polling thread (with none, a child can be forked warm)
            return
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), TextColumn("{task.fields[note]}"), console=self.console)
            self._bars.start()
            self._overall = self._bars.add_task(self.description, total=len(self.trial_ids), note="")
        self._thread = threading.Thread(target=self._poll_loop, name="peftbench-progress", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._bars is not None:
            self._bars.stop()
        shutil.rmtree(self.progress_dir, ignore_errors=True)
        if self.progress_dir.parent.name == PROGRESS_DIR:
            try:
                self.progress_dir.parent.rmdir()  # only when no other batch is using it
            except OSError:
                pass

    def print(self, text: str, style: Optional[str] = None) -> None:
        self.console.print(text, style=style, markup=False, highlight=False, soft_wrap=True)

    # ---- events ----
    def finished(self, trial_id: str, status: str, result_path: Optional[str], error: str = "",
                 skipped: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            self._poll_once(now)  # a trial that ran shorter than one poll still gets its start line
            running = self._running.pop(trial_id, None)
            self._finished.add(trial_id)
            if running is not None:
                self._durations.append(now - running.started)
                if self._bars is not None and running.bar is not None:
                    self._bars.remove_task(running.bar)
            took = ""
            if skipped:
                took = "kept, not run again"
            elif result_path is None:  # saying "kept" (or nothing) would hide that this run is lost
                took = "result not written, runs again next time"
            elif running is not None:
                took = format_duration(now - running.started)
            outcome = _result_summary(result_path) if status == "success" else status
            if status != "success" and error.strip():
                outcome += f" ({error.strip().splitlines()[0][:400]})"
            if took:
                outcome += f", {took}"
            done = len(self._finished)
            total = len(self.trial_ids)
            left = self._time_left(now)
            left_text = f", about {format_duration(left)} left" if left is not None and done < total else ""
            self.print(
                f"[{done}/{total} done] {trial_id}: {outcome}; "
                f"{self.description} {format_duration(now - self._started_at)} elapsed{left_text}",
                style=None if status == "success" else "yellow",
            )
            if self._bars is not None:
                self._bars.update(self._overall, completed=done, note=f"about {format_duration(left)} left" if left_text else "")
        try:
            os.unlink(self.file_for(trial_id))
        except OSError:
            pass

    # ---- polling ----
    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_interval_s):
            with self._lock:
                self._poll_once(time.monotonic())

    def _poll_once(self, now: float) -> None:
        for trial_id in self.trial_ids:
            if trial_id in self._finished:
                continue
            state = read_progress(Path(self.file_for(trial_id)))
            if state is None:
                continue
            running = self._running.get(trial_id)
            if running is None:
                running = self._running[trial_id] = _Running(trial_id, started=now, last_line=now)
                self.print(f"[start] {trial_id} ({len(self._finished) + len(self._running)}/{len(self.trial_ids)} "
                           f"started, {self.workers} at a time)")
                if self._bars is not None:
                    running.bar = self._bars.add_task(f"  {trial_id}", total=None, note="starting")
            self._update(running, state, now)
            if self._bars is not None:
                self._bars.update(running.bar, total=running.total if running.phase == "train" else None,
                                  completed=running.step or 0, note=self._note(running, now))
            elif now - running.last_line >= self.line_interval_s:
                running.last_line = now
                self.print(f"  {running.describe(now)}")

    @staticmethod
    def _update(running: _Running, state: dict[str, Any], now: float) -> None:
        phase = state.get("phase") if isinstance(state.get("phase"), str) else running.phase
        step = state.get("step") if isinstance(state.get("step"), int) else None
        total = state.get("total") if isinstance(state.get("total"), int) else None
        if phase == "train" and running.train_started is None and step is not None:
            running.train_started, running.train_start_step = now, step
        running.phase, running.step, running.total = phase, step, total

    def _note(self, running: _Running, now: float) -> str:
        eta = running.train_eta(now)
        return f"{running.phase}, ETA {format_duration(eta)}" if eta is not None else running.phase

    def _time_left(self, now: float) -> Optional[float]:
        """Wall seconds until the batch ends: queued trials at the mean duration of those finished here, the
        running ones at that mean minus what they have run, all spread over the workers."""
        if not self._durations:
            return None
        mean = sum(self._durations) / len(self._durations)
        queued = len(self.trial_ids) - len(self._finished) - len(self._running)
        running_left = sum(max(mean - (now - r.started), r.train_eta(now) or 0.0) for r in self._running.values())
        return (queued * mean + running_left) / max(1, min(self.workers, len(self.trial_ids) - len(self._finished)))


def _result_summary(result_path: Optional[str]) -> str:
    """"test accuracy 66.8%" from a result file (untrusted: only numbers and the score's name are used)."""
    from peftbench.printable import printable
    from peftbench.results.reader import read_result_file

    result = read_result_file(result_path).result if result_path else None
    score = result.test_score if result is not None else None
    if score is None:
        return "success"
    name = printable(result.score_name)[:40] or "score"
    shown = f"{100 * score:.1f}%" if name == "accuracy" else f"{score:.4g}"
    return f"test {name} {shown}"
