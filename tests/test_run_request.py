"""The run description every command builds: its result name, its JSON round trip; the plan the parent makes of
it, which the child rebuilds from JSON without deciding anything again; deciding a run's precision leaves the
requests of a batch (which share their overrides) as they were."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from peftbench.run.plan import RunPlan, decide_hardware, plan_run
from peftbench.run.request import RunRequest, SweepRole, result_stem, split_result_stem

QUICK = Path(__file__).resolve().parents[1] / "src" / "peftbench" / "suites" / "quick"


def test_the_result_name_says_method_name_rate_and_seed_when_they_were_chosen(tmp_path):
    lora = str(QUICK / "lora" / "rank16")
    assert RunRequest(task="math-tiny", results_dir=str(tmp_path), experiment_dir=lora).result_stem == "lora--rank16"
    seeded = RunRequest(task="math-tiny", results_dir=str(tmp_path), experiment_dir=lora, seed=2)
    assert seeded.result_stem == "lora--rank16--seed2" and seeded.result_file() == tmp_path / "lora--rank16--seed2.json"
    trial = RunRequest(task="math-tiny", results_dir=str(tmp_path), experiment_dir=lora, seed=0,
                       sweep=SweepRole("abc", "trial", 3.16e-05, 0, 1e-4))
    assert trial.result_stem == "lora--rank16--lr3.16e-05--seed0" == trial.result_stem
    converted = RunRequest(task="math-tiny", results_dir=str(tmp_path), mode="evaluate", adapter_dir=str(tmp_path / "x"),
                           method="lora-as-lora", name="rank16-r8")
    assert converted.result_stem == "lora-as-lora--rank16-r8" == result_stem("lora-as-lora", "rank16-r8")
    assert split_result_stem("lora--rank16") == ("lora", "rank16") and split_result_stem("plain") is None


def test_a_request_survives_json(tmp_path):
    request = RunRequest(task="math-tiny", results_dir=str(tmp_path), experiment_dir=str(QUICK / "lora" / "rank16"),
                         overrides={"max_steps": 2}, seed=1, sweep=SweepRole("abc", "seed", 1e-3, 1, 1e-3),
                         conversion={"rank": 8})
    assert RunRequest.from_dict(json.loads(json.dumps(request.to_dict()))) == request
    assert request.result_fields() == {"sweep": {"sweep_id": "abc", "role": "seed", "lr": 1e-3, "seed": 1,
                                                 "default_lr": 1e-3, "lr_factor": 1.0}, "conversion": {"rank": 8}}


def test_deciding_precision_leaves_the_shared_overrides_of_a_batch_alone(tmp_path):
    shared = {"max_steps": 1}
    first, second = (RunRequest(task="math-tiny", results_dir=str(tmp_path), experiment_dir=str(QUICK / folder),
                                overrides=shared) for folder in ("lora/rank16", "ia3/default"))
    planned = plan_run(first)
    decided = decide_hardware(planned)
    assert isinstance(decided.config.use_amp, bool) and decided.hardware["use_amp_setting"] == "auto"
    assert planned.config.use_amp == "auto" and planned.hardware is None  # the plan it was made from is unchanged
    assert shared == {"max_steps": 1} and first.overrides == {"max_steps": 1}
    # the next run of the batch still sees the configured setting, and records it
    assert decide_hardware(plan_run(second)).hardware["use_amp_setting"] == "auto"


def test_the_child_runs_the_plan_it_is_sent_without_planning_again(tmp_path):
    folder = tmp_path / "lora" / "rank16"
    shutil.copytree(QUICK / "lora" / "rank16", folder)
    request = RunRequest(task="math-tiny", results_dir=str(tmp_path / "results"), experiment_dir=str(folder),
                         overrides={"optimizer_kwargs": {"lr": 3e-4}}, seed=2)
    plan = decide_hardware(plan_run(request))
    sent = json.loads(json.dumps(plan.to_dict()))  # what the parent writes to the child's stdin
    # the folder changes after the parent planned: the child runs what was planned, not the folder's new state
    (folder / "training_params.json").write_text(json.dumps({"max_steps": 7, "optimizer_kwargs": {"lr": 1.0}}))
    received = RunPlan.from_dict(sent)
    assert received.config == plan.config and received.config.optimizer_kwargs["lr"] == 3e-4
    assert received.config.max_steps == plan.config.max_steps != 7
    assert (received.result_file, received.spec, received.hardware, received.experiment_name) == (
        plan.result_file, plan.spec, plan.hardware, "lora/rank16")
    assert received.task.name == "math-tiny" and received.request == plan.request
