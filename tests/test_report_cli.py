"""`peftbench report` and `peftbench recommend` as a user runs them; render_report for `peftbench suite`."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from peftbench.cli import app
from peftbench.reporting import render_report
from waiting import SAFETY_NET_S

RESULTS = Path(__file__).parent / "fixtures" / "results"
runner = CliRunner()


def test_report_json_has_frontier_points_and_dominated_by():
    result = runner.invoke(app, ["report", str(RESULTS / "published"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    names = {p["name"] for p in data["points"]}
    assert len(names) == 6 and set(data["frontier"]) <= names
    assert set(data["frontier"]) | set(data["dominated_by"]) == names
    lora = next(p for p in data["points"] if p["name"] == "lora/llama-3.2-3B-rank32")
    assert lora["metrics"]["test_score"] == pytest.approx(0.4783927217589083)
    assert data["dominated_by"]["lora/llama-3.2-3B-rank32"]["by"] in data["frontier"]
    assert "noise is not measured" in data["noise_summary"]


def test_report_multi_metric_frontier_and_pair_choice():
    result = runner.invoke(
        app, ["report", str(RESULTS / "published"), "--json", "--x", "file_size", "--metrics", "test_score,peak_memory,forgetting"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    # published results have no tensor-level peak: their memory axis is the whole run's reserved memory, by name
    assert data["x"] == "file_size" and data["multi"]["metrics"] == ["test_score", "peak_memory_total", "forgetting"]
    # full fine-tuning needs the most memory but forgets less than every method that scores higher
    assert "full-finetuning/llama-3.2-3B-lr_0.00001" in data["multi"]["frontier"]
    assert "full-finetuning/llama-3.2-3B-lr_0.00001" in data["dominated_by"]  # its 6 GB checkpoint loses on file size


def test_report_terminal_tables_warnings_and_markup_safety():
    # wide enough that no name is folded across lines
    result = runner.invoke(app, ["report", str(RESULTS / "hostile"), str(RESULTS / "published")], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.count("warning: ") == 9  # nine unusable or incomplete files, one line each
    assert "Pareto frontier: test score vs peak RSS/reserved (whole run)" in out and "All " in out
    assert "[bold red]x$y$" in out  # rich markup in a name is printed, not interpreted
    assert "GiB" in out


def test_report_filter_and_bad_options_are_clear_errors():
    result = runner.invoke(app, ["report", str(RESULTS / "published"), "--json", "--filter", "peft_type in ['LORA', 'IA3']"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {p["name"] for p in data["points"]} == {"lora/llama-3.2-3B-rank32", "ia3/llama-3.2-3B-default"}
    bad = runner.invoke(app, ["report", str(RESULTS / "published"), "--filter", "__import__('os').system('true')"])
    assert bad.exit_code == 2 and "not allowed" in bad.output
    unknown = runner.invoke(app, ["report", str(RESULTS / "published"), "--y", "accuracy_pct"])
    assert unknown.exit_code == 2 and "valid metrics" in unknown.output


def test_report_png(tmp_path):
    result = runner.invoke(
        app, ["report", str(RESULTS / "peftbench"), str(RESULTS / "hostile"), "--png", str(tmp_path), "--metrics",
              "test_score,peak_memory,forgetting"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["pareto_test_score_vs_forgetting.png", "pareto_test_score_vs_peak_memory.png"]
    assert all((tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for name in written)


def test_recommend_cli():
    result = runner.invoke(app, ["recommend", str(RESULTS / "published"), "--max-memory", "20.5GB"])
    assert result.exit_code == 0, result.output
    assert "Best: shira/llama-3.2-3B-lr_0.0003-random_seed_42" in result.stdout
    assert "Runner-up: miss/llama-3.2-3B-default" in result.stdout
    as_json = runner.invoke(app, ["recommend", str(RESULTS / "peftbench"), "--json", "--max-train-time", "80s"])
    data = json.loads(as_json.stdout)
    assert data["best"] == "lora/rank8 -> LoRA r4" and data["runner_up"] == "lora/rank8"
    bad = runner.invoke(app, ["recommend", str(RESULTS / "published"), "--max-memory", "lots"])
    assert bad.exit_code == 2 and "--max-memory 'lots' is not a size" in bad.output
    none = runner.invoke(app, ["recommend", str(RESULTS / "published"), "--max-memory", "1GB"])
    assert none.exit_code == 1 and "no point meets" in none.stdout
    mixed = runner.invoke(app, ["recommend", str(RESULTS / "published"), str(RESULTS / "image-gen")])
    assert mixed.exit_code == 2 and "--task" in mixed.output


def test_render_report_api_for_the_suite_command(tmp_path):
    console = Console(file=io.StringIO(), width=160)
    comparison = render_report([RESULTS / "peftbench"], html=tmp_path / "r.html", console=console)
    assert (tmp_path / "r.html").stat().st_size > 1_000_000  # plotly.js is inlined
    assert "lora/rank8" in console.file.getvalue() and "HTML report:" in console.file.getvalue()
    assert set(comparison.pair.frontier.frontier) == {"ia3/default", "vera/default", "lora/rank8 -> LoRA r4"}
    # already-loaded records work too
    again = render_report([run for p in comparison.points for run in p.runs], console=Console(file=io.StringIO()))
    assert again.pair.frontier.frontier == comparison.pair.frontier.frontier


def test_png_shows_dollar_signs_in_names_as_text(tmp_path):
    """matplotlib would read `$...$` as math (and fail on broken math): names are escaped."""
    data = json.loads((RESULTS / "published" / "lora--llama-3.2-3B-rank32.json").read_text())
    data["run_info"]["experiment_name"] = "lora/$\\frac{broken$ math"
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "odd.json").write_text(json.dumps(data))
    comparison = render_report([tmp_path / "results"], png_dir=tmp_path / "png", console=Console(file=io.StringIO()))
    assert comparison.pair.frontier.frontier == ["lora/$\\frac{broken$ math"]
    assert (tmp_path / "png" / "pareto_test_score_vs_peak_memory_total.png").stat().st_size > 10_000


def test_unwritable_output_is_a_clear_error(tmp_path):
    (tmp_path / "taken").write_text("a file, not a folder")
    result = runner.invoke(app, ["report", str(RESULTS / "published"), "--html", str(tmp_path / "taken" / "r.html")])
    assert result.exit_code == 1 and "cannot write" in result.output


def test_png_names_the_dominated_points_too_when_there_are_few_and_has_a_legend(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to look at
    comparison = render_report([RESULTS / "peftbench"], png_dir=tmp_path, console=Console(file=io.StringIO()))
    (figure,) = figures
    axes = figure.axes[0]
    labels = {text.get_text() for text in axes.texts}
    frontier = set(comparison.pair.frontier.frontier)
    dominated = {p.name for p in comparison.points} - frontier - set(comparison.pair.frontier.missing)
    assert frontier <= labels and dominated and labels & dominated
    noise = ["on the frontier only within noise"] if comparison.pair.within_noise else []
    assert [text.get_text() for text in axes.get_legend().get_texts()] == ["on the frontier", *noise, "dominated"]


def test_an_output_path_that_would_replace_an_input_is_refused_naming_it(tmp_path):
    import shutil

    results = tmp_path / "R"
    shutil.copytree(RESULTS / "published", results)
    before = {path.name: path.read_bytes() for path in results.iterdir()}
    one = results / "ia3--llama-3.2-3B-default.json"
    (tmp_path / "link.html").symlink_to(one)
    refused = [
        ([str(one)], ["--html", str(one)], "is the report's input"),
        ([str(results)], ["--html", str(one)], "would be a result file in"),
        ([str(results)], ["--html", str(results / "new.json")], "would be a result file in"),
        ([str(results)], ["--html", str(tmp_path / "link.html")], "would be a result file in"),
        ([str(one)], ["--html", str(tmp_path / "link.html")], "is the report's input"),
        ([str(results)], ["--html", str(results)], "is the report's input"),
        ([str(results)], ["--html", str(tmp_path)], "is a folder"),
        ([str(results)], ["--png", str(one)], "is a file"),
    ]
    for inputs, output, message in refused:
        result = runner.invoke(app, ["report", *inputs, *output])
        assert result.exit_code == 2, (output, result.output)
        assert message in result.output and output[1] in result.output.replace("\n", "")
    assert {path.name: path.read_bytes() for path in results.iterdir()} == before
    assert not (results / "new.json").exists()

    fine = runner.invoke(app, ["report", str(results), "--html", str(results / "report.html")])
    assert fine.exit_code == 0, fine.output
    assert (results / "report.html").read_text().lstrip().startswith("<!")


def test_suite_refuses_an_html_path_among_its_result_files_before_running(tmp_path, monkeypatch):
    import peftbench.runners.isolated as isolated

    def no_run(request):
        raise AssertionError(f"{request.result_stem} ran before --html was checked")

    monkeypatch.setattr(isolated, "run_request", no_run)
    for results in (tmp_path, tmp_path / "not-yet"):  # the results folder may not exist before the suite runs
        html = results / "ia3--default.json"
        result = runner.invoke(app, ["suite", "quick", "--only", "ia3/default", "--results", str(results),
                                     "--html", str(html)])
        assert result.exit_code == 2, result.output
        assert "would be a result file in" in result.output and str(html) in result.output.replace("\n", "")


def test_report_and_recommend_on_results_with_millions_of_test_items_stay_in_memory(tmp_path):
    """Paired statistics over 1,000,000 test items: once a 15 GiB array and a numpy traceback. Run under a 4 GiB
    address-space limit, so that a regression fails here instead of swapping the machine."""
    import os
    import resource
    import subprocess
    import sys

    import numpy as np

    import peftbench

    template = json.loads((RESULTS / "peftbench" / "oft--rank8.json").read_text())
    for name, rate in (("oft/rank8", 0.45), ("lora/rank8", 0.46)):
        items = (np.random.default_rng(len(name)).random(1_000_000) < rate).astype(int)
        document = json.loads(json.dumps(template))
        method, config = name.split("/")
        document["run_info"]["experiment_name"] = name
        document["peftbench"].update(method=method, name=config, per_item_correct=items.tolist(),
                                     test_score=float(items.mean()))
        (tmp_path / f"{method}--{config}.json").write_text(json.dumps(document))

    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, 4 * 2**30))

    environment = {**os.environ, "PYTHONPATH": str(Path(peftbench.__file__).parents[1]), "COLUMNS": "200"}
    for command in ("report", "recommend"):
        completed = subprocess.run(
            [sys.executable, "-c", "from peftbench.cli import main; main()", command, str(tmp_path)],
            capture_output=True, text=True, timeout=SAFETY_NET_S, env=environment, preexec_fn=limit_memory,
        )
        assert completed.returncode == 0, completed.stderr[-2000:]
        assert "lora/rank8" in completed.stdout
    assert "paired bootstrap over 1000000 test items" in completed.stdout


@pytest.mark.parametrize(("option", "value"), [("--max-memory", "1e400GB"), ("--max-memory", "1e308TB"),
                                               ("--max-train-time", "1e400s"), ("--max-params", "1e400"),
                                               ("--max-forgetting", "nan"), ("--min-score", "-inf")])
def test_recommend_refuses_a_limit_that_is_not_finite(option, value):
    result = runner.invoke(app, ["recommend", str(RESULTS / "published"), option, value])
    assert result.exit_code == 2, result.output
    assert f"{option} " in result.output and "is not a finite number" in result.output


def test_report_on_several_tasks_prints_one_table_per_task():
    result = runner.invoke(app, ["report", str(RESULTS / "peftbench"), str(RESULTS / "image-gen")],
                           env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    out = result.stdout
    math_at, image_at = out.index("Pareto frontier on task math-tiny"), out.index("Pareto frontier on task image-gen")
    math_tables, image_tables = (out[math_at:image_at], out[image_at:]) if math_at < image_at else (
        out[math_at:], out[image_at:math_at])
    assert "All 5 points on task math-tiny" in math_tables and "All 4 points on task image-gen" in image_tables
    for name in ("ia3/default", "vera/default", "oft/rank8"):
        assert name in math_tables and name not in image_tables
    for name in ("lora/flux-rank16", "boft/flux-default"):
        assert name in image_tables and name not in math_tables
