"""Adversarial inputs and events: bad inputs, signals, unwritable and full folders, collisions,
hostile result files and the filter sandbox. Each case is either rejected before any training with a message
naming the file, key or value, or handled with nothing lost and nothing left behind.

Most cases run no training: the checks happen while preparing, or a stand-in child replaces the real one.
The signal cases start a real child on the tiny model and stop it after two training steps.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from peftbench.cli import app
from peftbench.config import ConfigError
from peftbench.results import writer
from peftbench.results.lock import lock_path, result_lock
from peftbench.analysis.runs import load_results
from peftbench.runners import isolated
from peftbench.runners.progress import read_progress
from peftbench.run.request import RunRequest
from waiting import SAFETY_NET_S, StreamWatch, join_or_fail, wait_until

LORA = "lora/llama-3.2-3B-rank32"
RESULTS_FIXTURES = Path(__file__).parent / "fixtures" / "results"
SRC = Path(__file__).resolve().parents[1] / "src"


def set_options(params: dict) -> list[str]:
    options = []
    for key, value in params.items():
        options += ["--set", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    return options


def run_cli(*args: str, env: dict | None = None):
    """The CLI in this process; wide, so that messages are not wrapped (`.output` is then one line each)."""
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "1000", **(env or {})})


def read_result(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def leftovers(folder: Path) -> list[str]:
    """Temp, lock and write-check files a run must not leave behind."""
    return sorted(p.name for p in folder.rglob("*") if ".tmp" in p.name or p.name.endswith(".lock")
                  or "write-check" in p.name or "peftbench-request" in p.name)


@pytest.fixture()
def lora(experiments_copy) -> Path:
    return experiments_copy / LORA


def edited_copy(source: Path, destination: Path, adapter_changes=None, training_params=None) -> Path:
    shutil.copytree(source, destination)
    if adapter_changes:
        config = json.loads((destination / "adapter_config.json").read_text())
        (destination / "adapter_config.json").write_text(json.dumps({**config, **adapter_changes}))
    if training_params is not None:
        (destination / "training_params.json").write_text(json.dumps(training_params))
    return destination


def stand_in_child(monkeypatch, code: str) -> None:
    """Replace the training child with a tiny Python program (no torch: milliseconds)."""
    monkeypatch.setattr(isolated, "FORK_WARM_CHILD", False)  # the stand-in is a command
    monkeypatch.setattr(isolated, "CHILD_COMMAND", [sys.executable, "-c", code])


# ------------------------------------------------------------------ bad inputs, rejected before training


@pytest.mark.parametrize("value, shown", [("NaN", "nan"), ("-1e-3", "-0.001"), ('"fast"', "'fast'")])
def test_bad_learning_rate_from_set_is_refused_naming_set(lora, math_fixture_params, tmp_path, value, shown):
    outcome = run_cli("run", lora, "--task", "math", "--results", tmp_path / "r",
                      *set_options(math_fixture_params), "--set", f"optimizer_kwargs.lr={value}")
    assert outcome.exit_code == 2, outcome.output
    assert "optimizer_kwargs.lr" in outcome.output and shown in outcome.output and "--set" in outcome.output
    assert not (tmp_path / "r").exists()


def test_bad_learning_rate_in_training_params_names_the_file(lora, math_fixture_params, tmp_path):
    folder = edited_copy(lora, tmp_path / "lora" / "negative-lr", training_params={"optimizer_kwargs": {"lr": -1}})
    outcome = run_cli("run", folder, "--task", "math", "--results", tmp_path / "r", *set_options(math_fixture_params))
    assert outcome.exit_code == 2, outcome.output
    assert "optimizer_kwargs.lr" in outcome.output and str(folder / "training_params.json") in outcome.output


@pytest.mark.parametrize("changes, key", [({"r": "big"}, "'r'"), ({"target_modules": 5}, "'target_modules'"),
                                          ({"lora_dropout": [0.1]}, "'lora_dropout'")])
def test_wrong_types_in_adapter_config_fail_before_loading(lora, math_fixture_params, tmp_path, monkeypatch,
                                                           changes, key):
    folder = edited_copy(lora, tmp_path / "lora" / "bad-types", adapter_changes=changes)
    started_children = []
    monkeypatch.setattr(isolated, "_start_child", lambda: started_children.append(1))
    outcome = run_cli("run", folder, "--task", "math", "--results", tmp_path / "r", *set_options(math_fixture_params))
    assert outcome.exit_code == 2, outcome.output
    text = outcome.output
    assert key in text and "adapter_config.json" in text and repr(next(iter(changes.values()))) in text
    assert not (tmp_path / "r").exists()
    assert not started_children  # refused while preparing: no child, so no model was loaded


def test_empty_data_file_is_named(lora, math_fixture_params, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    outcome = run_cli("run", lora, "--task", "math", "--results", tmp_path / "r",
                      *set_options({**math_fixture_params, "train_data": str(empty)}))
    assert outcome.exit_code == 2, outcome.output
    assert "empty" in outcome.output and "train_data" in outcome.output and "StopIteration" not in outcome.output
    assert "from --set" in outcome.output


def test_unknown_optimizer_in_training_params_names_the_file(lora, math_fixture_params, tmp_path):
    folder = edited_copy(lora, tmp_path / "lora" / "typo", training_params={"optimizer_type": "Adamw"})
    outcome = run_cli("run", folder, "--task", "math", "--results", tmp_path / "r", *set_options(math_fixture_params))
    assert outcome.exit_code == 2 and "'Adamw'" in outcome.output, outcome.output
    assert f"from {folder / 'training_params.json'}" in outcome.output


def test_bare_data_name_says_it_tries_the_hub_and_fails_fast_offline(monkeypatch, capsys):
    from peftbench.tasks import base

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(base, "_HUB_SOURCES_TOLD", set())
    connections = []
    monkeypatch.setattr(socket.socket, "connect", lambda sock, address: connections.append(address))
    with pytest.raises(ConfigError, match="test_data.*gsm8k_test_no_such_file.*hub"):
        base.load_rows("gsm8k_test_no_such_file", key="test_data")
    assert connections == []  # offline: not one try, so no retries (48 s of them in the repro)
    assert "gsm8k_test_no_such_file not found locally, trying the hub" in capsys.readouterr().err


def test_unreachable_hub_switches_to_offline_mode(monkeypatch, capsys):
    from peftbench.tasks import base

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")  # a reserved name: never resolves
    monkeypatch.setattr(base, "_HUB_SOURCES_TOLD", set())
    base.check_local_source("some_dataset_name", "train_data")
    assert os.environ["HF_HUB_OFFLINE"] == "1" and "cannot be reached" in capsys.readouterr().err
    monkeypatch.delenv("HF_HUB_OFFLINE")


def test_a_name_too_long_for_its_temp_file_is_refused_before_training(lora, math_fixture_params, tmp_path):
    folder = edited_copy(lora, tmp_path / "lora" / ("x" * 240))
    outcome = run_cli("run", folder, "--task", "math", "--results", tmp_path / "r", *set_options(math_fixture_params))
    assert outcome.exit_code == 2, outcome.output
    assert "too long" in outcome.output and "Traceback" not in outcome.output


def test_same_result_name_from_two_folders_is_refused_naming_both(lora, math_fixture_params, tmp_path):
    first = edited_copy(lora, tmp_path / "a" / "lora" / "same")
    second = edited_copy(lora, tmp_path / "b" / "lora" / "same")
    for extra in ([], ["--force"]):
        outcome = run_cli("run", first, second, "--task", "math", "--results", tmp_path / "r",
                          *set_options(math_fixture_params), *extra)
        text = outcome.output
        assert outcome.exit_code == 2 and str(first) in text and str(second) in text, outcome.output
    assert not list((tmp_path / "r").glob("*.json"))  # nothing was written (the folder may not even exist)


def test_the_same_folder_given_twice_runs_once(lora, math_fixture_params, tmp_path, monkeypatch):
    starts = tmp_path / "starts"
    stand_in_child(monkeypatch, f"open({str(starts)!r}, 'a').write('x')")
    outcome = run_cli("run", lora, lora, "--task", "math", "--results", tmp_path / "r", *set_options(math_fixture_params))
    assert outcome.exit_code == 1 and starts.read_text() == "x", outcome.output


# ------------------------------------------------------------------ unwritable and full folders


def unwritable_for_root(tmp_path: Path) -> list[Path]:
    """Folders that refuse writes even to root: one below a regular file, and an immutable one (chattr +i),
    where the file system supports it."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    folders = [blocker / "results"]
    immutable = tmp_path / "immutable"
    immutable.mkdir()
    if subprocess.run(["chattr", "+i", str(immutable)], capture_output=True).returncode == 0:
        folders.append(immutable)
    return folders


@pytest.fixture()
def immutable_cleanup(tmp_path):
    yield
    subprocess.run(["chattr", "-i", str(tmp_path / "immutable")], capture_output=True)


def test_unwritable_results_folder_is_found_before_training(lora, math_fixture_params, tmp_path, monkeypatch,
                                                            immutable_cleanup):
    starts = tmp_path / "starts"
    stand_in_child(monkeypatch, f"open({str(starts)!r}, 'a').write('x')")
    for folder in unwritable_for_root(tmp_path):
        outcome = run_cli("run", lora, "--task", "math", "--results", folder, *set_options(math_fixture_params))
        assert outcome.exit_code == 2, outcome.output
        assert "not writable" in outcome.output and "Traceback" not in outcome.output
    assert not starts.exists()  # no child was started


@contextlib.contextmanager
def tiny_tmpfs(folder: Path, size: str = "64k"):
    """A 64 KB file system (root can mount one); None where mounting is not allowed."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True).returncode == 0
    try:
        yield folder if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path) -> None:
    with contextlib.suppress(OSError), open(folder / "filler", "wb") as handle:
        while True:
            handle.write(b"\0" * 4096)
            handle.flush()


def test_full_disk_is_found_before_training(lora, math_fixture_params, tmp_path, monkeypatch):
    with tiny_tmpfs(tmp_path / "small") as small:
        if small is not None:
            fill(small)
        else:  # no mount allowed: the write check's fsync meets a full disk
            def no_space(fd):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            monkeypatch.setattr(writer.os, "fsync", no_space)
            small = tmp_path / "small"
        outcome = run_cli("run", lora, "--task", "math", "--results", small, *set_options(math_fixture_params))
    assert outcome.exit_code == 2 and "not writable" in outcome.output and "space" in outcome.output, outcome.output


def test_a_late_write_failure_is_a_clear_error_and_the_batch_goes_on(lora, math_fixture_params, tmp_path,
                                                                   monkeypatch):
    # The results folder takes the write check, then the disk is full when the result is written: the
    # stand-in child fills it and dies without a result, so the parent's own write fails too.
    second = edited_copy(lora, tmp_path / "more" / "lora" / "second")
    starts = tmp_path / "starts"
    with tiny_tmpfs(tmp_path / "small") as small:
        if small is None:
            small = tmp_path / "small"

            def no_space(*args, **kwargs):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            child = f"open({str(starts)!r}, 'a').write('x'); raise SystemExit(1)"
            stand_in_child(monkeypatch, child)
            monkeypatch.setattr(writer.os, "replace", no_space)
            monkeypatch.setattr(writer, "check_writable", lambda folder: None)
        else:
            child = (f"open({str(starts)!r}, 'a').write('x')\n"
                     f"import contextlib\nwith contextlib.suppress(OSError), open({str(small / 'filler')!r}, 'ab') as f:\n"
                     "    while True: f.write(b'0' * 4096); f.flush()\nraise SystemExit(1)")
            stand_in_child(monkeypatch, child)
        outcome = run_cli("run", lora, second, "--task", "math", "--results", small, *set_options(math_fixture_params))
        assert outcome.exit_code == 1, outcome.output
        text = outcome.output
        assert "cannot write result file" in text and "no space left" in text and "Traceback" not in text
        assert starts.read_text() == "xx"  # the second experiment still ran
        assert "peftbench run" in outcome.output  # the summary table is printed
        assert leftovers(small) == []


# ------------------------------------------------------------------ collisions between processes


def test_a_second_process_waits_for_the_lock_then_skips_what_the_first_wrote(lora, math_fixture_params, tmp_path,
                                                                           monkeypatch, capsys):
    starts = tmp_path / "starts"
    stand_in_child(monkeypatch, f"open({str(starts)!r}, 'a').write('x')")
    result_file = tmp_path / "lora--llama-3.2-3B-rank32.json"
    waiting = threading.Event()

    def result_lock_seen_waiting(path, on_wait=None):  # the real lock; the test learns when it has to wait
        return result_lock(path, on_wait=lambda: (on_wait(), waiting.set()))

    monkeypatch.setattr(isolated, "result_lock", result_lock_seen_waiting)
    outcome = {}
    with result_lock(result_file):  # "the first process" is running this result
        runner = threading.Thread(target=lambda: outcome.update(
            zip(("path", "status"), isolated.run_request(RunRequest(
                task="math", results_dir=str(tmp_path), experiment_dir=str(lora), overrides=math_fixture_params,
                force=True)))), daemon=True)
        runner.start()
        wait_until(lambda: waiting.is_set() or not runner.is_alive(), "the second run to wait for the lock")
        assert runner.is_alive()
        writer.write_json_atomic(result_file, {"peftbench": {"status": "success"}, "train_info": {"status": "success"}})
    join_or_fail(runner, "the second run, once the lock was released")
    assert "waiting for" in capsys.readouterr().err
    assert outcome["status"] == "success" and not starts.exists()  # not run twice, even with force
    assert not lock_path(result_file).exists()


def test_the_workers_of_a_pool_prepare_one_at_a_time(lora, math_fixture_params, tmp_path, monkeypatch):
    """Preparing reads the task's data through `datasets`, which is not thread-safe: a trial of a two-worker pool
    failed with "'tqdm' object has no attribute '_lock'" before its child started, and the pool ran one trial."""
    stand_in_child(monkeypatch, "pass")
    lock = isolated._DATASETS_AND_TQDM
    lock_asked = threading.Event()

    class WatchedLock:  # the product's lock, telling the test when a second worker waits for it
        def __enter__(self):
            if lock.locked():
                lock_asked.set()
            return lock.__enter__()

        def __exit__(self, *exc):
            return lock.__exit__(*exc)

    monkeypatch.setattr(isolated, "_DATASETS_AND_TQDM", WatchedLock())
    preparing, entered, most_at_once = [0], [], [0]
    counter = threading.Lock()
    prepare = isolated.plan_run

    def watched_prepare(request):
        with counter:
            preparing[0] += 1
            most_at_once[0] = max(most_at_once[0], preparing[0])
            entered.append(request.results_dir)
        if len(entered) == 1:  # the first stays until the other worker has come to prepare too
            wait_until(lambda: lock_asked.is_set() or len(entered) == 2, "the second worker to come to prepare")
        try:
            return prepare(request)
        finally:
            with counter:
                preparing[0] -= 1

    monkeypatch.setattr(isolated, "plan_run", watched_prepare)
    outcomes = {}

    def worker(name: str) -> None:
        request = RunRequest(task="math", results_dir=str(tmp_path / name), experiment_dir=str(lora),
                             overrides=math_fixture_params, show_progress=False)
        outcomes[name] = isolated.run_request(request)[1]

    workers = [threading.Thread(target=worker, args=(name,), daemon=True) for name in ("a", "b")]
    for thread in workers:
        thread.start()
    for thread in workers:
        join_or_fail(thread, "a worker")
    assert most_at_once[0] == 1 and sorted(outcomes) == ["a", "b"], (most_at_once, outcomes)


def test_lock_is_released_and_removed_whatever_happens(tmp_path):
    result_file = tmp_path / "x.json"
    with pytest.raises(RuntimeError), result_lock(result_file) as waited:
        assert waited is False and lock_path(result_file).exists()
        raise RuntimeError("the run broke")
    assert not lock_path(result_file).exists()
    with result_lock(result_file) as waited:  # free again
        assert waited is False


# ------------------------------------------------------------------ signals: Ctrl-C's siblings and SIGKILL


def long_run(math_fixture_params) -> dict:
    # shuffled batches repeat without end; math's default (the PEFT suite's one pass) would end after the data
    return {**math_fixture_params, "max_steps": 100000, "eval_steps": 100000, "batch_order": "shuffled"}


def wait_for_training(stream) -> StreamWatch:
    """Watch `stream` (a child's stderr, its progress bar) until the child reports its second training step."""
    watch = StreamWatch(stream)
    watch.wait_for("2/100000")
    return watch


def subprocess_env(tmp_path: Path) -> dict:
    return {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "TMPDIR": str(tmp_path / "tmp")}


def start_cli_run(lora: Path, results: Path, params: dict, tmp_path: Path) -> subprocess.Popen:
    (tmp_path / "tmp").mkdir(exist_ok=True)
    command = [sys.executable, "-c", "from peftbench.cli import main; main()", "run", str(lora), "--task", "math",
               "--results", str(results), *set_options(params)]
    return subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env=subprocess_env(tmp_path))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_or_sighup_to_the_parent_cancels_like_ctrl_c(lora, math_fixture_params, tmp_path, signum):
    results = tmp_path / "r"
    parent = start_cli_run(lora, results, long_run(math_fixture_params), tmp_path)
    stderr = wait_for_training(parent.stderr)
    parent.send_signal(signum)
    stderr.rest()
    assert parent.wait(timeout=SAFETY_NET_S) == 130
    result = read_result(results / "lora--llama-3.2-3B-rank32.json")["peftbench"]
    assert result["status"] == "cancelled" and signal.Signals(signum).name in result["error_msg"]
    assert result["steps"] > 0
    assert leftovers(results) == [] and list((tmp_path / "tmp").iterdir()) == []  # no request file either


def test_sigkill_of_the_parent_leaves_a_cancelled_result_not_a_broken_pipe(lora, math_fixture_params, tmp_path):
    import psutil

    results = tmp_path / "r"
    parent = start_cli_run(lora, results, long_run(math_fixture_params), tmp_path)
    wait_for_training(parent.stderr)
    child = psutil.Process(parent.pid).children()[0]
    parent.kill()
    parent.wait()
    child.wait(timeout=SAFETY_NET_S)
    result = read_result(results / "lora--llama-3.2-3B-rank32.json")["peftbench"]
    assert result["status"] == "cancelled" and "parent" in result["error_msg"], result["error_msg"]
    assert "BrokenPipe" not in result["error_msg"]
    # A SIGKILLed parent cannot delete its lock file; the kernel released the lock itself, so the next run
    # takes it without waiting, and removes the file.
    assert [name for name in leftovers(results) if not name.endswith(".lock")] == []
    with result_lock(results / "lora--llama-3.2-3B-rank32.json") as waited:
        assert waited is False
    assert leftovers(results) == []



def running(process) -> bool:
    """Whether a psutil.Process runs (a zombie, exited but not yet reaped by its parent, does not)."""
    import psutil

    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def kill_tree(pid: int) -> None:
    """SIGKILL a process and everything below it that is still running."""
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return
    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(processes, timeout=SAFETY_NET_S)


POOL_SCRIPT = """
import json, sys
from peftbench.runners.batch import execute_trial
from peftbench.runners.local_backend import run_local_pool
from peftbench.cancel import cancel_on_signals
from peftbench.run.request import RunRequest
cancel_on_signals()  # as the CLI does
trials = [RunRequest.from_dict(fields) for fields in json.loads(sys.argv[1])]
def report(outcome):  # a trial that ends, even one that failed before its child started, says so
    print("outcome:", json.dumps(outcome.to_dict()), file=sys.stderr, flush=True)
run_local_pool(trials, workers=2, execute=execute_trial, on_done=report, cores=2)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_two_worker_pool_stopped_leaves_cancelled_results(lora, math_fixture_params, tmp_path, signum):
    """The pool's children come from the fork server, not from the pool's process: stopping that process
    still reaches them (SIGTERM through the pool, SIGKILL through the fork server's exit)."""
    import psutil

    (tmp_path / "tmp").mkdir()
    names = ("a", "b")
    progress_files = {name: tmp_path / f"{name}.progress.json" for name in names}
    result_files = {name: tmp_path / name / "lora--llama-3.2-3B-rank32.json" for name in names}
    trials = [RunRequest(task="math", results_dir=str(tmp_path / name), experiment_dir=str(lora),
                         overrides=long_run(math_fixture_params), progress_file=str(progress_files[name])).to_dict()
              for name in names]
    parent = subprocess.Popen([sys.executable, "-c", POOL_SCRIPT, json.dumps(trials)], stderr=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, text=True, env=subprocess_env(tmp_path))
    stderr = StreamWatch(parent.stderr)

    def progress() -> dict:
        return {name: read_progress(path) for name, path in progress_files.items()}

    def both_training_or_one_ended() -> bool:  # each child reports its training steps in its progress file
        ended = parent.poll() is not None or "outcome:" in stderr.text
        return ended or all((state or {}).get("phase") == "train" for state in progress().values())

    def seen() -> str:
        results = {name: read_result(path)["peftbench"]["error_msg"][-2000:]
                   for name, path in result_files.items() if path.exists()}
        return f"progress {progress()}, results {results}, pool exit {parent.poll()}, stderr:\n{stderr.text[-3000:]}"

    try:
        wait_until(both_training_or_one_ended, "both trials of the pool to train", seen)
        assert parent.poll() is None and "outcome:" not in stderr.text, seen()
        children = [psutil.Process(state["pid"]) for state in progress().values()]
        # a fork copies only the forking thread: torch's thread pools, had the fork server started them, would be
        # broken in every child ("Invalid thread pool!")
        assert psutil.Process(children[0].ppid()).num_threads() == 1, seen()
        parent.send_signal(signum)
        wait_until(lambda: parent.poll() is not None, "the pool's process to exit", seen)
        wait_until(lambda: not any(map(running, children)), "both trials to exit", seen)
    finally:  # a failed check must not leave the pool training (its trials run 100000 steps)
        kill_tree(parent.pid)
    for name in names:
        result = read_result(result_files[name])["peftbench"]
        assert result["status"] == "cancelled", result["error_msg"]
        reason = "parent" if signum == signal.SIGKILL else "SIGTERM"
        assert reason in result["error_msg"] and "BrokenPipe" not in result["error_msg"], result["error_msg"]


def start_child(lora: Path, results: Path, params: dict, tmp_path: Path) -> subprocess.Popen:
    from peftbench.run.plan import decide_hardware, plan_run

    plan = decide_hardware(plan_run(RunRequest(task="math", results_dir=str(results), experiment_dir=str(lora),
                                               overrides=params)))
    child = subprocess.Popen([*isolated.CHILD_COMMAND, "-"], stdin=subprocess.PIPE, stderr=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, text=True, env=subprocess_env(tmp_path))
    child.stdin.write(json.dumps({**plan.to_dict(), "parent_pid": os.getpid()}))  # as its parent sends it
    child.stdin.close()
    return child


def test_sighup_to_the_child_writes_a_cancelled_result(lora, math_fixture_params, tmp_path):
    child = start_child(lora, tmp_path / "r", long_run(math_fixture_params), tmp_path)
    stderr = wait_for_training(child.stderr)
    child.send_signal(signal.SIGHUP)
    child.send_signal(signal.SIGTERM)  # a second signal must not interrupt writing the result
    seen = stderr.rest()
    assert child.wait(timeout=SAFETY_NET_S) == 0
    assert "FutureWarning" not in seen  # libraries' deprecation notices are not for the user watching a run
    result = read_result(tmp_path / "r" / "lora--llama-3.2-3B-rank32.json")["peftbench"]
    assert result["status"] == "cancelled" and "SIGHUP" in result["error_msg"] and result["steps"] > 0
    assert leftovers(tmp_path / "r") == []


SWALLOWED_SCRIPT = """
import os, signal, sys, time, weakref
from peftbench.cancel import Cancelled, cancel_on_signals
cancel_on_signals()  # as the CLI does
class Storage: pass
def freed(_):  # a weakref callback, like the memory tracker's: Python prints its exceptions and drops them
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.01)  # the handler runs in this callback
storage = Storage()
ref = weakref.ref(storage, freed)
try:
    del storage
    deadline = time.monotonic() + float(sys.argv[1])  # a safety net: the signal comes again within 0.05 s
    while time.monotonic() < deadline:
        time.sleep(0.01)
    print("went on")
except Cancelled as cancelled:
    print(cancelled.reason)
"""


def test_a_cancel_that_lands_where_python_drops_exceptions_is_delivered_again(tmp_path):
    """A signal's Cancelled raised inside a weakref callback or a __del__ is only printed; the handler has
    already ignored the later signals (so that cleanup runs undisturbed), so the run would go on, deaf."""
    done = subprocess.run([sys.executable, "-c", SWALLOWED_SCRIPT, str(SAFETY_NET_S)], capture_output=True, text=True,
                          env=subprocess_env(tmp_path))
    assert done.stdout.strip() == "cancelled by SIGTERM", done.stdout + done.stderr


def test_sigkill_of_the_child_is_killed_not_oom_and_runs_again(lora, math_fixture_params, tmp_path):
    import psutil

    def training_child():  # the child running the request (from the fork server: this test runs it in a thread)
        return next((psutil.Process(pid) for pid in isolated._RUNNING), None)

    outcome = {}
    runner = threading.Thread(target=lambda: outcome.update(zip(("path", "status"), isolated.run_request(RunRequest(
        task="math", results_dir=str(tmp_path), experiment_dir=str(lora), overrides=long_run(math_fixture_params),
        show_progress=False)))), daemon=True)
    runner.start()
    wait_until(lambda: training_child() or not runner.is_alive(), "the child to start", lambda: outcome)
    child = training_child()
    assert child is not None, f"the run ended before its child was seen: {outcome}"
    child.kill()
    join_or_fail(runner, "the run whose child was killed")
    assert outcome["status"] == "killed"  # no OOM killer at work here: the cgroup counter did not move
    result = read_result(outcome["path"])["peftbench"]
    assert result["status"] == "killed" and "SIGKILL" in result["error_msg"]
    assert not isolated.should_skip(outcome["path"], force=False)
    assert isolated.should_skip(outcome["path"], force=False, keep_killed=True)
    assert leftovers(tmp_path) == []


def test_oom_evidence_comes_from_the_cgroup_counter(monkeypatch):
    from peftbench.runners import oom

    monkeypatch.setattr(oom, "kernel_log_names", lambda pid: False)
    monkeypatch.setattr(oom, "oom_kill_count", lambda: 3)
    assert oom.killed_by_oom_killer(12345, count_before=2) is True
    assert oom.killed_by_oom_killer(12345, count_before=3) is False
    monkeypatch.setattr(oom, "oom_kill_count", lambda: None)  # no counter readable: only the kernel log counts
    assert oom.killed_by_oom_killer(12345, count_before=None) is False


# ------------------------------------------------------------------ hostile result files


def hostile_results(folder: Path) -> Path:
    """Copies of one good result with out-of-range values, a 309-digit number and ANSI escapes."""
    folder.mkdir()
    good = (RESULTS_FIXTURES / "peftbench" / "lora--rank8--seed0.json").read_text()
    shutil.copy(RESULTS_FIXTURES / "peftbench" / "ia3--default--seed0.json", folder)
    (folder / "lora--rank8--seed0.json").write_text(good)

    def variant(file_name: str, experiment_name: str, changes: dict, raw: tuple[str, str] | None = None) -> None:
        data = json.loads(good)
        data["run_info"]["experiment_name"] = experiment_name
        data["peftbench"].update(method=experiment_name.split("/")[0], name=experiment_name.split("/")[1], **changes)
        text = json.dumps(data)
        if raw:
            text = text.replace(*raw)
        (folder / file_name).write_text(text)

    variant("huge-score.json", "evil/huge-score", {"test_score": 1e308})
    variant("negative-memory.json", "evil/negative-memory", {"peak_memory_train_allocated_bytes": -5, "peak_memory_train_bytes": -5})
    variant("digits.json", "evil/digits", {"train_time_s": 7.0}, raw=('"train_time_s": 7.0', '"train_time_s": 1' + "0" * 308))
    variant("ansi\x1b[2J.json", "evil/\x1b[31mred\x1b]0;owned\x07", {})
    return folder


def test_out_of_range_values_are_invalid_with_one_warning_per_file(tmp_path):
    loaded = load_results([hostile_results(tmp_path / "r")])
    by_file = {}
    for warning in loaded.warnings:
        by_file.setdefault(warning.path.name, []).append(str(warning))
    assert sorted(by_file) == ["digits.json", "huge-score.json", "negative-memory.json"]
    assert all(len(lines) == 1 and "outside its possible range" in lines[0] for lines in by_file.values())
    records = {r.result.experiment_name: r for r in loaded.runs}
    assert records["evil/huge-score"].metrics["test_score"] is None
    assert records["evil/negative-memory"].metrics["peak_memory"] is None
    assert records["evil/negative-memory"].metrics["peak_memory_process"] is None
    assert records["evil/digits"].metrics["train_time"] is None
    assert "evil/red" in records  # escape sequences stripped from the name


def test_report_recommend_and_png_survive_hostile_files(tmp_path):
    folder = hostile_results(tmp_path / "r")
    outcome = run_cli("report", folder, "--png", tmp_path / "png", env={"COLUMNS": "150"})
    assert outcome.exit_code == 0, outcome.output
    assert list((tmp_path / "png").glob("*.png"))
    assert "\x1b" not in outcome.output and "\x07" not in outcome.output
    table_lines = [line for line in outcome.output.splitlines() if line[:1] in "┃│┏┡└"]
    assert table_lines and max(len(line) for line in table_lines) <= 150  # the table keeps its shape
    assert "0" * 50 not in outcome.output and "1e+308" not in outcome.output.split("Pareto")[1]
    outcome = run_cli("recommend", folder, env={"COLUMNS": "150"})
    assert outcome.exit_code == 0, outcome.output
    best = next(line for line in outcome.output.splitlines() if "best" in line.lower())
    assert "huge-score" not in best and "1e+308" not in outcome.output.split("warning")[-1]


def test_escape_sequences_never_reach_the_terminal(lora, tmp_path):
    outcome = run_cli("report", hostile_results(tmp_path / "r"), RESULTS_FIXTURES / "hostile")
    assert outcome.exit_code == 0, outcome.output
    assert not any(ord(c) < 32 and c not in "\n" for c in outcome.output)


# ------------------------------------------------------------------ the filter sandbox


@pytest.mark.parametrize("expression", [
    "__import__('os').system('touch PWNED')",
    "().__class__.__bases__[0].__subclasses__()",
    "test_score.__class__",
    "open('PWNED', 'w')",
    "[x for x in (1,)]",
    "lambda: 1",
    "9 ** 9 ** 9 ** 9",
    "method == 'a' * 10**10",
])
def test_filter_expressions_cannot_escape_the_sandbox(expression, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    outcome = run_cli("report", RESULTS_FIXTURES / "published", "--filter", expression)
    assert outcome.exit_code == 2, outcome.output
    assert "Traceback" not in outcome.output and not (tmp_path / "PWNED").exists()
    assert "is not allowed in a filter" in outcome.output  # refused as written: nothing of it was evaluated
