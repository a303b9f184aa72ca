"""Progress of a suite or sweep: children write progress files, the parent prints start, step/ETA and finish
lines. The plain-line path (stdout/stderr not a terminal: CI logs, nohup, tee) is what is tested here."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import pytest

from peftbench.results.record import RunResult
from peftbench.results.writer import result_document, write_json_atomic
from peftbench.runners import progress as progress_module
from peftbench.runners.batch import TrialOutcome, run_trials
from peftbench.runners.progress import BatchProgress, ProgressFile, format_duration, read_progress
from peftbench.run.request import RunRequest
from waiting import SAFETY_NET_S, wait_until


def requests(results: Path, *experiments: str) -> list[RunRequest]:
    """Run descriptions whose trial ids are `<method>--<name>` of the experiments "method/name" given."""
    return [RunRequest(task="math-tiny", results_dir=str(results), experiment_dir=str(results / experiment))
            for experiment in experiments]


def test_progress_file_is_throttled_and_phase_changes_are_written_at_once(tmp_path, monkeypatch):
    clock = [100.0]  # the writer's clock, moved by hand: what counts is the time between updates
    monkeypatch.setattr(progress_module, "time", SimpleNamespace(monotonic=lambda: clock[0], time=time.time))
    path = tmp_path / "trial.json"
    assert read_progress(path) is None
    writer = ProgressFile(path)
    writer.update("train", 1, 10)
    clock[0] += 0.9 * progress_module.WRITE_INTERVAL_S
    writer.update("train", 2, 10)  # within the write interval of the last write: skipped
    assert read_progress(path)["step"] == 1
    clock[0] += 0.2 * progress_module.WRITE_INTERVAL_S
    writer.update("train", 3, 10)  # past it: written
    assert read_progress(path)["step"] == 3
    writer.update("valid", 2, 10)  # a new phase: written
    assert read_progress(path)["phase"] == "valid"
    writer.update("train", 10, 10)  # the last step: written
    assert read_progress(path) == {**read_progress(path), "phase": "train", "step": 10, "total": 10}
    ProgressFile(None).update("train", 1, 10)  # no file asked for: nothing happens
    path.write_text("{not json")
    assert read_progress(path) is None


def test_durations_read_well():
    assert [format_duration(s) for s in (None, 4.4, 59.6, 61, 3725)] == ["?", "4 s", "1 min 00 s", "1 min 01 s", "1 h 02 min"]


@pytest.fixture
def fast_progress(monkeypatch):
    monkeypatch.setattr(progress_module, "WRITE_INTERVAL_S", 0.0)
    monkeypatch.setattr(progress_module, "POLL_INTERVAL_S", 0.05)
    monkeypatch.setattr(progress_module, "LINE_INTERVAL_S", 0.0)  # a status line at every poll


class PrintedLines:
    """The lines BatchProgress prints, recorded as it prints them, so that a test waits for a line."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()

    def add(self, text: str) -> None:
        with self._changed:
            self.lines.append(text)
            self._changed.notify_all()

    def wait_for(self, start: str) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: any(line.startswith(start) for line in self.lines), SAFETY_NET_S):
                pytest.fail(f"no line {start!r} in {SAFETY_NET_S:.0f} s; printed: {self.lines}", pytrace=False)


@pytest.fixture
def printed(monkeypatch) -> PrintedLines:
    recorded = PrintedLines()
    print_line = BatchProgress.print

    def print_and_record(progress, text, style=None):
        print_line(progress, text, style)
        recorded.add(text)

    monkeypatch.setattr(BatchProgress, "print", print_and_record)
    return recorded


def fake_child(tmp_path: Path, printed: Optional[PrintedLines] = None, steps: int = 6):
    """An executor that behaves like a child: progress file while it trains, then a result file. With
    `printed`, each step lasts until the parent has printed its status line (plain-line mode)."""

    def execute(trial):
        writer = ProgressFile(trial.progress_file)
        writer.update("loading")
        for step in range(1, steps + 1):
            writer.update("train", step, steps)
            if printed is not None:
                printed.wait_for(f"  {trial.result_stem}: train step {step}/{steps}")
        if trial.result_stem == "boft--broken":
            return TrialOutcome(trial.result_stem, "failed", None, "RuntimeError: boom\ntraceback")
        result = tmp_path / f"{trial.result_stem}.json"
        write_json_atomic(result, result_document(RunResult(status="success", test_score=0.5)))
        return TrialOutcome(trial.result_stem, "success", str(result))

    return execute


def test_plain_lines_when_not_a_terminal(tmp_path, capsys, fast_progress, printed):
    trials = requests(tmp_path, "lora/rank16", "boft/broken", "ia3/default")
    outcomes = run_trials(trials, workers=1, execute=fake_child(tmp_path, printed), description="suite quick")
    assert [o.status for o in outcomes] == ["success", "failed", "success"]
    err = capsys.readouterr().err
    assert "\x1b[" not in err and "\r" not in err  # plain lines, no bars or cursor movement
    lines = err.splitlines()
    assert lines[0] == "[start] lora--rank16 (1/3 started, 1 at a time)"
    assert re.search(r"^  lora--rank16: train step \d/6, training ETA \d+ s \(\d+ s in\)$", err, re.M), err
    first_done = next(line for line in lines if line.startswith("[1/3 done]"))
    assert re.fullmatch(r"\[1/3 done\] lora--rank16: test accuracy 50\.0%, \d+ s; suite quick \d+ s elapsed, "
                        r"about \d+ s left", first_done), first_done
    assert any(line.startswith("[2/3 done] boft--broken: failed (RuntimeError: boom)") for line in lines)
    assert lines[-1].startswith("[3/3 done] ia3--default: test accuracy 50.0%") and "left" not in lines[-1]
    # each experiment's start comes before its finish, and the progress files are cleaned up
    for name in ("lora--rank16", "boft--broken", "ia3--default"):
        assert err.index(f"[start] {name}") < err.index(f"] {name}: ", err.index(f"[start] {name}") + 1)
    assert not (tmp_path / progress_module.PROGRESS_DIR).exists()


def test_kept_results_finish_without_starting(tmp_path, capsys, fast_progress):
    kept = tmp_path / "kept.json"
    write_json_atomic(kept, result_document(RunResult(status="success", test_score=0.25)))
    run_trials(requests(tmp_path, "lora/kept"), workers=2,
               execute=lambda trial: TrialOutcome("lora--kept", "success", str(kept), skipped=True),
               description="suite quick")
    err = capsys.readouterr().err
    assert "[start]" not in err and "[1/1 done] lora--kept: test accuracy 25.0%, kept, not run again" in err


def test_live_bars_in_a_terminal(tmp_path, fast_progress):
    import io

    from rich.console import Console

    screen = io.StringIO()
    progress = BatchProgress(["lora--rank16"], 1, "suite quick", console=Console(file=screen, force_terminal=True),
                             progress_dir=tmp_path / "progress")
    assert progress.live
    progress.start()
    (request,) = requests(tmp_path, "lora/rank16")
    fake_child(tmp_path, steps=4)(replace(request, progress_file=progress.file_for("lora--rank16")))
    # the trial's own bar, drawn by the poller and rich's refresh thread: its description and its last step
    wait_until(lambda: "lora--rank16" in screen.getvalue() and "4/4" in screen.getvalue(),
               "the trial's bar at step 4/4", lambda: screen.getvalue()[-2000:])
    progress.finished("lora--rank16", "success", str(tmp_path / "lora--rank16.json"))
    progress.stop()
    shown = screen.getvalue()
    assert "suite quick" in shown and "lora--rank16" in shown and "[1/1 done] lora--rank16: test accuracy 50.0%" in shown
