"""The Ray backend: a local Ray instance on this machine runs a small sweep, failures included.

One Ray instance for the module (starting Ray costs seconds on a small machine). Trials use the
stand-in engine (tests/sweep_standin.py); the tests folder is not importable on Ray workers, so
the stand-in's functions travel by value.
"""

from __future__ import annotations

import json
import sys

import pytest

from peftbench.runners.batch import TrialOutcome, run_trials
from peftbench.run.request import RunRequest
from peftbench.sweep.plan import SweepPlan
from peftbench.sweep.run import run_sweep
import sweep_standin
from peftbench.sweep.halving import Halving
from sweep_standin import make_experiment, standin_execute, standin_experiment, two_methods

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install peftbench[ray])")

RAY_CPUS = 2


@pytest.fixture(scope="module")
def local_ray():
    ray.cloudpickle.register_pickle_by_value(sweep_standin)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=RAY_CPUS, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_sweep_through_ray_matches_the_local_pool(local_ray, tmp_path):
    lora = make_experiment(tmp_path / "exp", "lora", "r4", best_valid_lr=1e-3, best_test_lr=1e-4)
    broken = make_experiment(tmp_path / "exp", "boft", "broken", best_valid_lr=1e-3, best_test_lr=1e-3, fail=True)
    experiments = [standin_experiment(lora, 1e-3), standin_experiment(broken, 1e-3)]

    through_ray = run_sweep(SweepPlan("math-tiny", experiments, tmp_path / "ray", lrs=[1e-4, 1e-3], seeds=2),
                            backend="ray", workers=2, execute=standin_execute, show_progress=False)
    locally = run_sweep(SweepPlan("math-tiny", experiments, tmp_path / "local", lrs=[1e-4, 1e-3], seeds=2),
                        backend="local", workers=2, execute=standin_execute, show_progress=False)

    # 2 rates x 2 experiments + 2 seeds of lora (the broken one has no rate to run seeds at)
    assert len(through_ray.ran) == 6
    by_id = {o.result_stem: o.status for o in through_ray.ran}
    assert by_id["boft--broken--lr0.001--seed0"] == "failed" and by_id["lora--r4--lr0.001--seed2"] == "success"
    ray_lora, local_lora = (r.summary.to_dict()["experiments"]["lora/r4"] for r in (through_ray, locally))
    assert ray_lora["chosen_lr"] == local_lora["chosen_lr"] == 1e-3
    assert ray_lora["tuned"]["test_scores"] == local_lora["tuned"]["test_scores"]
    assert not through_ray.summary.complete
    # each Ray task asked for the CPUs split between the workers, and the trial trained with that many threads
    trial_file = tmp_path / "ray" / "lora--r4--lr0.001--seed1.json"
    assert json.loads(trial_file.read_text())["peftbench"]["num_threads"] == RAY_CPUS // 2

    resumed = run_sweep(SweepPlan("math-tiny", experiments, tmp_path / "ray", lrs=[1e-4, 1e-3], seeds=2),
                        backend="ray", workers=2, execute=standin_execute, show_progress=False)
    assert sorted(o.result_stem for o in resumed.ran) == ["boft--broken--lr0.0001--seed0", "boft--broken--lr0.001--seed0"]


def raise_in_worker(trial: RunRequest) -> TrialOutcome:
    raise RuntimeError(f"cannot run {trial.result_stem}")


def test_an_executor_error_on_a_ray_worker_fails_that_trial_only(local_ray, tmp_path):
    trials = [RunRequest(task="math-tiny", results_dir=str(tmp_path), experiment_dir=str(tmp_path / "lora" / f"t{i}"))
              for i in range(2)]
    outcomes = run_trials(trials, backend="ray", workers=2, execute=raise_in_worker, show_progress=False)
    assert sorted((o.result_stem, o.status) for o in outcomes) == [("lora--t0", "failed"), ("lora--t1", "failed")]
    assert all("RuntimeError: cannot run" in o.error for o in outcomes)


def test_a_halving_sweep_through_ray_prunes_as_the_local_pool_does(local_ray, tmp_path):
    """Ray tasks' children append to the same journal file as local children: the same rule, the same decisions
    (one worker: the same order)."""
    experiments = two_methods(tmp_path / "exp")
    runs = {backend: run_sweep(SweepPlan("math-tiny", experiments, tmp_path / backend, lr_trials=3, seeds=1,
                                         halving=Halving()),
                               backend=backend, workers=1, execute=standin_execute, show_progress=False)
            for backend in ("ray", "local")}
    pruned = {backend: sorted(o.result_stem for o in run.ran if o.status == "pruned") for backend, run in runs.items()}
    assert pruned["ray"] == pruned["local"] == [
        "ia3--default--lr0.00316--seed0", "lora--r4--lr0.000316--seed0", "lora--r4--lr0.00316--seed0"]
    assert [e.chosen_lr for e in runs["ray"].summary.experiments.values()] == [1e-3, 3.16e-2]

