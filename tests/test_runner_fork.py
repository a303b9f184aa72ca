"""The child forked from a warm parent (runners.isolated.FORK_WARM_CHILD): same result as a fresh interpreter,
and still its own process (a crash in it is recorded, the parent goes on)."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import replace

import pytest

from peftbench import runners
from peftbench.runners import isolated
from peftbench.run.request import RunRequest
from waiting import SAFETY_NET_S

LORA = "lora/llama-3.2-3B-rank32"


@pytest.fixture()
def params(math_fixture_params):
    return {**math_fixture_params, "max_steps": 3, "valid_size": 0, "test_size": 2}


def losses(path) -> list[float]:
    return [point["loss"] for point in json.loads(path.read_text())["peftbench"]["train_curve"]]


def test_forked_child_trains_as_a_fresh_interpreter(experiments_copy, params, tmp_path, monkeypatch):
    import torch  # noqa: F401 - the parent holds torch, as after planning
    import threading

    from tqdm import TMonitor, tqdm

    # A progress bar starts tqdm's monitor thread (a dataset's bar does in a real run): run_request stops it,
    # so this process, with no thread of its own running, still forks its child instead of using the fork server
    monkeypatch.setattr(tqdm, "monitor_interval", 10)  # restored afterwards: run_request sets it to 0
    with tqdm(total=1, disable=False, file=open(os.devnull, "w")) as bar:
        bar.update(1)
    assert any(isinstance(thread, TMonitor) for thread in threading.enumerate())
    forks = []
    # as the command line's `run` says of its parent (this test session has used OpenMP's pool: see below)
    monkeypatch.setattr(runners, "PARENT_COMPUTES_ON_ONE_THREAD", True)
    monkeypatch.setattr(isolated, "_ForkedChild", lambda real=isolated._ForkedChild: forks.append(1) or real())
    request = RunRequest(task="math", results_dir=str(tmp_path / "fork"), experiment_dir=str(experiments_copy / LORA),
                         overrides=params, save_checkpoint=False, show_progress=False)
    forked, status, _ = isolated.run_request(request)
    assert status == "success" and forks == [1]
    assert not any(isinstance(thread, TMonitor) for thread in threading.enumerate())
    monkeypatch.setattr(isolated, "FORK_WARM_CHILD", False)
    spawned, status, _ = isolated.run_request(replace(request, results_dir=str(tmp_path / "spawn")))
    assert status == "success" and forks == [1]
    assert losses(forked) == losses(spawned)


def test_a_forked_child_that_dies_is_recorded_and_the_parent_goes_on(experiments_copy, params, tmp_path, monkeypatch):
    import peftbench.run.engine

    monkeypatch.setattr(isolated.threading, "active_count", lambda: 1)  # fork whatever threads the tests left
    monkeypatch.setattr(runners, "PARENT_COMPUTES_ON_ONE_THREAD", True)

    def killed(*plan_and_clock):
        os.write(2, b"about to be killed\n")
        os.kill(os.getpid(), signal.SIGKILL)

    monkeypatch.setattr(peftbench.run.engine, "execute", killed)  # the fork inherits the patch
    path, status, _ = isolated.run_request(RunRequest(task="math", results_dir=str(tmp_path), overrides=params,
                                                   experiment_dir=str(experiments_copy / LORA), show_progress=False))
    assert status == "killed"  # SIGKILL, and nothing says it was the out-of-memory killer
    message = json.loads(path.read_text())["peftbench"]["error_msg"]
    assert "SIGKILL" in message and "about to be killed" in message


def test_children_of_a_two_worker_pool_come_from_the_fork_server(experiments_copy, params, tmp_path, monkeypatch):
    """While the pool's threads run, children are forked by the fork server (torch imported once there), not by
    this process; they train as a fresh interpreter does, and are their own processes."""
    import torch  # noqa: F401 - the parent holds torch, as after planning

    from peftbench.runners.batch import execute_trial
    from peftbench.runners.local_backend import run_local_pool

    starts = []
    monkeypatch.setattr(isolated, "_ForkServerChild",
                        lambda real=isolated._ForkServerChild: starts.append(1) or real())
    monkeypatch.setattr(isolated, "_ForkedChild", lambda: pytest.fail("forked from a threaded process"))
    trials = [RunRequest(task="math", results_dir=str(tmp_path / name), experiment_dir=str(experiments_copy / LORA),
                         overrides=params, save_checkpoint=False, show_progress=False) for name in ("a", "b")]
    outcomes = []
    run_local_pool(trials, workers=2, execute=execute_trial, on_done=outcomes.append, cores=2)
    assert [outcome.status for outcome in outcomes] == ["success", "success"] and starts == [1, 1]
    forked = [next((tmp_path / name).glob("*.json")) for name in ("a", "b")]
    assert losses(forked[0]) == losses(forked[1])
    monkeypatch.setattr(isolated, "FORK_WARM_CHILD", False)
    spawned, status, _ = isolated.run_request(replace(trials[0], results_dir=str(tmp_path / "spawn"), num_threads=1))
    assert status == "success" and losses(spawned) == losses(forked[0])
    assert not isolated._RUNNING  # every child was reaped


CLI_FORK_PROBE = """
import sys
from peftbench import runners
from peftbench.runners import isolated
real = isolated._ForkedChild
def spy():
    print("forked directly", file=sys.stderr)
    return real()
isolated._ForkedChild = spy
from peftbench.cli import main
sys.argv = ["peftbench", *sys.argv[1:]]
main()
"""


def test_only_the_command_lines_one_thread_parents_fork_their_children_directly(experiments_copy, params, tmp_path,
                                                                                monkeypatch):
    """A fork copies no threads: the child of a process whose OpenMP pool exists (this test session has computed
    on several threads) would wait for pool threads that are not there. Such a process takes its children from
    the fork server; `peftbench run`, whose parent computes on one thread, forks directly."""
    import subprocess
    import sys

    import torch

    torch.ones(256, 256) @ torch.ones(256, 256)  # this process's OpenMP pool exists (torch's default threads)
    monkeypatch.setattr(isolated, "_ForkedChild", lambda: pytest.fail("forked from a process that computed"))
    starts = []
    monkeypatch.setattr(isolated, "_ForkServerChild", lambda real=isolated._ForkServerChild: starts.append(1) or real())
    request = RunRequest(task="math", results_dir=str(tmp_path / "api"), experiment_dir=str(experiments_copy / LORA),
                         overrides={**params, "num_threads": 2}, save_checkpoint=False, show_progress=False)
    _, status, _ = isolated.run_request(request)
    assert status == "success" and starts == [1]

    sets = [f"{key}={json.dumps(value) if not isinstance(value, str) else value}" for key, value in params.items()]
    command = [sys.executable, "-c", CLI_FORK_PROBE, "run", str(experiments_copy / LORA), "--task", "math",
               "--results", str(tmp_path / "cli"), "--no-save", *[part for item in sets for part in ("--set", item)]]
    done = subprocess.run(command, capture_output=True, text=True, timeout=SAFETY_NET_S)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "forked directly" in done.stderr
