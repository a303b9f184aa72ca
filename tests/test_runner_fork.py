"""The child forked from a warm parent (runners.local.FORK_WARM_CHILD): same result as a fresh interpreter,
and still its own process (a crash in it is recorded, the parent goes on)."""

from __future__ import annotations

import json
import os
import signal

import pytest

from peftbench.runners import local

LORA = "lora/llama-3.2-3B-rank32"


@pytest.fixture()
def params(math_fixture_params):
    return {**math_fixture_params, "max_steps": 3, "valid_size": 0, "test_size": 2}


def losses(path) -> list[float]:
    return [point["loss"] for point in json.loads(path.read_text())["peftbench"]["train_curve"]]


def test_forked_child_trains_as_a_fresh_interpreter(experiments_copy, params, tmp_path, monkeypatch):
    import torch  # noqa: F401 - the parent holds torch, as after prepare()
    import threading

    from tqdm import TMonitor, tqdm

    # the fixtures' progress bars left tqdm's monitor thread running; with a thread, no fork (by design)
    monkeypatch.setattr(tqdm, "monitor_interval", 0)
    for thread in threading.enumerate():
        if isinstance(thread, TMonitor):
            thread.exit()
    assert threading.active_count() == 1
    forks = []
    monkeypatch.setattr(local, "_ForkedChild", lambda real=local._ForkedChild: forks.append(1) or real())
    forked, status = local.run_experiment(experiments_copy / LORA, "math", tmp_path / "fork", overrides=params,
                                          save_checkpoint=False, show_progress=False)
    assert status == "success" and forks == [1]
    monkeypatch.setattr(local, "FORK_WARM_CHILD", False)
    spawned, status = local.run_experiment(experiments_copy / LORA, "math", tmp_path / "spawn", overrides=params,
                                           save_checkpoint=False, show_progress=False)
    assert status == "success" and forks == [1]
    assert losses(forked) == losses(spawned)


def test_a_forked_child_that_dies_is_recorded_and_the_parent_goes_on(experiments_copy, params, tmp_path, monkeypatch):
    import peftbench.runners.execute

    monkeypatch.setattr(local.threading, "active_count", lambda: 1)  # fork whatever threads the tests left

    def killed(request):
        os.write(2, b"about to be killed\n")
        os.kill(os.getpid(), signal.SIGKILL)

    monkeypatch.setattr(peftbench.runners.execute, "execute", killed)  # the fork inherits the patch
    path, status = local.run_experiment(experiments_copy / LORA, "math", tmp_path, overrides=params,
                                        show_progress=False)
    assert status == "killed"  # SIGKILL, and nothing says it was the out-of-memory killer
    message = json.loads(path.read_text())["peftbench"]["error_msg"]
    assert "SIGKILL" in message and "about to be killed" in message
