"""A halving sweep's results in `report` (terminal and HTML: pruned trials greyed, with their step) and in
`recommend` (a pruned trial is never recommended). The sweep runs on the stand-in engine (tests/sweep_standin.py)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from peftbench.cli import app
from peftbench.reporting.render import render_report
from peftbench.reporting.sweep_view import sweep_tables, sweep_views
from peftbench.sweep.halving import Halving
from peftbench.sweep.plan import SweepPlan
from peftbench.sweep.run import run_sweep
from sweep_standin import standin_execute
from sweep_standin import two_methods as standin_two_methods
from test_report_html import browser, watched_page  # noqa: F401 - the fixture, by name

PRUNED = {("lora/r4", 3.16e-4), ("lora/r4", 3.16e-3), ("ia3/default", 3.16e-3)}  # each at step 1: the first rung of the loss signal (max_steps 8 / 2^3)


@pytest.fixture(scope="module")
def halving_results(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("halving")
    results = root / "results"
    plan = SweepPlan("math-tiny", standin_two_methods(root / "exp"), results, lr_trials=3, seeds=1, halving=Halving())
    run_sweep(plan, execute=standin_execute, show_progress=False)
    return results


def test_the_sweep_view_lists_every_trial_and_greys_the_pruned_ones_with_their_step(halving_results):
    (view,) = sweep_views([halving_results])
    rows = {(e["experiment"], t["lr"]): t for e in view["experiments"] for t in e["trials"]}
    assert len(rows) == 6
    assert {key for key, t in rows.items() if t["status"] == "pruned"} == PRUNED
    assert all(rows[key]["shown_status"] == "pruned at step 1" for key in PRUNED)
    assert rows[("ia3/default", 3.16e-2)]["shown_status"] == "success, chosen"
    (table,) = sweep_tables([view])
    styles = [row.style for row in table.rows]
    assert styles.count("dim") == 3 and styles.count(None) == 3


def test_report_prints_the_sweep_and_the_html_page_carries_it(halving_results, tmp_path):
    console = Console(record=True, width=200)
    html = tmp_path / "report.html"
    render_report([halving_results], html=html, console=console)
    text = console.export_text()
    assert "successive halving" in text and text.count("│ pruned at step 1 │") == 3  # the sweep table's rows
    assert "status 'pruned'" not in text  # shown in the sweep view, not warned about once per file
    page = html.read_text()
    data = json.loads(re.search(r'<script type="application/json" id="peftbench-data">(.*?)</script>', page, re.S)[1])
    (sweep,) = data["sweeps"]
    shown = [t["shown_status"] for e in sweep["experiments"] for t in e["trials"]]
    assert shown.count("pruned at step 1") == 3
    assert 'row.className = "pruned"' in page and "tr.pruned td" in page  # greyed by the page's style


def test_recommend_never_recommends_a_pruned_trial(halving_results, tmp_path):
    # a pruned trial whose file (edited) claims a better test score than every finished run
    pruned = halving_results / "lora--r4--lr0.000316--seed0.json"
    data = json.loads(pruned.read_text())
    assert data["peftbench"]["status"] == "pruned"
    data["peftbench"].update(test_score=1.0, per_item_correct=[1] * 60)
    edited = tmp_path / "results"
    edited.mkdir()
    for path in halving_results.glob("*.json"):
        (edited / path.name).write_text(pruned.read_text() if path == pruned else path.read_text())
    (edited / pruned.name).write_text(json.dumps(data))

    outcome = CliRunner().invoke(app, ["recommend", str(edited), "--priority", "test_score", "--json"])
    assert outcome.exit_code == 0, outcome.output
    recommendation = json.loads(outcome.stdout)
    assert recommendation["best"] == "ia3/default tuned lr=0.0316"  # the best finished run
    names = [entry["name"] for entry in recommendation["ranking"]]
    assert len(names) == 5 and not any("lr=0.000316" in name for name in names)  # nor a candidate at all


def test_the_html_sweep_view_in_a_real_browser_greys_the_pruned_rows(halving_results, browser, tmp_path):
    html = tmp_path / "report.html"
    render_report([halving_results], html=html, console=Console(file=open(os.devnull, "w")))
    page, errors, _dialogs, _requests = watched_page(browser, html)
    page.wait_for_selector("#sweeps tbody tr")
    assert page.is_visible("#sweeps-card")
    rows = page.eval_on_selector_all("#sweeps tbody tr", "rows => rows.map(r => [r.className, "
                                     "r.cells[2].textContent, getComputedStyle(r.cells[2]).color])")
    pruned = [row for row in rows if row[0] == "pruned"]
    assert len(rows) == 6 and len(pruned) == 3
    assert {row[1] for row in pruned} == {"pruned at step 1"}
    finished_color = next(row[2] for row in rows if row[0] != "pruned")
    assert all(row[2] != finished_color for row in pruned)  # greyed
    assert not errors
