"""`peftbench infer`: serving modes measured on the shipped tiny model, bad folders reported by name, the
results joined to training results in the analysis (metric, recommend constraint, table column)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from rich.console import Console
from test_report_html import browser, watched_page  # noqa: F401 - the real-browser fixture
from typer.testing import CliRunner
from waiting import SAFETY_NET_S

from peftbench.builtin_suites import suites_root
from peftbench.cli import app
from peftbench.inference.run import measure_all
from peftbench.inference.targets import resolve_targets
from peftbench.inference.timing import _category, _headline
from peftbench.results.inference_record import (
    BASE_STEM,
    InferenceResult,
    inference_path,
    read_inference_file,
    serving_mode_label,
    write_inference,
)

QUICK = suites_root() / "quick"
RESULTS_FIXTURES = Path(__file__).parent / "fixtures" / "results" / "peftbench"
# the smallest measurement that still has every part: one prompt per category, two new tokens, one run
FAST = {"runs": 1, "warmup_runs": 1, "prompts_per_category": 1,
        "max_new_tokens": {"short": 2, "medium": 2, "long": 2}, "batch_sizes": [1, 2]}


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    root = tmp_path_factory.mktemp("infer")
    broken = root / "checkpoints" / "lora--broken"  # a saved adapter whose weights file is not safetensors
    broken.mkdir(parents=True)
    shutil.copy(QUICK / "lora" / "rank16" / "adapter_config.json", broken)
    (broken / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    orphan = root / "converted" / "oft-as-lora"  # a `convert` output whose base model is gone
    orphan.mkdir(parents=True)
    config = json.loads((QUICK / "lora" / "rank16" / "adapter_config.json").read_text())
    (orphan / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": str(root / "gone")}))
    (orphan / "conversion_report.json").write_text("{}")
    trained = root / "trained-results"  # a results folder as `suite --save-checkpoint` leaves it
    _save_trained_lora(trained / "checkpoints" / "lora--trained")
    targets, problems = resolve_targets([QUICK / "lora" / "rank16", QUICK / "prompt_tuning" / "tokens20",
                                         broken, orphan, trained])
    assert not problems
    assert [t.state for t in targets] == ["untrained", "untrained", "trained", "converted", "trained"]
    results = root / "results"
    outcomes = measure_all(targets, task_name="math-tiny", results_dir=results, overrides={},
                           settings_overrides=FAST, num_threads=1, force=False)
    return results, {outcome.label: outcome for outcome in outcomes}, broken, orphan


def _save_trained_lora(folder: Path) -> None:
    """A LoRA checkpoint with non-zero weights, as training saves it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from peftbench.conversion.coverage import perturb_adapter
    from peftbench.tasks.math_tiny import shipped_model_path

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(shipped_model_path()),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    perturb_adapter(model)
    model.save_pretrained(folder)


def test_a_trained_checkpoint_is_loaded_and_served_in_every_mode(measured):
    _, outcomes, _, _ = measured
    trained = outcomes["lora/trained"].result
    assert trained.status == "success" and trained.adapter_state == "trained", trained.error_msg
    assert all(trained.modes[mode]["supported"] for mode in ("unmerged", "mixed", "converted", "merged"))
    assert trained.trainable_params == 4 * (256 + 256) * 2 * 4  # r=4 on q and v of 4 layers (256 x 256)


def test_lora_is_measured_in_every_serving_mode(measured):
    results, outcomes, _, _ = measured
    lora = outcomes["lora/rank16"].result
    assert lora.status == "success", lora.error_msg
    assert lora.clock == "cpu" and lora.num_threads == 1 and lora.precision and lora.hardware["name"]
    for mode in ("unmerged", "mixed", "converted", "merged"):
        block = lora.modes[mode]
        assert block["supported"] is True, (mode, block)
        # a mixed batch needs two rows; math-tiny measures merged and converted at the smallest size only
        sizes = {"mixed": ["2"], "unmerged": ["1", "2"]}.get(mode, ["1"])
        assert sorted(block["batches"]) == sizes
        for category in block["batches"][sizes[0]].values():
            assert category["inference_time_s"] > 0 and category["time_to_first_token_s"] > 0
            assert category["decode_time_per_token_s"] >= 0 and category["base_inference_time_s"] > 0
        memory = block["memory"]
        assert 0 < memory["at_load"]["rss_bytes"] <= memory["after_generation"]["peak_rss_bytes"]
    assert lora.modes["converted"]["lora_rank"] == 16
    for mode in ("unmerged", "merged"):  # every mode is paired with the same base runs, and keeps their range
        low, high = lora.modes[mode]["overhead_range_pct"]
        assert low - 1e-9 <= lora.modes[mode]["overhead_pct"] <= high + 1e-9
    assert lora.headline_mode == "merged" and lora.inference_overhead_pct == lora.modes["merged"]["overhead_pct"]
    # the file reads back as it was written
    assert read_inference_file(inference_path(results, "lora--rank16"))[0] == lora


def test_merged_mode_serves_exactly_the_base_models_weights(measured):
    # what makes its overhead noise: merge_and_unload leaves the base model's parameters and nothing else
    results, outcomes, _, _ = measured
    base, _ = read_inference_file(inference_path(results, BASE_STEM))
    lora = outcomes["lora/rank16"].result
    assert base.status == "success" and base.base["parameters"] > 0
    assert lora.modes["merged"]["parameters"] == base.base["parameters"]
    assert lora.modes["unmerged"]["parameters"] > base.base["parameters"]


def test_overhead_is_paired_with_the_base_runs_and_marked_within_noise():
    def runs(*seconds):  # ((wall, cpu) of the whole call, (wall, cpu) of the first token) per run
        return [((s, s), (s / 10, s / 10)) for s in seconds]

    same = _category(runs(1.0, 1.01, 1.02), runs(1.0, 1.01, 1.02), "cpu", new_tokens=10, prompts=1)
    assert same["overhead_pct"] == 0 and same["within_noise"] and same["base_spread_pct"] == pytest.approx(100 * 0.02 / 1.01)
    # 20% slower in every run, against a base whose runs differ by 2%: a real overhead
    slower = _category(runs(1.2, 1.224, 1.212), runs(1.0, 1.02, 1.01), "cpu", new_tokens=10, prompts=1)
    assert slower["overhead_pct"] == pytest.approx(20) and not slower["within_noise"]
    assert slower["decode_time_per_token_s"] == pytest.approx((1.212 - 0.1212) / 9)
    assert slower["prefill_overhead_pct"] == pytest.approx(20) and slower["decode_overhead_pct"] == pytest.approx(20)
    block = {"batches": {"8": {"short": slower}, "1": {"short": same, "long": slower}}}
    _headline(block)  # batch size 1, mean over its categories, noise = the base's mean spread
    assert block["headline_batch_size"] == 1 and block["overhead_pct"] == pytest.approx(10)
    assert block["noise_pct"] == pytest.approx(100 * 0.02 / 1.01) and block["within_noise"] is False


def test_the_headline_overhead_lies_within_the_range_of_its_runs():
    # a measured LoRA's three categories (each run's paired overhead): the mean of the categories' medians was
    # 32.4%, below every run's own mean over the categories (33.5%, 34.5%, 35.1%); the headline is their median
    per_category = [[29.97, 29.20, 38.66], [41.64, 25.04, 35.28], [31.92, 46.28, 31.41]]
    block = {"batches": {"1": {str(i): {"overhead_pct": sorted(runs)[1], "run_overheads_pct": runs, "base_spread_pct": 8.0}
                               for i, runs in enumerate(per_category)}}}
    _headline(block)
    low, high = block["overhead_range_pct"]
    assert (low, high) == (pytest.approx(33.51, abs=0.01), pytest.approx(35.12, abs=0.01))
    assert low <= block["overhead_pct"] <= high and block["overhead_pct"] == pytest.approx(34.51, abs=0.01)


def test_only_the_modes_asked_for_are_measured_at_every_batch_size(tmp_path):
    from peftbench.inference.settings import InferenceSettings

    settings = InferenceSettings.build({"modes_at_every_batch_size": ["unmerged", "mixed"]}, {"batch_sizes": [8, 1, 4]})
    assert settings.batch_sizes_of("unmerged") == [1, 4, 8] and settings.batch_sizes_of("mixed") == [4, 8]
    assert settings.batch_sizes_of("merged") == [1] and settings.batch_sizes_of("converted") == [1]
    only_ones = InferenceSettings.build({}, {"batch_sizes": [1], "modes_at_every_batch_size": []})
    assert only_ones.batch_sizes_of("mixed") == []  # a mixed batch needs two rows: measure_job says n/a
    result = CliRunner().invoke(app, ["infer", str(QUICK / "lora" / "rank16"), "--results", str(tmp_path),
                                      "--set", 'modes_at_every_batch_size=["fused"]'])
    assert result.exit_code == 2 and "modes_at_every_batch_size" in result.output


def test_the_infer_tables_show_each_overhead_with_the_range_of_its_runs_in_80_columns():
    from peftbench.reporting.inference import inference_tables

    lora = InferenceResult(task="math-tiny", method="lora", name="r16", experiment_name="lora/r16", status="success",
                           adapter_state="untrained",
                           modes={"unmerged": _mode(35.0, runs_range=[28.4, 41.6]),
                                  "merged": _mode(0.4, within_noise=True, runs_range=[-2.2, 3.1])})
    lora.modes["converted"] = {"supported": False, "reason": "a long reason why this mode cannot serve " * 3}
    output = io.StringIO()
    console = Console(file=output, width=80)
    for table in inference_tables([lora]):
        console.print(table)
    text = output.getvalue()
    assert "+35.0%" in text and "+28..+42" in text and "+0.4% ~" in text and "-2..+3" in text
    assert "…" not in text and "untrained" in text and "decode ms/token" in text  # no column cut at 80


def test_a_method_that_cannot_merge_says_so(measured):
    _, outcomes, _, _ = measured
    prompt_tuning = outcomes["prompt_tuning/tokens20"].result
    assert prompt_tuning.status == "success", prompt_tuning.error_msg
    merged = prompt_tuning.modes["merged"]
    assert merged["supported"] is False and "nothing to merge" in merged["reason"]
    assert prompt_tuning.modes["converted"]["supported"] is False and "refused" in prompt_tuning.modes["converted"]["reason"]
    assert prompt_tuning.headline_mode == "unmerged"
    assert serving_mode_label(prompt_tuning).startswith("unmerged (cannot merge)")


def test_a_broken_adapter_folder_is_reported_by_name_and_the_others_still_measured(measured):
    _, outcomes, broken, orphan = measured
    failed = outcomes["lora/broken"].result
    assert failed.status == "failed" and str(broken) in failed.error_msg and "Traceback" not in failed.error_msg
    missing_base = outcomes["converted/oft-as-lora"].result  # <parent folder>/<folder>
    assert missing_base.status == "failed" and str(orphan) in missing_base.error_msg
    assert "base model" in missing_base.error_msg and "missing" in missing_base.error_msg
    assert outcomes["lora/rank16"].status == "success"


def test_a_second_run_keeps_finished_results(measured):
    results, _, _, _ = measured
    targets, _ = resolve_targets([QUICK / "lora" / "rank16"])
    (outcome,) = measure_all(targets, task_name="math-tiny", results_dir=results, overrides={},
                             settings_overrides=FAST, num_threads=1, force=False)
    assert outcome.skipped and outcome.status == "success"


def test_cli_refuses_bad_settings_and_folders_before_measuring(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["infer", str(QUICK / "lora" / "rank16"), "--results", str(tmp_path),
                                 "--set", "bogus=1"])
    assert result.exit_code == 2 and "unknown inference setting 'bogus'" in result.output
    result = runner.invoke(app, ["infer", str(QUICK / "lora" / "rank16"), "--results", str(tmp_path),
                                 "--set", "batch_sizes=[0]"])
    assert result.exit_code == 2 and "batch_sizes" in result.output
    assert not (tmp_path / "inference" / "base-model.json").exists()
    _, problems = resolve_targets([tmp_path / "nothing-here"])
    assert problems == [f"{tmp_path / 'nothing-here'}: no such folder"]


# ----------------------------------------------------------------------------- the analysis's join


def _mode(overhead: float, within_noise: bool = False, supported: bool = True, runs_range=None) -> dict:
    return {"supported": supported, "overhead_pct": overhead, "within_noise": within_noise,
            "overhead_range_pct": runs_range}


@pytest.fixture()
def joined_results(tmp_path) -> Path:
    """Three training results; two with inference results beside them (one cannot merge), one never measured."""
    for name in ("oft--rank8.json", "ia3--default--seed0.json", "vera--default--seed0.json"):
        shutil.copy(RESULTS_FIXTURES / name, tmp_path / name)
    oft = InferenceResult(task="math-tiny", method="oft", name="rank8", status="success",
                          modes={"unmerged": _mode(40.0), "merged": _mode(0.3, within_noise=True, runs_range=[-1.5, 2.25]),
                                 "converted": _mode(20.0)})
    oft.choose_headline()
    vera = InferenceResult(task="math-tiny", method="vera", name="default", status="success",
                           modes={"unmerged": _mode(35.0), "merged": {"supported": False, "reason": "cannot"}})
    vera.choose_headline()
    write_inference(inference_path(tmp_path, "oft--rank8"), oft)
    write_inference(inference_path(tmp_path, "vera--default--seed0"), vera)
    return tmp_path


def test_inference_overhead_is_a_metric_with_its_serving_mode_and_a_dash_when_unmeasured(joined_results):
    from peftbench.analysis.points import build_points
    from peftbench.reporting import render_report
    from peftbench.analysis.runs import load_results

    loaded = load_results([joined_results])
    assert not loaded.warnings and not loaded.ignored  # inference/ files are not mistaken for results
    points = {p.experiment_name: p for p in build_points(loaded.runs)[0]}
    assert points["oft/rank8"].mean("inference_overhead") == pytest.approx(0.3)
    assert points["oft/rank8"].mean("inference_overhead_unmerged") == pytest.approx(40.0)
    assert points["oft/rank8"].serving_mode == "merged, within noise"
    assert points["vera/default"].mean("inference_overhead") == pytest.approx(35.0)
    assert points["vera/default"].serving_mode == "unmerged (cannot merge)"
    assert points["ia3/default"].mean("inference_overhead") is None and points["ia3/default"].serving_mode == ""

    output = io.StringIO()
    render_report([joined_results], x="inference_overhead", console=Console(file=output, width=200))
    rows = {line.split("│")[2].strip(): line for line in output.getvalue().splitlines() if line.count("│") > 4}
    assert "+0.3% (-1.5 to +2.2) merged, within noise" in rows["oft/rank8"]  # the range over its runs
    assert "+35.0% unmerged (cannot merge)" in rows["vera/default"]
    assert "-" in rows["ia3/default"].split("│")[4].strip() and "0.0%" not in rows["ia3/default"]


def test_recommend_with_an_inference_overhead_limit(joined_results):
    runner = CliRunner()
    result = runner.invoke(app, ["recommend", str(joined_results), "--max-inference-overhead", "10%", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["best"] == "oft/rank8" and report["runner_up"] is None
    excluded = dict((e["name"], e["why"]) for e in report["excluded"])
    assert set(excluded) == {"vera/default", "ia3/default"}  # over the limit, and never measured
    # the best line shows what serving it costs, how, and how far the runs moved it
    result = runner.invoke(app, ["recommend", str(joined_results), "--max-inference-overhead", "10%"])
    best_line = " ".join(result.stdout.split("best: ", 1)[1].split())
    assert "inference overhead +0.3% (-1.5 to +2.2) merged, within noise" in best_line
    unmeasured = joined_results / "unmeasured"  # ia3's result alone: never measured by `infer`
    unmeasured.mkdir()
    shutil.copy(joined_results / "ia3--default--seed0.json", unmeasured)
    result = runner.invoke(app, ["recommend", str(unmeasured)])
    best_line = " ".join(result.stdout.split("best: ", 1)[1].split())
    assert "inference overhead -" in best_line and "0.0%" not in best_line
    result = runner.invoke(app, ["recommend", str(joined_results), "--max-inference-overhead", "ten"])
    assert result.exit_code == 2 and "--max-inference-overhead" in result.output


def test_html_report_shows_the_inference_overhead_axis_and_column(joined_results, browser, tmp_path):
    from peftbench.reporting import render_report

    path = tmp_path / "report.html"
    render_report([joined_results], x="inference_overhead", html=path, console=Console(file=io.StringIO()))
    page, errors, dialogs, _ = watched_page(browser, path)
    page.wait_for_selector("#scatter .scatterlayer .point", timeout=SAFETY_NET_S * 1000)
    assert page.locator("#scatter .xtitle").text_content().startswith("inference overhead")
    # the two measured points are plotted; the unmeasured one is not (it has no x)
    assert page.locator("#scatter .scatterlayer .point").count() == 2
    headers = page.locator("#points-table thead th").all_text_contents()
    column = next(i for i, text in enumerate(headers) if text.startswith("inference overhead"))
    cells = {}
    for row in page.locator("#points-table tbody tr").all():
        texts = row.locator("td").all_text_contents()
        cells[texts[1]] = texts[column]
    assert cells["oft/rank8"].startswith("+0.3% (-1.5 to +2.2) merged, within noise")
    assert cells["vera/default"].startswith("+35.0% unmerged (cannot merge)")
    assert cells["ia3/default"] == "-"
    assert not errors and not dialogs


def test_image_task_seconds_per_image_unmerged_and_merged(tmp_path):
    targets, _ = resolve_targets([suites_root() / "quick-image" / "lora" / "flux2-klein-default"])
    settings = {"runs": 1, "warmup_runs": 1, "prompts_per_category": 1, "modes": ["merged", "mixed"]}
    (outcome,) = [o for o in measure_all(targets, task_name="image-tiny", results_dir=tmp_path,
                                         overrides={"num_inference_steps": 2}, settings_overrides=settings,
                                         num_threads=1, force=False) if o.label != "base model"]
    lora = outcome.result
    assert lora.status == "success", lora.error_msg
    for mode in ("unmerged", "merged"):
        image = lora.modes[mode]["batches"]["1"]["image"]
        assert image["seconds_per_image"] > 0 and image["num_inference_steps"] == 2 and image["base_inference_time_s"] > 0
    assert lora.modes["merged"]["parameters"] < lora.modes["unmerged"]["parameters"]
    assert lora.modes["mixed"] == {"supported": False, "reason": "mixed-adapter batches are measured for text generation only"}
    assert lora.headline_mode == "merged"


def test_a_failed_mixed_batch_leaves_no_peft_hooks_behind():
    # peft removes its adapter_names hooks only when the forward succeeds; DoRA's raises, and every later
    # forward (the converted and merged modes) then failed on the mixed batch's names
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from peftbench.inference.measure import _mixed
    from peftbench.inference.settings import InferenceSettings
    from peftbench.inference.targets import InferenceTarget
    from peftbench.tasks.math_tiny import shipped_model_path

    from transformers import AutoTokenizer

    config = LoraConfig(r=4, use_dora=True, target_modules=["q_proj"])
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(shipped_model_path()), config).eval()
    tokenizer = AutoTokenizer.from_pretrained(shipped_model_path())
    block = _mixed(InferenceTarget("/x", "lora", "dora", "untrained"), model, config, tokenizer,
                   torch.device("cpu"), InferenceSettings(batch_sizes=[1, 2]))
    assert block["supported"] is False and "DoRA" in block["reason"]
    assert list(model.peft_config) == ["default"]  # the second tenant is gone with the refusal
    assert model(input_ids=torch.tensor([[1, 5, 6]])).logits.shape[0] == 1  # a later forward of another batch size works


def test_results_go_beside_the_training_results_they_join(tmp_path):
    from peftbench.inference.targets import default_results_dir

    checkpoint = tmp_path / "quick" / "checkpoints" / "lora--rank16"
    checkpoint.mkdir(parents=True)
    assert default_results_dir([tmp_path / "quick"], None, None) == (tmp_path / "quick").resolve()
    assert default_results_dir([checkpoint], None, None) == (tmp_path / "quick").resolve()
    assert default_results_dir([QUICK / "lora" / "rank16"], "quick", None) == Path("results") / "quick"
    assert default_results_dir([QUICK / "lora" / "rank16"], None, None) == Path("results")


PEFT_LAYOUT = Path(__file__).parent / "fixtures" / "inference" / "peft-layout" / "lora--lora_r8.json"


def test_a_result_file_of_peft_text_generation_benchmark_loads_through_the_same_reader(joined_results):
    # PEFT publishes no result of this benchmark; the fixture is built to its writer's layout
    # (utils.BenchmarkResult.to_dict), with made-up numbers
    from peftbench.analysis.points import build_points
    from peftbench.analysis.runs import load_results

    published = json.loads(PEFT_LAYOUT.read_text())
    result, problem = read_inference_file(PEFT_LAYOUT)
    assert problem is None and result.status == "success"
    assert (result.method, result.name, result.model_id) == ("lora", "lora_r8", "meta-llama/Llama-3.2-3B")
    assert result.headline_mode == "unmerged" and result.within_noise is None  # PEFT reports no spread
    assert result.inference_overhead_pct == pytest.approx(published["generation_info"]["overall"]["inference_overhead_pct"])
    for category, entry in published["generation_info"]["by_category"].items():
        figures = result.modes["unmerged"]["batches"]["1"][category]
        assert figures["overhead_pct"] == pytest.approx(entry["metrics"]["inference_overhead_pct"])
        assert figures["time_per_token_s"] == pytest.approx(entry["metrics"]["time_per_token"])
    assert result.trainable_params == published["meta_info"]["parameters"]["trainable_params"]
    assert result.hardware["name"] == published["run_info"]["hardware"]["accelerator_type"]

    # beside a training result, the analysis joins it as it joins peftbench's own
    shutil.copy(PEFT_LAYOUT, inference_path(joined_results, "ia3--default--seed0"))
    points = {p.experiment_name: p for p in build_points(load_results([joined_results]).runs)[0]}
    assert points["ia3/default"].mean("inference_overhead") == pytest.approx(result.inference_overhead_pct)
    assert points["ia3/default"].serving_mode == "unmerged"


def test_a_file_that_is_no_inference_result_says_which_layouts_are_read(tmp_path):
    path = tmp_path / "lora--x.json"
    path.write_text(json.dumps({"run_info": {}, "train_info": {}}))
    result, problem = read_inference_file(path)
    assert result is None and "text_generation_benchmark" in problem and str(path) in problem
