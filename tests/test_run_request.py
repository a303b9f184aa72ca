"""The run description every command builds: its result name, its JSON round trip, and that resolving a run's
precision leaves the requests of a batch (which share their overrides) as they were."""

from __future__ import annotations

import json
from pathlib import Path

from peftbench.run.engine import prepare, resolve_precision
from peftbench.runners.request import RunRequest, SweepRole, result_stem, split_result_stem

QUICK = Path(__file__).resolve().parents[1] / "src" / "peftbench" / "suites" / "quick"


def test_the_result_name_says_method_name_rate_and_seed_when_they_were_chosen(tmp_path):
    lora = str(QUICK / "lora" / "rank16")
    assert RunRequest(task="math-tiny", results_dir=str(tmp_path), experiment_dir=lora).result_stem == "lora--rank16"
    seeded = RunRequest(task="math-tiny", results_dir=str(tmp_path), experiment_dir=lora, seed=2)
    assert seeded.result_stem == "lora--rank16--seed2" and seeded.result_file() == tmp_path / "lora--rank16--seed2.json"
    trial = RunRequest(task="math-tiny", results_dir=str(tmp_path), experiment_dir=lora, seed=0,
                       sweep=SweepRole("abc", "trial", 3.16e-05, 0, 1e-4))
    assert trial.result_stem == "lora--rank16--lr3.16e-05--seed0" == trial.trial_id
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


def test_resolving_precision_leaves_the_shared_overrides_of_a_batch_alone(tmp_path):
    shared = {"max_steps": 1}
    first, second = (RunRequest(task="math-tiny", results_dir=str(tmp_path), experiment_dir=str(QUICK / folder),
                                overrides=shared) for folder in ("lora/rank16", "ia3/default"))
    resolved = resolve_precision(first, prepare(first).config)
    assert isinstance(resolved.overrides["use_amp"], bool) and resolved.hardware["use_amp_setting"] == "auto"
    assert shared == {"max_steps": 1} and first.overrides == {"max_steps": 1} and first.hardware is None
    # the next run of the batch still sees the configured setting, and records it
    assert resolve_precision(second, prepare(second).config).hardware["use_amp_setting"] == "auto"
