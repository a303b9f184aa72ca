"""Sweep planning, selection on validation only, resume, failures, Ctrl-C and the summary's statistics.

Trials run through the local pool with a stand-in engine (tests/sweep_standin.py): real child
processes writing real result files, with scores that are a known function of the learning rate.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from peftbench.config import ConfigError
from peftbench.runners.batch import TrialOutcome, execute_trial
from peftbench.runners.trial import threads_per_worker
from peftbench.run.request import RunRequest, result_stem
from peftbench.sweep.plan import SweepPlan, lr_grid, parse_lrs
from peftbench.sweep.run import run_sweep
from peftbench.sweep.selection import TrialRecord, choose_lr
from peftbench.sweep.summary import SUMMARY_FILE
from sweep_standin import make_experiment, standin_execute, standin_experiment
from sweep_standin import two_methods as standin_two_methods


# ----------------------------------------------------------------------------- grid and names


def test_grid_is_log_spaced_around_the_configured_rate_which_it_keeps_exactly():
    assert lr_grid(1e-3, 3) == [3.16e-4, 1e-3, 3.16e-3]
    assert lr_grid(1e-3, 4) == [3.16e-4, 1e-3, 3.16e-3, 1e-2]
    assert lr_grid(1.2345e-4, 3)[1] == 1.2345e-4
    assert lr_grid(2e-4, 1) == [2e-4]
    with pytest.raises(ConfigError, match="--lr-trials"):
        lr_grid(1e-3, 0)


def test_parse_lrs_sorts_and_names_bad_values():
    assert parse_lrs("1e-3, 1e-4,3e-4") == [1e-4, 3e-4, 1e-3]
    with pytest.raises(ConfigError, match="'abc' is not a number"):
        parse_lrs("1e-4,abc")
    with pytest.raises(ConfigError, match="'-1' is not a positive"):
        parse_lrs("-1")
    with pytest.raises(ConfigError, match="twice"):
        parse_lrs("1e-4,0.0001")


def test_trial_names_carry_exact_rate_and_seed():
    assert result_stem("lora", "r8", lr=3.16e-05, seed=2) == "lora--r8--lr3.16e-05--seed2"
    assert float("3.16e-05") == 3.16e-05


# ----------------------------------------------------------------------------- selection


def record(lr: float, valid: float | None, test: float | None, status: str = "success") -> TrialRecord:
    return TrialRecord(Path(f"x{lr}.json"), lr, 0, status, valid_score=valid, test_score=test)


def test_choose_lr_uses_validation_never_test():
    trials = [record(1e-4, 0.50, 0.90), record(1e-3, 0.70, 0.10), record(1e-2, 0.60, 0.95)]
    assert choose_lr(trials, default_lr=1e-4) == 1e-3
    # lower-is-better scores pick the minimum
    assert choose_lr(trials, default_lr=1e-4, higher_is_better=False) == 1e-4


def test_choose_lr_ties_go_to_the_rate_nearest_the_default_then_the_smaller():
    tied = [record(1e-4, 0.7, None), record(1e-3, 0.7, None), record(1e-2, 0.7, None)]
    assert choose_lr(tied, default_lr=1e-2) == 1e-2
    assert choose_lr(tied, default_lr=3.16e-3) == 1e-3  # 1e-3 and 1e-2 are equally far; smaller wins
    failed_best = [record(1e-4, 0.5, 0.5), record(1e-3, None, None, status="diverged")]
    assert choose_lr(failed_best, default_lr=1e-3) == 1e-4
    assert choose_lr([record(1e-3, None, None, status="failed")], default_lr=1e-3) is None


# ----------------------------------------------------------------------------- a whole sweep


@pytest.fixture
def two_methods(tmp_path):
    return standin_two_methods(tmp_path / "exp")


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def test_sweep_end_to_end_selects_on_validation_and_summary_recomputes_from_files(tmp_path, two_methods):
    results = tmp_path / "results"
    plan = SweepPlan("math-tiny", two_methods, results, lr_trials=3, seeds=3)
    run = run_sweep(plan, workers=2, execute=standin_execute, show_progress=False)

    # every method got the same number of search trials, named by rate and seed, plus 3 seed runs
    files = sorted(p.name for p in results.glob("*--seed*.json"))
    assert len(files) == 2 * 3 + 2 * 3
    assert "lora--r4--lr0.000316--seed0.json" in files
    trial = read(results / "lora--r4--lr0.000316--seed0.json")
    assert trial["peftbench"]["sweep"]["role"] == "trial"
    assert trial["peftbench"]["sweep"]["lr"] == 0.000316
    assert trial["run_info"]["train_config"]["optimizer_kwargs"]["lr"] == 0.000316
    assert trial["peftbench"]["num_threads"] == threads_per_worker(2)

    summary = read(results / SUMMARY_FILE)
    assert summary == run.summary.to_dict()  # the file is the typed summary, as written
    lora = summary["experiments"]["lora/r4"]
    # test peaks at 1e-4 but validation at 1e-3: the validation winner is chosen
    assert lora["chosen_lr"] == 1e-3
    assert summary["experiments"]["ia3/default"]["chosen_lr"] == 3.16e-2
    assert lora["default"]["lr"] == 1e-3 and lora["default"]["in_grid"]

    # the seed statistics, recomputed independently from the seed result files
    seed_files = [results / f"lora--r4--lr0.001--seed{s}.json" for s in (1, 2, 3)]
    seed_scores = [read(p)["peftbench"]["test_score"] for p in seed_files]
    assert all(read(p)["peftbench"]["sweep"]["role"] == "seed" for p in seed_files)
    assert lora["tuned"]["test_scores"] == seed_scores
    assert lora["tuned"]["mean"] == pytest.approx(statistics.mean(seed_scores))
    assert lora["tuned"]["sd"] == pytest.approx(statistics.stdev(seed_scores))
    low, high = lora["tuned"]["ci95"]
    tolerance = 1e-9
    assert min(seed_scores) - tolerance <= low <= statistics.mean(seed_scores) <= high <= max(seed_scores) + tolerance

    # paired comparison against the reference (lora) over test items, from the per-item results
    ia3 = summary["experiments"]["ia3/default"]
    assert summary["reference"] == "lora/r4" and lora["vs_reference"] is None
    ia3_items = np.mean([read(results / f"ia3--default--lr0.0316--seed{s}.json")["peftbench"]["per_item_correct"]
                         for s in (1, 2, 3)], axis=0)
    lora_items = np.mean([read(p)["peftbench"]["per_item_correct"] for p in seed_files], axis=0)
    tuned_vs = ia3["vs_reference"]["tuned"]
    assert tuned_vs["mean_difference"] == pytest.approx(float(np.mean(ia3_items - lora_items)))
    assert tuned_vs["ci95"][0] <= tuned_vs["mean_difference"] <= tuned_vs["ci95"][1]
    assert 0 <= tuned_vs["probability_of_improvement"] <= 1
    default_lora_items = read(results / "lora--r4--lr0.001--seed0.json")["peftbench"]["per_item_correct"]
    assert ia3["vs_reference"]["default"]["mean_difference"] == pytest.approx(
        float(np.mean(ia3_items - np.array(default_lora_items))))

    assert set(summary["ranking"]["tuned"]) == {"lora/r4", "ia3/default"}
    assert summary["spread"]["tuned"] == pytest.approx(abs(ia3["tuned"]["mean"] - lora["tuned"]["mean"]))
    assert summary["complete"] and not summary["not_successful"]
    assert not list(results.glob("*.tmp-*"))


def test_explicit_lrs_are_shared_and_a_missing_default_rate_runs_apart_from_selection(tmp_path, two_methods):
    results = tmp_path / "results"
    plan = SweepPlan("math-tiny", two_methods, results, lrs=[1e-4, 1e-3], seeds=1)
    summary = run_sweep(plan, execute=standin_execute, show_progress=False).summary.to_dict()
    ia3 = summary["experiments"]["ia3/default"]
    assert [t["lr"] for t in ia3["trials"]] == [1e-4, 1e-3]
    assert ia3["default"]["lr"] == 1e-2 and not ia3["default"]["in_grid"]
    assert read(results / "ia3--default--lr0.01--seed0.json")["peftbench"]["sweep"]["role"] == "default"
    assert ia3["chosen_lr"] == 1e-3  # the better validation rate among the grid only


def test_resume_keeps_finished_trials_and_reruns_failed_cancelled_and_missing(tmp_path, two_methods):
    results = tmp_path / "results"
    plan = SweepPlan("math-tiny", two_methods, results, lr_trials=3, seeds=1)
    first = run_sweep(plan, execute=standin_execute, show_progress=False)
    assert len(first.ran) == 8 and first.skipped == 0

    again = run_sweep(plan, execute=standin_execute, show_progress=False)
    assert again.ran == [] and again.skipped == 8

    cancelled = results / "lora--r4--lr0.000316--seed0.json"
    data = read(cancelled)
    data["peftbench"]["status"] = "cancelled"
    cancelled.write_text(json.dumps(data))
    (results / "ia3--default--lr0.01--seed0.json").unlink()
    (results / "lora--r4--lr0.00316--seed0.json").write_text("{ truncated")
    resumed = run_sweep(plan, execute=standin_execute, show_progress=False)
    assert sorted(o.result_stem for o in resumed.ran) == [
        "ia3--default--lr0.01--seed0", "lora--r4--lr0.000316--seed0", "lora--r4--lr0.00316--seed0"]
    assert read(cancelled)["peftbench"]["status"] == "success"


def test_failing_and_diverging_trials_are_recorded_and_the_sweep_goes_on(tmp_path, two_methods):
    broken = make_experiment(tmp_path / "exp", "boft", "broken", best_valid_lr=1e-3, best_test_lr=1e-3, fail=True)
    spiky = make_experiment(tmp_path / "exp", "loha", "spiky", best_valid_lr=1e-2, best_test_lr=1e-2,
                            fail_above_lr=2e-3)
    experiments = [*two_methods, standin_experiment(broken, 1e-3), standin_experiment(spiky, 1e-3)]

    def crashing_for_ia3(trial):  # an executor error (not a result file) fails that trial only
        if trial.result_stem.startswith("ia3--default--lr0.0316"):
            raise RuntimeError("worker lost")
        return standin_execute(trial)

    run = run_sweep(SweepPlan("math-tiny", experiments, tmp_path / "r", lr_trials=3, seeds=1),
                    execute=crashing_for_ia3, show_progress=False)
    statuses = {o.result_stem: o.status for o in run.ran}
    assert statuses["boft--broken--lr0.001--seed0"] == "failed"
    assert statuses["loha--spiky--lr0.00316--seed0"] == "diverged"
    assert statuses["ia3--default--lr0.0316--seed0"] == "failed"
    summary = run.summary.to_dict()
    assert summary["experiments"]["boft/broken"]["chosen_lr"] is None
    assert summary["experiments"]["boft/broken"]["tuned"]["mean"] is None
    assert summary["experiments"]["loha/spiky"]["chosen_lr"] == 1e-3  # best rate that did not diverge
    assert summary["experiments"]["ia3/default"]["chosen_lr"] == 1e-2
    assert summary["experiments"]["lora/r4"]["tuned"]["n"] == 1
    assert not summary["complete"]
    failed_files = {r["result_file"]: r["status"] for r in summary["not_successful"]}
    assert failed_files["boft--broken--lr0.001--seed0.json"] == "failed"
    assert failed_files["loha--spiky--lr0.00316--seed0.json"] == "diverged"
    assert failed_files["ia3--default--lr0.0316--seed0.json"] == "missing"
    assert "RuntimeError: forced failure" in json.dumps(summary["experiments"]["boft/broken"]["trials"])


def test_ctrl_c_stops_running_children_keeps_finished_results_and_resumes(tmp_path, two_methods):
    results = tmp_path / "results"
    plan = SweepPlan("math-tiny", two_methods, results, lr_trials=3, seeds=1)
    calls = []

    def ctrl_c_during_third(trial):
        calls.append(trial.result_stem)
        if len(calls) < 3:
            return standin_execute(trial)
        # a trial that would run for a long time, and a Ctrl-C that reaches only the sweep's own process
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        try:
            os.kill(os.getpid(), signal.SIGINT)
            child.wait()
        finally:
            child.kill()  # the stand-in's child, not a peftbench one: nothing else stops it
        return TrialOutcome(trial.result_stem, "cancelled", None, "interrupted")

    # Python's own Ctrl-C handler, also where this process started with SIGINT ignored (a shell's `&`, nohup)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_sweep(plan, workers=1, execute=ctrl_c_during_third, show_progress=False)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert len(calls) == 3  # nothing started after the interrupt; the running child was stopped
    finished = sorted(p.name for p in results.glob("*.json"))
    assert len(finished) == 2 and SUMMARY_FILE not in finished
    assert not list(results.glob("*.tmp-*"))
    before = {name: (results / name).read_text() for name in finished}

    resumed = run_sweep(plan, execute=standin_execute, show_progress=False)
    assert resumed.skipped == 2 and len(resumed.ran) == 8 - 2
    assert {name: (results / name).read_text() for name in finished} == before
    assert resumed.summary.complete


def test_plan_rejects_bad_settings(tmp_path, two_methods):
    with pytest.raises(ConfigError, match="--seeds"):
        SweepPlan("math-tiny", two_methods, tmp_path, seeds=0)
    with pytest.raises(ConfigError, match="--reference 'vera' is not in this sweep; valid: lora/r4, ia3/default"):
        SweepPlan("math-tiny", two_methods, tmp_path, reference="vera")
    with pytest.raises(ConfigError, match="optimizer_kwargs.lr"):
        SweepPlan("math-tiny", two_methods, tmp_path, overrides={"optimizer_kwargs": {"lr": 1.0}})
    assert SweepPlan("math-tiny", two_methods, tmp_path, reference="ia3").reference_experiment().key == "ia3/default"


def test_an_explicit_thread_count_wins_over_the_fair_split(tmp_path, two_methods):
    plan = SweepPlan("math-tiny", two_methods, tmp_path / "r", lrs=[1e-3], seeds=1, overrides={"num_threads": 3})
    run_sweep(plan, workers=2, execute=standin_execute, show_progress=False)
    assert read(tmp_path / "r" / "lora--r4--lr0.001--seed1.json")["peftbench"]["num_threads"] == 3


def test_threads_are_split_fairly_between_workers(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads_per_worker(1, cores=16) == 16
    assert threads_per_worker(2, cores=16) == 8
    assert threads_per_worker(3, cores=2) == 1
    with pytest.raises(ValueError):
        threads_per_worker(0, cores=2)


def test_a_batch_smaller_than_the_workers_shares_all_cores_and_every_trial_of_a_batch_gets_the_same(tmp_path,
                                                                                                   monkeypatch):
    """A sweep's seed phase of one run on two workers trains it on both cores, not on one with the other idle;
    the search phase's trials all get one share each."""
    from peftbench.runners import local_backend

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    seen = []

    def record(trial):
        seen.append(trial.num_threads)
        return TrialOutcome(trial.result_stem, "success", None, "")

    def batch(n):
        seen.clear()
        trials = [RunRequest(task="math-tiny", results_dir=str(tmp_path), experiment_dir=str(tmp_path / f"e{i}"))
                  for i in range(n)]
        local_backend.run_local_pool(trials, workers=2, execute=record, on_done=lambda outcome: None, cores=4)
        return sorted(seen)

    assert batch(1) == [4]
    assert batch(2) == [2, 2]
    assert batch(5) == [2] * 5


@pytest.mark.parametrize("setting, threads", [("1", 1), ("4", 4), ("12", 8), ("2,1", 2), ("", 8), ("0", 8), ("x", 8)])
def test_a_thread_limit_the_user_set_is_kept(monkeypatch, setting, threads):
    """OMP_NUM_THREADS is torch's own thread limit; the share given to each trial must not lift it."""
    monkeypatch.setenv("OMP_NUM_THREADS", setting)
    assert threads_per_worker(2, cores=16) == threads



def test_execute_trial_hands_the_request_to_the_engines_runner(tmp_path, two_methods, monkeypatch):
    calls = []

    def fake_run_request(request):
        calls.append(request)
        return request.result_file(), "diverged", False

    monkeypatch.setattr("peftbench.runners.isolated.run_request", fake_run_request)
    plan = SweepPlan("math-tiny", two_methods, tmp_path, lr_trials=1, seeds=1)
    trial = replace(plan.search_trials()[0], num_threads=3)
    outcome = execute_trial(trial)
    assert outcome.status == "diverged" and outcome.result_path.endswith("lora--r4--lr0.001--seed0.json")
    assert not outcome.skipped and outcome.result_stem == "lora--r4--lr0.001--seed0"
    (request,) = calls
    assert request.experiment_dir == str(two_methods[0].path) and request.task == "math-tiny"
    assert request.results_dir == str(tmp_path.resolve())
    assert request.overrides == {"optimizer_kwargs": {"lr": 1e-3}}
    assert request.seed == 0 and request.num_threads == 3 and request.show_progress is False
    assert request.result_fields()["sweep"] == {"sweep_id": plan.sweep_id, "role": "trial", "lr": 1e-3, "seed": 0,
                                                "default_lr": 1e-3, "lr_factor": 1.0}


def test_a_request_crosses_to_the_child_as_json_and_back_unchanged(tmp_path, two_methods):
    plan = SweepPlan("math-tiny", two_methods, tmp_path, lr_trials=1, seeds=1)
    request = plan.search_trials()[0]
    assert RunRequest.from_dict(json.loads(json.dumps(request.to_dict()))) == request


def test_seed_runs_that_would_all_be_one_run_are_refused_naming_the_fix(experiments_copy, math_fixture_params,
                                                                          tmp_path):
    """Under `math`'s default batch_order 'peft' the seed changes nothing (test_math_faithful: the suite's fixed
    order and re-seeding): three seed runs would cost three runs and report a spread of 0 as an error bar."""
    from peftbench.sweep.plan import resolve_experiments

    folder = experiments_copy / "lora" / "llama-3.2-3B-rank32"
    fixed = resolve_experiments([folder], "math", math_fixture_params)
    assert "batch_order 'peft'" in fixed[0].seed_fixed_by
    with pytest.raises(ConfigError, match=r"--seeds 3: the seed changes nothing in a run of .*llama-3.2-3B-rank32 "
                                          r"under batch_order 'peft'.*--set batch_order=shuffled.*use --seeds 1"):
        SweepPlan("math", fixed, tmp_path, lr_trials=2, seeds=3)
    assert SweepPlan("math", fixed, tmp_path, lr_trials=2, seeds=1).seeds == 1
    shuffled = resolve_experiments([folder], "math", {**math_fixture_params, "batch_order": "shuffled"})
    assert shuffled[0].seed_fixed_by is None
    assert SweepPlan("math", shuffled, tmp_path, lr_trials=2, seeds=3).seeds == 3


def test_experiments_without_validation_rows_are_rejected_naming_the_fix():
    """A sweep chooses rates on validation: the quick suite's folders (valid_size 0, test scores only) would
    otherwise run every trial and then choose nothing."""
    from importlib.resources import files

    from peftbench.sweep.plan import resolve_experiments

    folder = Path(str(files("peftbench") / "suites" / "quick" / "lora" / "rank16"))
    with pytest.raises(ConfigError, match=r"valid_size is 0 for .*rank16.*--set valid_size=100"):
        resolve_experiments([folder], "math-tiny", {})
    assert resolve_experiments([folder], "math-tiny", {"valid_size": 20})[0].key == "lora/rank16"
    # validation rows that are never used, because training ends before the first validation, are no better
    with pytest.raises(ConfigError, match=r"eval_steps \(128\) is larger than max_steps \(20\).*--set eval_steps=20"):
        resolve_experiments([folder], "math-tiny", {"valid_size": 20, "max_steps": 20})
    assert resolve_experiments([folder], "math-tiny", {"valid_size": 20, "max_steps": 20, "eval_steps": 20})
