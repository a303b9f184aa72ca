"""Image-generation results in the analysis and the HTML report: published PEFT files and peftbench runs load
through one reader and share one frontier (peak memory against test DINO similarity); drift counts as
lower-is-better; the gallery shows each method's images as embedded thumbnails, captions as text, in a real
browser; paths in a result file cannot reach outside its folder."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from peftbench.analysis.comparison import compare_results, frontier_view
from peftbench.analysis.metrics import get_metric
from peftbench.reporting import render_report
from peftbench.reporting.html import report_data
from peftbench.analysis.runs import load_results

from test_report_html import browser, watched_page  # noqa: F401 - the real-browser fixture

PUBLISHED = Path(__file__).parent / "fixtures" / "results" / "peft-image-gen"
HOSTILE_PROMPT = "<img src=x onerror=alert(1)> sks </script><script>alert(2)</script>"
# between the published LN tuning (9.61e9 B) and OFT (9.67e9 B), above IA3 (9.59e9 B), as the whole run's
# process-level peak (the published figure): the stand-in run then shares that frontier with the leanest published run
PLACED_PEAK = 9_650_000_000


@pytest.fixture(scope="module")
def image_results(image_lora_run, tmp_path_factory) -> Path:
    """The stand-in LoRA run (renamed, its memory placed among the published runs', one caption hostile, one image
    path leaving the folder) beside five published PEFT image-gen results."""
    path, result = image_lora_run
    folder = tmp_path_factory.mktemp("image-results")
    shutil.copytree(path.parent / "artifacts", folder / "artifacts")
    result = json.loads(json.dumps(result))
    result["run_info"]["experiment_name"] = "lora/stand-in"
    result["peftbench"]["name"] = "stand-in"
    result["peftbench"]["peak_memory_total_bytes"] = PLACED_PEAK
    result["peftbench"]["images"]["test"][0]["prompt"] = HOSTILE_PROMPT
    result["peftbench"]["images"]["test"][1]["reference"] = "../../../../etc/passwd"
    (folder / "lora--stand-in.json").write_text(json.dumps(result))
    shutil.copytree(PUBLISHED, folder / "published")
    return folder


def test_published_and_peftbench_image_results_share_one_frontier(image_results):
    loaded = load_results([image_results])
    assert not loaded.warnings, [str(w) for w in loaded.warnings]
    assert {r.source for r in loaded.runs} == {"peftbench", "peft-suite"}
    assert {r.result.task for r in loaded.runs} == {"image-gen"}
    # on the tensor-level peak, which the PEFT suite does not measure, the published runs are left out, saying so
    by_tensor_peak = compare_results(loaded, x="peak_memory", y="test_score")
    assert by_tensor_peak.pair.frontier.frontier == ["lora/stand-in"]
    assert len(by_tensor_peak.pair.frontier.missing) == 5
    comparison = compare_results(loaded, x="peak_memory_total", y="test_score")
    values = {p.name: (p.mean("peak_memory_total"), p.mean("test_score")) for p in comparison.points}
    assert len(values) == 6
    expected = {a for a, (ma, sa) in values.items()
                if not any(mb <= ma and sb >= sa and (mb, sb) != (ma, sa) for mb, sb in values.values())}
    assert set(comparison.pair.frontier.frontier) == expected
    # the published numbers as published: OFT beats LoRA on both
    assert values["oft/flux2-klein-default"] == (9669967872, pytest.approx(0.7077637513478597))
    assert "lora/flux2-klein-default" in comparison.pair.frontier.dominated_by
    assert {"lora/stand-in", "ia3/flux2-klein-default"} <= expected  # IA3: the leanest, and better than LN tuning
    assert comparison.pair.frontier.dominated_by["ln_tuning/flux2-klein-default"].by == "ia3/flux2-klein-default"


def test_drift_is_lower_is_better_and_full_finetuning_has_none(image_results):
    loaded = load_results([image_results / "published"])
    comparison = compare_results(loaded)
    view = frontier_view(comparison.points, [get_metric("forgetting"), get_metric("test_score")], with_noise=False)
    # LN tuning learned nothing: drift 0.0 and the lowest score. Lower-is-better drift keeps it on the frontier.
    assert "ln_tuning/flux2-klein-default" in view.frontier.frontier
    assert view.frontier.dominated_by["lora/flux2-klein-default"].by == "oft/flux2-klein-default"
    assert "full-finetuning/flux2-klein-default" in view.frontier.missing  # PEFT's NaN drift: not measured


def test_report_data_names_each_task_s_outputs_and_embeds_small_thumbnails(image_results):
    comparison = compare_results(load_results([image_results]))
    data = report_data(comparison, "images")
    assert data["task_outputs"]["image-gen"] == {
        "score_name": "dino_similarity", "higher_is_better": True, "forgetting_name": "drift",
        "forgetting_higher_is_better": False, "throughput_unit": "images/s"}
    (row,) = data["gallery"]  # only the peftbench run saved images
    assert row["name"] == "lora/stand-in" and len(row["test"]) == 4 and len(row["drift"]) == 3
    assert row["test"][0]["prompt"] == HOSTILE_PROMPT
    assert row["test"][1]["reference"] is None  # the path leaving the results folder is not read
    uris = [u for item in row["test"] for u in (item["reference"], item["image"]) if u] + [
        u for pair in row["drift"] for u in (pair["base"], pair["adapter"])]
    assert len(uris) == 4 + 4 - 1 + 6
    assert all(u.startswith("data:image/jpeg;base64,") and len(u) < 20_000 for u in uris)


def test_gallery_in_a_real_browser(image_results, browser, tmp_path):  # noqa: F811
    report = tmp_path / "report.html"
    render_report([image_results], html=report, console=Console(file=io.StringIO()))
    text = report.read_text()
    assert HOSTILE_PROMPT not in text  # escaped inside the page's JSON
    page, errors, dialogs, requests = watched_page(browser, report)
    page.wait_for_selector("#gallery .gallery-row img")
    rows = page.locator("#gallery .gallery-row")
    assert rows.count() == 1 and "lora/stand-in" in rows.first.locator(".what").first.text_content()
    images = page.locator("#gallery img")
    assert images.count() == 4 + 4 - 1 + 6
    for k in range(images.count()):
        assert images.nth(k).get_attribute("src").startswith("data:image/jpeg;base64,")
        assert images.nth(k).evaluate("img => img.complete && img.naturalWidth > 0")  # decoded, shown
    captions = page.locator("#gallery figcaption").all_text_contents()
    assert captions[0] == "reference | generated: " + HOSTILE_PROMPT  # the markup is text
    assert sum(c.startswith("drift, base | adapter: ") for c in captions) == 3
    assert page.locator("#gallery script").count() == 0
    assert "(missing)" in page.locator("#gallery").text_content()
    assert all(url.startswith(("file:", "data:")) for url in requests), requests
    assert not dialogs and not errors, (dialogs, errors)
    page.close()


def test_a_lower_is_better_score_declared_in_the_files_is_ranked_lowest_first(image_lora_run, tmp_path):
    from peftbench.analysis.recommend import recommend

    _, result = image_lora_run
    for name, score in (("low", 0.2), ("high", 0.4)):  # e.g. a distance: lower is better
        copy = json.loads(json.dumps(result))
        copy["run_info"]["experiment_name"] = f"lora/{name}"
        copy["peftbench"].update(name=name, task="distance-task", score_name="distance", higher_is_better=False,
                                 test_score=score)
        (tmp_path / f"lora--{name}.json").write_text(json.dumps(copy))
    comparison = compare_results(load_results([tmp_path]))
    assert comparison.pair.frontier.frontier == ["lora/low"]
    assert recommend(comparison.points, [], "test_score").best.name == "lora/low"
