"""lm-evaluation-harness after training (--harness-tasks): offline, with a harness task YAML over a local file.

lm-eval is installed by `make test` (the dev extra); the standard harness tasks' hub datasets are not
reachable here, so the harness task is our own: fruit colours as multiple choice over a local JSONL file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from peftbench.cli import app
from peftbench.config import ConfigError
from peftbench.run.engine import execute
from peftbench.run.plan import plan_run
from peftbench.run.request import RunRequest

FIXTURES = Path(__file__).parent / "fixtures"
QUICK = Path(__file__).resolve().parents[1] / "src" / "peftbench" / "suites" / "quick"
HARNESS_TASK = """task: fruit_harness
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: What colour is {{{{item}}}}?\\nAnswer:"
doc_to_target: "{{{{label}}}}"
doc_to_choice: "{{{{options}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


@pytest.fixture()
def harness_dir(tmp_path) -> Path:
    """A folder with one lm-eval task YAML (its data file named by absolute path, as lm-eval reads it)."""
    folder = tmp_path / "harness"
    folder.mkdir()
    shutil.copy(FIXTURES / "custom_task" / "all.jsonl", folder / "fruit.jsonl")
    (folder / "fruit_harness.yaml").write_text(HARNESS_TASK.format(data=folder / "fruit.jsonl"))
    return folder


def test_harness_scores_with_and_without_the_adapter(harness_dir, tmp_path):
    results = tmp_path / "results"
    request = RunRequest(
        task=str(FIXTURES / "custom_task" / "fruit_colour_mc.yaml"), results_dir=str(results),
        experiment_dir=str(QUICK / "lora" / "rank16"), save_checkpoint=False, show_progress=False,
        harness={"tasks": ["fruit_harness"], "include_path": str(harness_dir), "limit": 8},
    )
    path, status = execute(request)
    own = json.loads(path.read_text())["peftbench"]
    assert status == "success", own["error_msg"]
    harness = own["harness"]
    acc = harness["tasks"]["fruit_harness"]["acc"]
    assert 0 <= acc["after"] <= 1 and 0 <= acc["before"] <= 1
    assert acc["difference"] == pytest.approx(acc["after"] - acc["before"])
    assert harness["mean_difference"] == pytest.approx(acc["difference"]) and harness["limit"] == 8
    # 8 items: every score is a multiple of 1/8
    assert (acc["after"] * 8) == pytest.approx(round(acc["after"] * 8))

    report = CliRunner().invoke(app, ["report", str(results), "--json", "--metrics", "test_score,harness_change"])
    assert report.exit_code == 0, report.output
    (point,) = json.loads(report.output)["points"]
    assert point["metrics"]["harness_change"] == pytest.approx(acc["difference"])


def test_unknown_harness_task_fails_before_anything_loads(harness_dir, tmp_path):
    request = RunRequest(
        task=str(FIXTURES / "custom_task" / "fruit_colour_mc.yaml"), results_dir=str(tmp_path),
        experiment_dir=str(QUICK / "lora" / "rank16"), harness={"tasks": ["no_such_task"], "include_path": str(harness_dir)},
    )
    with pytest.raises(ConfigError, match="no_such_task"):
        plan_run(request)


def test_harness_options_need_tasks(tmp_path):
    outcome = CliRunner().invoke(app, ["run", str(QUICK / "lora" / "rank16"), "--harness-limit", "3",
                                       "--results", str(tmp_path)])
    assert outcome.exit_code == 2 and "--harness-tasks" in outcome.output


def test_a_failing_harness_keeps_the_finished_run(tmp_path, monkeypatch):
    from peftbench.evaluation import harness

    def broken(*args, **kwargs):
        raise RuntimeError("dataset unreachable")

    monkeypatch.setattr(harness, "check_harness", lambda tasks, include_path: None)
    monkeypatch.setattr(harness, "measure_harness", broken)
    request = RunRequest(
        task=str(FIXTURES / "custom_task" / "fruit_colour_mc.yaml"), results_dir=str(tmp_path),
        experiment_dir=str(QUICK / "lora" / "rank16"), save_checkpoint=False, show_progress=False,
        harness={"tasks": ["hellaswag"]},
    )
    path, status = execute(request)
    own = json.loads(path.read_text())["peftbench"]
    assert status == "success" and own["test_score"] is not None
    assert own["harness"] == {"error": "RuntimeError: dataset unreachable"}
