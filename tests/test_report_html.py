"""The HTML report: self-contained, escaped, and working in a real headless browser (Debian's chromium).

The browser test is not skipped when chromium is missing: `make test` installs it
(scripts/setup-test-browser.sh), and a missing browser must fail loudly rather than hide an untested report.
"""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from peftbench.reporting import render_report
from peftbench.reporting.html import json_for_script
from waiting import SAFETY_NET_S

RESULTS = Path(__file__).parent / "fixtures" / "results"
CHROMIUM = "/usr/bin/chromium"
XSS_NAME = "<img src=x onerror=alert(1)>"
SCRIPT_NAME = "</script><script>alert(2)</script>&amp;\u2028[bold red]x$y$"


def test_json_for_script_cannot_close_the_script_element():
    text = json_for_script({"name": "</script><!-- & \u2028\u2029"})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text and "\u2029" not in text
    assert json.loads(text) == {"name": "</script><!-- & \u2028\u2029"}


@pytest.fixture(scope="module")
def report_file(tmp_path_factory) -> tuple[Path, object]:
    path = tmp_path_factory.mktemp("report") / "report.html"
    comparison = render_report(
        [RESULTS / "peftbench", RESULTS / "hostile", RESULTS / "published"],
        x="peak_memory_total",  # the memory figure both tasks' results have (published ones: no tensor-level peak)
        html=path,
        console=Console(file=io.StringIO()),
        title="<b>title</b> & co",
    )
    return path, comparison


def test_html_is_self_contained_and_escaped(report_file):
    path, _ = report_file
    text = path.read_text(encoding="utf-8")
    from plotly.offline import get_plotlyjs

    assert not re.search(r"<script[^>]+src=|<link[^>]+href=", text)  # nothing is loaded from elsewhere
    assert get_plotlyjs() in text  # plotly.js is inlined
    ours = text.replace(get_plotlyjs(), "")
    assert "http://" not in ours and "https://" not in ours
    assert "&lt;b&gt;title&lt;/b&gt; &amp; co" in text
    data_start = text.index('<script type="application/json" id="peftbench-data">')
    data_end = text.index("</script>", data_start)
    data_text = text[data_start:data_end].split(">", 1)[1]
    assert "<" not in data_text and ">" not in data_text
    assert XSS_NAME in {p["name"] for p in json.loads(data_text)["points"]}
    markup = text[:data_start]
    assert not re.search(r"\son[a-z]+=", markup)  # no inline event handlers in the markup


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.fail(
            "chromium is not installed: the HTML report must be tested in a real browser. "
            "Run `make test` (it runs scripts/setup-test-browser.sh) or `apt-get install chromium`."
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"],
        )  # fmt: skip
        yield launched
        launched.close()


def watched_page(browser, path: Path):
    """A page opened on `path`, with the console errors, dialogs and requests it makes collected."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(SAFETY_NET_S * 1000)  # every wait is on a state of the page; this is for a hang
    errors, dialogs, requests = [], [], []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.on("request", lambda request: requests.append(request.url))
    page.goto(path.as_uri())
    return page, errors, dialogs, requests


def test_report_in_a_real_browser(report_file, browser, tmp_path):
    path, comparison = report_file
    page, errors, dialogs, requests = watched_page(browser, path)
    page.wait_for_selector("#scatter .scatterlayer .point")

    # two tasks are loaded: the page shows one at a time (the one with most points first)
    for task in ("math-tiny", "math"):
        page.select_option("#task", task)
        points = [p for p in comparison.points if p.task == task]
        # the plot is drawn: one marker per point that has both metrics of the pair
        complete = [p for p in points if p.name not in comparison.pair.frontier.missing]
        assert page.locator("#scatter .scatterlayer .point").count() == len(complete)
        # the page's frontier is the one peftbench computed
        frontier_rows = page.locator("#points-table tbody tr.frontier td.name").all_text_contents()
        assert set(frontier_rows) == set(comparison.pair.frontier.frontier) & {p.name for p in points}
        noise_rows = page.locator("#points-table tbody tr.within-noise td.name").all_text_contents()
        assert set(noise_rows) == set(comparison.pair.within_noise) & {p.name for p in points}
    assert page.locator("#scatter .xtitle").text_content().startswith("peak RSS/reserved (whole run) [GiB]")  # one unit
    # hover details: the name and the metrics in human units
    page.locator("#scatter .scatterlayer .trace").last.locator(".point").first.hover(force=True)
    hover = page.locator("#scatter .hoverlayer .hovertext")
    hover.wait_for()
    assert "test score:" in hover.text_content() and "GiB" in hover.text_content()
    # clicking a point picks it: the curves show that point's runs instead of the frontier's. Plotly's click
    # handler takes the point from its hover state, updated asynchronously after a move: the click waits for it
    page.mouse.move(5, 5)  # off the plot: clear the hover state left by the check above
    page.wait_for_function("!(document.getElementById('scatter')._hoverdata || []).length")
    box = page.locator("#scatter .scatterlayer .point").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_function("(document.getElementById('scatter')._hoverdata || []).length === 1")
    page.mouse.down()
    page.mouse.up()
    page.wait_for_function("state.picked.size === 1")
    assert page.evaluate("state.picked.size") == 1
    (picked,) = page.evaluate("[...state.picked]")
    runs_with_curves = [r for p in comparison.points if p.name == picked for r in p.runs if r.train_curve]
    assert page.locator("#train-curves .scatterlayer .trace").count() == len(runs_with_curves)
    assert "1 picked point" in page.locator("#picked-status").text_content()
    page.mouse.down()  # a second click unpicks it: back to the frontier's runs
    page.mouse.up()
    page.wait_for_function("state.picked.size === 0")
    # hostile names are text: shown as written, no dialog, no element created from them
    names = page.locator("#points-table tbody td.name").all_text_contents()
    assert XSS_NAME in names and SCRIPT_NAME in names
    assert page.locator("#points-table img").count() == 0
    assert not dialogs and not errors, (dialogs, errors)
    assert all(url.startswith(("file:", "data:", "blob:", "about:")) for url in requests), requests
    assert page.locator("#warnings li").count() == len(comparison.warnings)

    # sorting: the table starts best score first; one click on the header -> ascending order
    header = page.locator("#points-table thead button", has_text="test score")
    header.click()
    scores = [p.mean("test_score") for p in comparison.points if p.task == "math" and p.mean("test_score") is not None]
    first_row = page.locator("#points-table tbody tr").first.locator("td").nth(3).text_content()
    assert first_row.startswith(f"{min(scores):.3f}")

    # filtering with the same grammar as --filter, and a rejected expression
    page.select_option("#task", "math-tiny")
    page.fill("#filter", "peft_type in ['IA3', 'VERA'] and test_score > 0.2")
    page.click("#filter-apply")
    shown = page.locator("#points-table tbody td.name").all_text_contents()
    expected = [p.name for p in comparison.points if p.task == "math-tiny"
                and p.peft_type in ("IA3", "VERA") and (p.mean("test_score") or 0) > 0.2]  # fmt: skip
    assert sorted(shown) == sorted(expected) and expected
    page.fill("#filter", "__import__('os')")
    page.click("#filter-apply")
    assert "filter not applied" in page.locator("#filter-status").text_content()
    assert not errors and not dialogs

    # another metric pair from the selects redraws the plot
    page.fill("#filter", "")
    page.click("#filter-apply")
    page.select_option("#x-metric", "forgetting")
    assert page.locator("#scatter .xtitle").text_content().startswith("forgetting")
    # per-run curves are drawn for the frontier points
    assert page.locator("#train-curves .scatterlayer .trace").count() > 0
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    page.close()


HOSTILE_PREDICTION = "</pre><img src=x onerror=alert(3)><script>alert(4)</script>"


@pytest.fixture(scope="module")
def predictions_report(tmp_path_factory) -> tuple[Path, object]:
    """Three methods' results on math-tiny, each with its test items' predictions (one of them hostile)."""
    folder = tmp_path_factory.mktemp("predictions")
    for name in ("ia3--default--seed0.json", "lora--rank8--seed0.json", "vera--default--seed0.json"):
        data = json.loads((RESULTS / "peftbench" / name).read_text())
        own = data["peftbench"]
        own["predictions"] = [
            {"input": f"Question: item {i}?\nAnswer:", "target": f"#### {i}",
             "prediction": (HOSTILE_PREDICTION if name.startswith("vera") and not correct else f"{name[:4]} says #### "
                            + (str(i) if correct else "-1")),
             "score": correct}
            for i, correct in enumerate(own["per_item_correct"])
        ]
        (folder / name).write_text(json.dumps(data))
    path = folder / "report.html"
    comparison = render_report([folder], html=path, console=Console(file=io.StringIO()))
    return path, comparison


def test_report_shows_what_the_models_wrote(predictions_report, browser):
    path, comparison = predictions_report
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(SAFETY_NET_S * 1000)  # every wait is on a state of the page; this is for a hang
    errors, dialogs = [], []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(path.as_uri())
    page.wait_for_selector("#samples .sample")
    samples = page.locator("#samples .sample")
    assert 1 <= samples.count() <= 6
    runs = {p.name: p.runs[0] for p in comparison.points}
    shown_items = []
    for k in range(samples.count()):
        sample = samples.nth(k)
        index = int(sample.locator(".what").first.text_content().rsplit(" ", 1)[1])
        shown_items.append(index)
        assert sample.locator("pre").nth(1).text_content() == f"#### {index}"  # the reference
        rows = sample.locator("table tr")
        assert rows.count() == len(runs)  # every method on the same item
        for r in range(rows.count()):
            row = rows.nth(r)
            name = row.locator("td.name").text_content()
            expected = runs[name].predictions[index]
            assert row.locator("pre").text_content() == expected["prediction"]  # as written, as text
            assert row.get_attribute("class") == ("pass" if expected["score"] == 1 else "fail")
    # every method's failures are represented, and the hostile prediction is text, not markup
    for name, run in runs.items():
        if any(item["score"] == 0 for item in run.predictions):
            assert any(run.predictions[i]["score"] == 0 for i in shown_items), name
    assert HOSTILE_PREDICTION in page.locator("#samples").text_content()  # vera's failures are hostile
    assert page.locator("#samples img, #samples script").count() == 0
    assert not dialogs and not errors, (dialogs, errors)
    page.close()


def report_of_one_edited_result(tmp_path: Path, edit) -> Path:
    """The HTML report of one fixture result after `edit(data)`."""
    data = json.loads((RESULTS / "peftbench" / "lora--rank8--seed0.json").read_text())
    edit(data)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "lora--rank8--seed0.json").write_text(json.dumps(data))
    path = tmp_path / "report.html"
    render_report([tmp_path / "results"], html=path, console=Console(file=io.StringIO()))
    return path


def test_an_empty_curve_panel_says_why_instead_of_drawing_bare_axes(browser, tmp_path):
    """Runs with valid_size 0 (the quick suite's) have no validation curve."""
    def without_validation(data: dict) -> None:
        data["peftbench"]["valid_curve"] = []
        data["train_info"]["metrics"] = [{key: value for key, value in entry.items() if not key.startswith("valid")}
                                         for entry in data["train_info"]["metrics"]]

    page, errors, dialogs, _ = watched_page(browser, report_of_one_edited_result(tmp_path, without_validation))
    page.wait_for_selector("#valid-curves .annotation-text")
    assert "no validation scores" in page.locator("#valid-curves .annotation-text").text_content()
    assert page.locator("#valid-curves .xtick").count() == 0  # no axes drawn
    assert page.locator("#train-curves .scatterlayer .trace").count() == 1
    assert page.locator("#train-curves .annotation-text").count() == 0
    assert not errors and not dialogs, (errors, dialogs)
    page.close()


def test_train_loss_is_smoothed_on_request(browser, tmp_path):
    """A running mean over about 1/25 of the longest run; off, the logged losses as they are."""
    losses = [1.0 if step % 2 else 2.0 for step in range(100)]

    def noisy_losses(data: dict) -> None:
        data["peftbench"]["train_curve"] = [{"step": step, "loss": loss, "lr": 1e-3} for step, loss in enumerate(losses)]

    page, errors, dialogs, _ = watched_page(browser, report_of_one_edited_result(tmp_path, noisy_losses))
    page.wait_for_selector("#train-curves .scatterlayer .trace")
    shown = "document.getElementById('train-curves').data[0].y"
    assert page.evaluate(shown)[:5] == [2.0, 1.5, 5 / 3, 1.5, 1.5]  # windows of 4 (100 / 25)
    assert page.evaluate(shown)[4:] == [1.5] * 96
    assert "last 4 logged steps" in page.locator("#smooth-label").text_content()
    page.uncheck("#smooth")
    page.wait_for_function(f"{shown}[0] === 2.0 && {shown}[1] === 1.0")
    assert page.evaluate(shown) == losses
    assert not errors and not dialogs, (errors, dialogs)
    page.close()
