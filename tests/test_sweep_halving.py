"""Successive halving of a sweep's search: Optuna's rule across child processes, pruned results, resume, summary.

The sweep-level tests use the stand-in engine (tests/sweep_standin.py): real child processes that report a known
validation curve to the real rule (peftbench.training.pruning) at every validation, so which trial is pruned at
which rung is known in advance. One worker: the rule is asynchronous, and one worker fixes the order.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peftbench.config import ConfigError
from peftbench.sweep.halving import Halving, prepare_studies, start_order
from peftbench.sweep.plan import SweepPlan
from peftbench.sweep.run import run_sweep
from peftbench.training.pruning import rung_check
from sweep_standin import standin_execute, standin_experiment
from sweep_standin import two_methods as standin_two_methods

MAX_STEPS, EVAL_STEPS = 8, 2


@pytest.fixture
def two_methods(tmp_path):
    return standin_two_methods(tmp_path / "exp")


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def halving_plan(results: Path, experiments, **settings) -> SweepPlan:
    """A halving plan deciding on the validation score, unless `signal` says otherwise."""
    return SweepPlan("math-tiny", experiments, results, lr_trials=3, seeds=1,
                     halving=Halving(**{"signal": "score", **settings}))


def test_rule_prunes_a_trial_worse_than_those_before_it_at_a_rung_and_never_at_the_last_step(tmp_path, two_methods):
    plan = halving_plan(tmp_path, two_methods[:1])
    prepare_studies(plan, higher_is_better=True, fresh=True)
    rules = {t.sweep.lr: t.sweep.halving for t in plan.search_trials()}
    first, second, third = (rung_check(rules[lr], MAX_STEPS) for lr in start_order(plan.grid(two_methods[0]), 1e-3))
    assert [first(step, "score", 0.1) for step in (2, 4, 6, 8)] == [False] * 4  # alone at every rung: goes on
    assert second(2, "score", 0.05) is True  # below the only other score at rung 2 (reduction factor 2: the top half of 2)
    assert third(2, "score", 0.1) is False  # a tie goes on
    assert third(4, "score", 0.1) is False and third(6, "score", 0.0) is False  # 6 is no rung (2, 4, 8, ...)
    assert third(8, "score", 0.0) is False  # the last step is never a rung: the trial has finished


def test_a_lower_is_better_score_prunes_the_higher_one(tmp_path, two_methods):
    plan = halving_plan(tmp_path, two_methods[:1])
    prepare_studies(plan, higher_is_better=False, fresh=True)
    first, second, third = (rung_check(t.sweep.halving, MAX_STEPS) for t in plan.search_trials())
    assert first(2, "score", 0.5) is False
    assert second(2, "score", 0.7) is True and third(2, "score", 0.3) is False


def test_rungs_are_validation_steps_and_bad_settings_are_refused_before_anything_runs(tmp_path, two_methods):
    plan = halving_plan(tmp_path, two_methods)
    assert plan.halving == Halving(min_steps=EVAL_STEPS, reduction_factor=2, signal="score")  # the validation interval
    assert plan.halving.rungs(MAX_STEPS) == [2, 4]
    assert halving_plan(tmp_path, two_methods, min_steps=4, reduction_factor=3).halving.rungs(MAX_STEPS) == [4]
    with pytest.raises(ConfigError, match="not a multiple of eval_steps"):
        halving_plan(tmp_path, two_methods, min_steps=3)
    with pytest.raises(ConfigError, match="nothing could be pruned.*--set eval_steps=2"):
        halving_plan(tmp_path, two_methods, min_steps=8)
    with pytest.raises(ConfigError, match="reduction-factor must be >= 2"):
        halving_plan(tmp_path, two_methods, reduction_factor=1)
    mixed = [two_methods[0], standin_experiment(two_methods[1].path, 1e-2, eval_steps=4)]
    with pytest.raises(ConfigError, match="different intervals"):
        halving_plan(tmp_path, mixed)
    # a halving search is a sweep of its own: its id is not the grid's
    assert plan.sweep_id != SweepPlan("math-tiny", two_methods, tmp_path, lr_trials=3, seeds=1).sweep_id


def test_the_loss_signal_measures_the_loss_at_early_rungs_that_need_no_validation_step(tmp_path, two_methods):
    plan = SweepPlan("math-tiny", two_methods, tmp_path, lr_trials=3, seeds=1, halving=Halving())
    assert plan.halving == Halving(min_steps=MAX_STEPS // 2**3, reduction_factor=2, signal="loss")
    assert plan.halving.rungs(MAX_STEPS) == [1, 2, 4]
    # every search trial measures the loss at every rung; seed runs and a full grid's trials do not
    assert {t.overrides.get("valid_loss_steps") for t in plan.search_trials()} == {1}
    assert "valid_loss_steps" not in plan.seed_trials({e.key: e.default_lr for e in two_methods})[0].overrides
    assert not any("valid_loss_steps" in t.overrides for t in SweepPlan(
        "math-tiny", two_methods, tmp_path, lr_trials=3, seeds=1).search_trials())
    # a lower loss goes on
    prepare_studies(plan, higher_is_better=True, fresh=True)
    first, second, third = (rung_check(t.sweep.halving, MAX_STEPS) for t in plan.search_trials()[::2])
    assert first(1, "score", 0.0) is False  # not its signal: no decision
    assert first(1, "loss", 2.0) is False and second(1, "loss", 2.5) is True and third(1, "loss", 1.5) is False
    with pytest.raises(ConfigError, match="task image-tiny has no validation loss.*--halving-signal score"):
        SweepPlan("image-tiny", two_methods, tmp_path, lr_trials=3, seeds=1, halving=Halving())
    with pytest.raises(ConfigError, match="--halving-signal 'accuracy'; valid: loss, score, score-then-loss"):
        halving_plan(tmp_path, two_methods, signal="accuracy")


def test_score_then_loss_orders_equal_scores_by_the_loss_measured_at_the_same_rung(tmp_path, two_methods):
    plan = halving_plan(tmp_path, two_methods[:1], signal="score-then-loss")
    assert plan.halving == Halving(min_steps=EVAL_STEPS, reduction_factor=2, signal="score-then-loss")
    # the loss is measured at every rung (a validation step: the score is too)
    assert {t.overrides.get("valid_loss_steps") for t in plan.search_trials()} == {EVAL_STEPS}
    prepare_studies(plan, higher_is_better=True, fresh=True)
    first, second, third = (rung_check(t.sweep.halving, MAX_STEPS) for t in plan.search_trials())
    assert first(2, "loss", 2.0) is False and first(2, "score", 0.0) is False
    # the same score, a higher loss: stopped; with the score alone it would have gone on (a tie)
    assert second(2, "loss", 2.5) is False and second(2, "score", 0.0) is True
    # a lower loss does not outweigh a worse score: scores decide, the loss only orders equal ones
    assert third(2, "loss", 0.1) is False and third(2, "score", -0.01) is True
    with pytest.raises(ConfigError, match="score-then-loss: task image-tiny has no validation loss"):
        SweepPlan("image-tiny", two_methods, tmp_path, lr_trials=3, seeds=1, halving=Halving(signal="score-then-loss"))


def test_score_then_loss_with_a_lower_is_better_score_still_prefers_the_lower_loss(tmp_path, two_methods):
    plan = halving_plan(tmp_path, two_methods[:1], signal="score-then-loss")
    prepare_studies(plan, higher_is_better=False, fresh=True)
    first, second, third = (rung_check(t.sweep.halving, MAX_STEPS) for t in plan.search_trials())
    assert first(2, "loss", 2.0) is False and first(2, "score", 0.5) is False
    assert second(2, "loss", 2.5) is False and second(2, "score", 0.5) is True
    assert third(2, "loss", 1.5) is False and third(2, "score", 0.5) is False


def test_trials_start_with_each_configured_rate_and_the_experiments_take_turns(tmp_path, two_methods):
    plan = halving_plan(tmp_path, two_methods)
    order = [(t.result_stem.split("--")[0], t.sweep.lr, t.sweep.halving["trial"]) for t in plan.search_trials()]
    assert order == [("lora", 1e-3, 0), ("ia3", 1e-2, 0), ("lora", 3.16e-4, 1), ("ia3", 3.16e-3, 1),
                     ("lora", 3.16e-3, 2), ("ia3", 3.16e-2, 2)]


def test_halving_sweep_prunes_the_known_trials_chooses_as_the_grid_and_records_its_rule(tmp_path, two_methods):
    results = tmp_path / "results"
    run = run_sweep(halving_plan(results, two_methods), execute=standin_execute, show_progress=False)
    summary = read(results / "sweep-summary.json")
    lora, ia3 = summary["experiments"]["lora/r4"], summary["experiments"]["ia3/default"]

    # lora's configured rate leads at the first rung: both others stop there; ia3's better rate goes on to the end
    pruned = {(key, t["lr"]): t["steps"] for key, e in summary["experiments"].items()
              for t in e["trials"] if t["status"] == "pruned"}
    assert pruned == {("lora/r4", 3.16e-4): 2, ("lora/r4", 3.16e-3): 2, ("ia3/default", 3.16e-3): 2}
    trial = read(results / "lora--r4--lr0.000316--seed0.json")["peftbench"]
    assert trial["status"] == "pruned" and trial["steps"] == 2
    assert trial["valid_score"] == pytest.approx(0.75 * 2 / MAX_STEPS, abs=1e-4)  # its last validation score
    assert "test_score" not in trial or trial["test_score"] is None
    assert trial["sweep"]["halving"]["min_steps"] == 2 and trial["sweep"]["halving"]["reduction_factor"] == 2

    grid = run_sweep(SweepPlan("math-tiny", two_methods, tmp_path / "grid", lr_trials=3, seeds=1),
                     execute=standin_execute, show_progress=False).summary.to_dict()
    assert [e["chosen_lr"] for e in summary["experiments"].values()] == \
           [e["chosen_lr"] for e in grid["experiments"].values()] == [1e-3, 3.16e-2]
    assert lora["search_steps"] == {"used": 8 + 2 + 2, "full_grid": 3 * MAX_STEPS, "fraction": 0.5}
    assert ia3["search_steps"]["used"] == 8 + 2 + 8
    assert grid["experiments"]["lora/r4"]["search_steps"]["fraction"] == 1.0

    halving = summary["halving"]
    assert halving["scheduler"] == "optuna.pruners.SuccessiveHalvingPruner"
    assert (halving["min_steps"], halving["reduction_factor"]) == (2, 2)
    assert halving["rungs"] == {"lora/r4": [2, 4], "ia3/default": [2, 4]}
    assert halving["decided_on"] == "validation accuracy"
    assert grid["halving"] is None
    # pruning is the rule working, not a failure
    assert summary["complete"] and not summary["not_successful"]
    assert len(run.ran) == 6 + 2


def test_resuming_a_halving_sweep_runs_nothing_that_finished_or_was_pruned(tmp_path, two_methods):
    results = tmp_path / "results"
    plan = halving_plan(results, two_methods)
    run_sweep(plan, execute=standin_execute, show_progress=False)
    again = run_sweep(plan, execute=standin_execute, show_progress=False)
    assert again.ran == [] and again.skipped == 8

    # a trial that failed is run again, in its own Optuna trial: the rule still sees the first attempt's rungs
    failed = results / "ia3--default--lr0.0316--seed0.json"
    data = read(failed)
    data["peftbench"]["status"] = data["train_info"]["status"] = "failed"
    failed.write_text(json.dumps(data))
    resumed = run_sweep(plan, execute=standin_execute, show_progress=False)
    assert [o.result_stem for o in resumed.ran] == ["ia3--default--lr0.0316--seed0"]
    assert read(failed)["peftbench"]["status"] == "success"
    assert resumed.summary.experiments["ia3/default"].chosen_lr == 3.16e-2


def test_a_full_grid_in_the_same_folder_runs_the_pruned_trials_to_their_end(tmp_path, two_methods):
    results = tmp_path / "results"
    run_sweep(halving_plan(results, two_methods), execute=standin_execute, show_progress=False)
    grid = run_sweep(SweepPlan("math-tiny", two_methods, results, lr_trials=3, seeds=1), execute=standin_execute,
                     show_progress=False)
    assert sorted(o.result_stem for o in grid.ran) == [
        "ia3--default--lr0.00316--seed0", "lora--r4--lr0.000316--seed0", "lora--r4--lr0.00316--seed0"]
    assert all(t.status == "success" for e in grid.summary.experiments.values() for t in e.trials)


def test_forcing_a_halving_sweep_starts_a_fresh_journal(tmp_path, two_methods):
    results = tmp_path / "results"
    plan = halving_plan(results, two_methods)
    run_sweep(plan, execute=standin_execute, show_progress=False)
    forced = run_sweep(plan, execute=standin_execute, show_progress=False, force=True)
    # the same decisions again: the earlier attempt's reports did not count twice
    assert sorted(o.result_stem for o in forced.ran if o.status == "pruned") == [
        "ia3--default--lr0.00316--seed0", "lora--r4--lr0.000316--seed0", "lora--r4--lr0.00316--seed0"]


def test_the_training_loop_stops_a_trial_at_its_rung_and_its_result_says_pruned(experiments_copy, math_fixture_params,
                                                                                 tmp_path):
    """The real engine and loop (tiny model, `math` on fixture files): another trial of the study reached rung 2
    with the best possible score, so this one, scoring less there, stops at step 2 of 4."""
    from peftbench.run.engine import execute

    folder = experiments_copy / "lora" / "llama-3.2-3B-rank32"
    experiment = standin_experiment(folder, 1e-3, max_steps=math_fixture_params["max_steps"],
                                    eval_steps=math_fixture_params["eval_steps"])
    assert (experiment.max_steps, experiment.eval_steps) == (4, 2)
    plan = SweepPlan("math", [experiment], tmp_path, lr_trials=2, seeds=1, overrides=math_fixture_params,
                     halving=Halving(signal="score"))
    prepare_studies(plan, higher_is_better=True, fresh=True)
    leader, trial = plan.search_trials()
    assert rung_check(leader.sweep.halving, 4)(2, "score", 1.0) is False

    path, status = execute(trial)
    result = read(path)
    own = result["peftbench"]
    assert status == "pruned" == own["status"] == result["train_info"]["status"]
    assert own["steps"] == 2 and own["error_msg"].startswith("pruned at step 2 with valid accuracy")
    assert own["valid_curve"] == [{"step": 2, "score": own["valid_score"]}] and own["valid_score"] < 1.0
    assert own["test_score"] is None and own["checkpoint_dir"] is None  # no test, no adapter kept
    assert [entry["step"] for entry in result["train_info"]["metrics"]] == [2]


def test_the_loop_prunes_on_the_validation_loss_without_changing_what_it_trains(experiments_copy, math_fixture_params,
                                                                               tmp_path):
    """The real engine: a loss-signal trial measures the validation loss at its rung (step 2 of 4) and stops
    there, another trial having reached the rung with a loss of 0; its training up to there is step for step the
    grid trial's, which measures no validation loss."""
    from peftbench.run.engine import execute

    folder = experiments_copy / "lora" / "llama-3.2-3B-rank32"
    experiment = standin_experiment(folder, 1e-3, max_steps=4, eval_steps=math_fixture_params["eval_steps"])
    plan = SweepPlan("math", [experiment], tmp_path / "halving", lr_trials=2, seeds=1, overrides=math_fixture_params,
                     halving=Halving(min_steps=2, signal="loss"))
    plan.results_dir.mkdir()
    prepare_studies(plan, higher_is_better=True, fresh=True)
    leader, trial = plan.search_trials()
    assert rung_check(leader.sweep.halving, 4)(2, "loss", 0.0) is False

    own = read(execute(trial)[0])["peftbench"]
    assert own["status"] == "pruned" and own["steps"] == 2
    assert own["error_msg"].startswith("pruned at step 2 with valid loss")
    (entry,) = own["valid_loss_curve"]
    assert entry["step"] == 2 and 0 < entry["loss"] < 20

    grid = SweepPlan("math", [experiment], tmp_path / "grid", lr_trials=2, seeds=1, overrides=math_fixture_params)
    same = next(t for t in grid.search_trials() if t.sweep.lr == trial.sweep.lr)
    full = read(execute(same)[0])["peftbench"]
    assert full["status"] == "success" and full["valid_loss_curve"] == []
    assert [p["loss"] for p in own["train_curve"]] == [p["loss"] for p in full["train_curve"][:2]]


def test_the_loop_gives_score_then_loss_the_loss_before_the_score_of_a_rung(experiments_copy, math_fixture_params,
                                                                          tmp_path):
    """The real engine: another trial reached rung 2 with the same validation score as this one (the grid's trial
    at this rate tells which) and a loss of 0; this trial measures its loss at the rung before its score, so the
    tie goes against it and it stops there. With the score alone it would go on."""
    from peftbench.run.engine import execute

    folder = experiments_copy / "lora" / "llama-3.2-3B-rank32"
    experiment = standin_experiment(folder, 1e-3, max_steps=4, eval_steps=math_fixture_params["eval_steps"])
    grid = SweepPlan("math", [experiment], tmp_path / "grid", lr_trials=2, seeds=1, overrides=math_fixture_params)
    plan = SweepPlan("math", [experiment], tmp_path / "halving", lr_trials=2, seeds=1, overrides=math_fixture_params,
                     halving=Halving(signal="score-then-loss"))
    plan.results_dir.mkdir()
    prepare_studies(plan, higher_is_better=True, fresh=True)
    leader, trial = plan.search_trials()
    same = next(t for t in grid.search_trials() if t.sweep.lr == trial.sweep.lr)
    score_at_rung = read(execute(same)[0])["peftbench"]["valid_curve"][0]
    assert score_at_rung["step"] == 2
    check = rung_check(leader.sweep.halving, 4)
    assert check(2, "loss", 0.0) is False and check(2, "score", score_at_rung["score"]) is False

    own = read(execute(trial)[0])["peftbench"]
    assert own["status"] == "pruned" and own["steps"] == 2 and own["valid_score"] == score_at_rung["score"]
    assert [p["step"] for p in own["valid_loss_curve"]] == [2] and own["valid_loss_curve"][0]["loss"] > 0


def test_a_run_asking_for_a_validation_loss_its_task_lacks_is_refused_before_any_model_loads(tmp_path):
    from peftbench.run.plan import plan_run
    from peftbench.run.request import RunRequest

    folder = Path(__file__).resolve().parents[1] / "src" / "peftbench" / "suites" / "quick-image" / "lora"
    experiment = next(p for p in folder.iterdir() if p.is_dir())
    request = RunRequest(task="image-tiny", results_dir=str(tmp_path), experiment_dir=str(experiment),
                         overrides={"valid_loss_steps": 10})
    with pytest.raises(ConfigError, match="valid_loss_steps: task image-tiny has no validation loss"):
        plan_run(request)
