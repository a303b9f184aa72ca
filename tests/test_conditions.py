"""Experimental conditions (precision, hardware, loss_on, batch_order, cpu_matmul): read from result files, and the warning
`report` and `recommend` give when compared results differ in one."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from peftbench.analysis.conditions import CONDITIONS, PUBLISHED_HARDWARE, condition_warnings
from peftbench.analysis.points import build_points
from peftbench.cli import app
from peftbench.analysis.runs import load_results

RESULTS = Path(__file__).parent / "fixtures" / "results"
runner = CliRunner()


def conditions_of(folder: Path) -> dict[str, dict[str, str]]:
    return {run.result.experiment_name: {k: read(run) for k, read in CONDITIONS.items()} for run in load_results([folder]).runs}


def test_conditions_read_from_peftbench_and_published_results():
    mixed = conditions_of(RESULTS / "conditions" / "precision")
    assert mixed["lora/rank8"]["precision"] == "fp32" and mixed["oft/rank8"]["precision"] == "bf16-autocast"
    assert mixed["lora/rank8"]["hardware"] == "CPU AMD EPYC 7B12 (avx2 torch AVX2)"
    # absent keys: a peftbench result trained on the completion with shuffled batches ...
    assert mixed["lora/rank8"]["loss_on"] == "completion" and mixed["lora/rank8"]["batch_order"] == "shuffled"
    # ... a published PEFT result on the whole sequence in PEFT's order, in its train_config's dtype
    published = conditions_of(RESULTS / "published")
    assert {c["loss_on"] for c in published.values()} == {"sequence"}
    assert {c["batch_order"] for c in published.values()} == {"peft"}
    assert {c["precision"] for c in published.values()} == {"bf16"}
    assert {c["hardware"] for c in published.values()} == {PUBLISHED_HARDWARE}


def test_same_conditions_give_no_warning():
    for folder in ("published", "peftbench"):
        points, _ = build_points(load_results([RESULTS / folder]).runs)
        assert condition_warnings(points) == []


def test_report_warns_when_fp32_and_bf16_are_compared_naming_the_runs():
    result = runner.invoke(app, ["report", str(RESULTS / "conditions" / "precision"), "--json"])
    assert result.exit_code == 0, result.output
    warnings = [w for w in json.loads(result.stdout)["warnings"] if "not fair" in w]
    precision = next(w for w in warnings if "differ in precision" in w)
    assert "'fp32' in lora/rank8" in precision and "'bf16-autocast' in oft/rank8" in precision
    assert any("differ in hardware" in w and "AMD EPYC 7B12" in w and "AMD EPYC 9B14" in w for w in warnings)
    assert not any("loss_on" in w or "batch_order" in w for w in warnings)
    terminal = runner.invoke(app, ["report", str(RESULTS / "conditions" / "precision")], env={"COLUMNS": "300"})
    assert "warning: task math-tiny: results differ in precision" in terminal.stdout


def test_report_and_recommend_warn_on_mixed_loss_on():
    result = runner.invoke(app, ["report", str(RESULTS / "conditions" / "loss_on"), "--json"])
    warnings = [w for w in json.loads(result.stdout)["warnings"] if "not fair" in w]
    assert len(warnings) == 1 and "differ in loss_on" in warnings[0]
    assert "'sequence' in lora/rank8" in warnings[0] and "'completion' in oft/rank8" in warnings[0]
    recommended = runner.invoke(app, ["recommend", str(RESULTS / "conditions" / "loss_on"), "--json"])
    assert recommended.exit_code == 0, recommended.output
    assert any("differ in loss_on" in w for w in json.loads(recommended.stdout)["condition_warnings"])
    plain = runner.invoke(app, ["recommend", str(RESULTS / "conditions" / "loss_on")], env={"COLUMNS": "300"})
    assert "warning: task math-tiny: results differ in loss_on" in plain.stdout


def test_report_warns_when_the_fp32_kernels_differ():
    result = runner.invoke(app, ["report", str(RESULTS / "conditions" / "cpu_matmul"), "--json"])
    assert result.exit_code == 0, result.output
    warnings = [w for w in json.loads(result.stdout)["warnings"] if "not fair" in w]
    assert len(warnings) == 1 and "differ in cpu_matmul" in warnings[0]
    assert "'onednn' in lora/rank8" in warnings[0] and "'torch' in oft/rank8" in warnings[0]
