"""`peftbench sweep` as a user runs it: the table, the summary file, exit statuses, clear input errors.

The engine is replaced by the stand-in (tests/sweep_standin.py) so the command runs in seconds;
the experiments, the task defaults and the option parsing are the real ones.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from peftbench.cli import app
from sweep_standin import make_experiment, standin_execute


@pytest.fixture
def cli(monkeypatch):
    monkeypatch.setattr("peftbench.sweep.run.execute_trial", standin_execute)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, ["sweep", *map(str, args)])


@pytest.fixture
def experiments(tmp_path):
    lora = make_experiment(tmp_path / "exp", "lora", "r4", best_valid_lr=1e-3, best_test_lr=1e-3)
    ia3 = make_experiment(tmp_path / "exp", "ia3", "default", best_valid_lr=1e-2, best_test_lr=1e-2)
    return lora, ia3


def test_sweep_command_prints_default_vs_tuned_and_writes_the_summary(cli, experiments, tmp_path):
    results = tmp_path / "results"
    outcome = cli(*experiments, "--task", "math-tiny", "--lr-trials", "3", "--seeds", "2", "--results", results,
                  "--workers", "2", "--set", "max_steps=5", "--set", "eval_steps=5")
    assert outcome.exit_code == 0, outcome.output
    assert "lora/r4" in outcome.stdout and "ia3/default" in outcome.stdout and "reference" in outcome.stdout
    summary = json.loads((results / "sweep-summary.json").read_text())
    assert summary["overrides"] == {"max_steps": 5, "eval_steps": 5}
    # math-tiny's configured rate (2e-3) is the grid's centre for both experiments
    assert summary["experiments"]["lora/r4"]["lr_grid"] == [0.000632, 0.002, 0.00632]
    assert summary["experiments"]["ia3/default"]["chosen_lr"] == 0.00632

    again = cli(*experiments, "--task", "math-tiny", "--lr-trials", "3", "--seeds", "2", "--results", results,
                "--workers", "2", "--set", "max_steps=5", "--set", "eval_steps=5")
    assert again.exit_code == 0 and "0 trials run, 10 already finished" in again.stderr


def test_halving_sweep_shows_where_trials_stopped_and_resumes_without_running_them(cli, experiments, tmp_path,
                                                                                  monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # the table on one line per experiment
    results = tmp_path / "results"
    args = (*experiments, "--task", "math-tiny", "--lr-trials", "3", "--seeds", "1", "--results", results,
            "--set", "max_steps=8", "--set", "eval_steps=2", "--halving", "--halving-signal", "score")
    outcome = cli(*args)
    assert outcome.exit_code == 0, outcome.output  # pruned trials are the rule at work, not failures
    assert "rungs at 2 steps x 2^k, decided on the validation score" in outcome.stderr
    # each method's worst rate stops at the first rung (the stand-in's curves: tests/sweep_standin.py)
    assert "0.00632@2; 18 of 24 steps (75%)" in outcome.stdout and "0.000632@2; 18 of 24" in outcome.stdout
    summary = json.loads((results / "sweep-summary.json").read_text())
    assert summary["halving"]["min_steps"] == 2 and summary["halving"]["reduction_factor"] == 2
    assert summary["experiments"]["lora/r4"]["chosen_lr"] == 0.000632

    again = cli(*args)
    assert again.exit_code == 0 and "0 trials run, 8 already finished" in again.stderr


def test_halving_decides_on_the_validation_loss_by_default_from_an_early_rung(cli, experiments, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    results = tmp_path / "results"
    outcome = cli(*experiments, "--task", "math-tiny", "--lr-trials", "3", "--seeds", "1", "--results", results,
                  "--set", "max_steps=8", "--set", "eval_steps=8", "--halving")
    assert outcome.exit_code == 0, outcome.output
    # the first rung needs no validation step: max_steps / 2^3; each trial measures its loss there
    assert "rungs at 1 steps x 2^k, decided on the validation loss" in outcome.stderr
    # the configured rate and the better one run to the end, the worse one stops at step 1
    assert "0.00632@1; 17 of 24 steps (71%)" in outcome.stdout
    summary = json.loads((results / "sweep-summary.json").read_text())
    assert summary["halving"]["signal"] == "loss" and summary["halving"]["decided_on"] == "validation loss"
    trial = json.loads((results / "lora--r4--lr0.00632--seed0.json").read_text())["peftbench"]
    assert trial["status"] == "pruned" and trial["steps"] == 1
    assert summary["experiments"]["lora/r4"]["chosen_lr"] == 0.000632  # chosen on the validation score, as ever


def test_a_failed_trial_makes_the_exit_status_non_zero(cli, experiments, tmp_path):
    broken = make_experiment(tmp_path / "exp", "boft", "broken", best_valid_lr=1e-3, best_test_lr=1e-3, fail=True)
    outcome = cli(experiments[0], broken, "--lrs", "1e-3", "--seeds", "1", "--results", tmp_path / "r")
    assert outcome.exit_code == 1
    assert "boft--broken--lr0.001--seed0.json: failed" in outcome.stderr
    assert (tmp_path / "r" / "lora--r4--lr0.001--seed1.json").exists()  # the sweep went on


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lrs", "1e-3", "--lr-trials", "2"], "either --lrs or --lr-trials"),
        (["--lrs", "1e-3,fast"], "'fast' is not a number"),
        (["--set", "max_stpes=3"], "unknown training parameter 'max_stpes'"),
        (["--task", "nope"], "unknown task 'nope'"),
        (["--reference", "vera"], "--reference 'vera' is not in this sweep"),
        # math-tiny validates once, at its last step: no rung for the score
        (["--halving", "--halving-signal", "score"], "nothing could be pruned"),
        (["--halving", "--halving-signal", "acc"], "--halving-signal 'acc'; valid: loss, score"),
        (["--halving", "--halving-signal", "score", "--set", "eval_steps=32", "--halving-min-steps", "48"],
         "not a multiple of eval_steps (32)"),
        (["--halving-min-steps", "32"], "need --halving"),
        (["--halving-signal", "score"], "need --halving"),
    ],
)
def test_bad_input_is_a_clear_error_before_anything_runs(cli, experiments, tmp_path, args, message):
    outcome = cli(*experiments, "--results", tmp_path / "r", *args)
    assert outcome.exit_code == 2
    assert message in outcome.stderr
    assert not (tmp_path / "r").exists()


def test_ctrl_c_exits_130_and_says_how_to_resume(cli, experiments, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("peftbench.sweep.run.run_sweep", interrupted)
    outcome = cli(*experiments, "--results", tmp_path / "r")
    assert outcome.exit_code == 130
    assert "run the same command again to resume" in outcome.stderr


def test_a_result_or_summary_the_full_disk_refuses_is_named_and_the_exit_status_is_1(cli, experiments, tmp_path,
                                                                                     monkeypatch):
    import errno

    import peftbench.sweep.run as sweep_run
    from peftbench.results.writer import ResultWriteError

    def full_disk_for_one(request):
        if request.result_stem.startswith("ia3--default--lr0.001--seed0"):
            raise ResultWriteError(errno.ENOSPC, f"cannot write result file {request.result_file()}: "
                                                 "no space left on the device")
        return standin_execute(request)

    monkeypatch.setattr(sweep_run, "execute_trial", full_disk_for_one)
    results = tmp_path / "r"
    outcome = cli(*experiments, "--lrs", "1e-3", "--seeds", "1", "--results", results)
    assert outcome.exit_code == 1, outcome.output
    assert "ia3--default--lr0.001--seed0.json: missing" in outcome.stderr
    assert "result not written" in outcome.stderr and "kept, not run again" not in outcome.stderr

    def no_space(path, data):
        raise ResultWriteError(errno.ENOSPC, f"cannot write result file {path}: no space left on the device")

    monkeypatch.setattr(sweep_run, "write_json_atomic", no_space)
    outcome = cli(*experiments, "--lrs", "1e-3", "--seeds", "1", "--results", results)
    assert outcome.exit_code == 1
    assert f"cannot write result file {results / 'sweep-summary.json'}" in outcome.stderr.replace("\n", "")
    assert "run the same command again" in outcome.stderr
