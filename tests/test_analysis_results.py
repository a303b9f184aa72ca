"""Reading result files (published, peftbench's own, image-gen, hostile) and grouping seeds into points."""

from __future__ import annotations

from pathlib import Path

import pytest

from peftbench.analysis.comparison import compare_results
from peftbench.analysis.noise import compare
from peftbench.analysis.metrics import get_metric
from peftbench.analysis.points import build_points
from peftbench.analysis.runs import load_results

RESULTS = Path(__file__).parent / "fixtures" / "results"


def test_published_layout_maps_to_friendly_metrics():
    loaded = load_results([RESULTS / "published" / "lora--llama-3.2-3B-rank32.json"])
    (run,) = loaded.runs
    assert not loaded.warnings
    result = run.result
    assert (result.experiment_name, result.method, result.name) == ("lora/llama-3.2-3B-rank32", "lora", "llama-3.2-3B-rank32")
    assert (result.task, result.peft_type, run.seed, run.source) == ("math", "LORA", 0, "peft-suite")
    assert run.metrics["test_score"] == pytest.approx(0.4783927217589083)
    # the suite's accelerator_memory_max is reserved memory of the whole run, never the tensor-level peak
    assert run.metrics["peak_memory_total"] == 22292725760
    assert run.metrics["peak_memory"] is None and run.metrics["peak_memory_process"] is None
    assert run.metrics["forgetting"] == pytest.approx(0.04995572566986084)
    assert run.metrics["file_size"] == 36715216 and run.metrics["trainable_params"] == 9175040
    assert run.metrics["train_time"] == pytest.approx(941.9589897260084)
    assert len(run.train_curve) == 21 and len(run.valid_curve) == 20
    (full,) = load_results([RESULTS / "published" / "full-finetuning--llama-3.2-3B-lr_0.00001.json"]).runs
    assert full.result.peft_type == "full-finetuning" and full.learning_rate == pytest.approx(1e-5)


def test_image_generation_layout_uses_dino_similarity_and_drift():
    loaded = load_results([RESULTS / "image-gen"])
    assert len(loaded.runs) == 4 and not loaded.warnings
    lora = next(r for r in loaded.runs if r.result.method == "lora")
    assert (lora.result.task, lora.result.score_name) == ("image-gen", "dino_similarity")
    assert lora.metrics["test_score"] == pytest.approx(0.71)
    assert lora.metrics["forgetting"] == pytest.approx(0.12)
    assert lora.metrics["valid_score"] == pytest.approx(0.69)
    comparison = compare_results(loaded)  # peak memory vs DINO similarity
    # boft uses the most memory and is beaten on similarity by lora and oft; oft saves more memory.
    assert set(comparison.pair.frontier.frontier) == {"lora/flux-rank16", "oft/flux-default", "ia3/flux-default"}
    assert comparison.pair.frontier.dominated_by["boft/flux-default"].by == "oft/flux-default"
    assert comparison.pair.frontier.dominated_by["boft/flux-default"].n_dominators == 2
    by_drift = compare_results(loaded, x="drift", y="test_score")  # boft's low drift keeps it on this one
    assert len(by_drift.pair.frontier.frontier) == 4


def test_published_and_peftbench_memory_never_share_an_axis():
    """peftbench's tensor-level peak and the PEFT suite's reserved memory are different metrics: shown together, the
    published runs are left out of a peak_memory frontier with a note naming their memory metric."""
    loaded = load_results([RESULTS / "peftbench", RESULTS / "published"])
    comparison = compare_results(loaded)
    assert comparison.x.name == "peak_memory" and comparison.x.label == "peak tensor memory"
    published = [p for p in comparison.points if p.task == "math"]
    assert published and all(p.name in comparison.pair.frontier.missing for p in published)
    notes = [str(w) for w in comparison.warnings if "published" in str(w.path)]
    assert len(notes) == 6 and all("its memory is peak_memory_total" in note for note in notes)
    # alone, published results are compared on the memory they have, under its own name
    alone = compare_results(load_results([RESULTS / "published"]))
    assert alone.x.name == "peak_memory_total" and not alone.pair.frontier.missing


def test_peftbench_fields_seeds_and_conversions_group_into_points():
    loaded = load_results([RESULTS / "peftbench"])
    assert [p.name for p in loaded.ignored] == ["sweep-summary.json"]  # not a result file: ignored quietly
    assert not loaded.warnings
    points, warnings = build_points(loaded.runs)
    by_name = {p.name: p for p in points}
    assert set(by_name) == {"lora/rank8", "vera/default", "ia3/default", "oft/rank8", "lora/rank8 -> LoRA r4"}
    lora = by_name["lora/rank8"]
    assert lora.seeds == [0, 1, 2] and lora.task == "math-tiny"
    scores = [r.metrics["test_score"] for r in lora.runs]
    assert lora.mean("test_score") == pytest.approx(sum(scores) / 3)
    interval = lora.values["test_score"]
    assert interval.has_spread and interval.low <= interval.mean <= interval.high
    assert lora.per_item_correct is not None and lora.per_item_correct.shape == (120,)
    assert lora.mean("peak_memory") == pytest.approx(302 * 2**20)  # peak_memory_train_allocated_bytes
    assert lora.mean("peak_memory_process") == pytest.approx(302 * 2**20)  # peak_memory_train_bytes, not total
    assert by_name["oft/rank8"].noise_note == "single run (item-level noise only)"


def test_repeated_seed_is_counted_once(tmp_path):
    source = RESULTS / "peftbench" / "lora--rank8--seed0.json"
    (tmp_path / "a.json").write_text(source.read_text())
    (tmp_path / "b.json").write_text(source.read_text())
    points, warnings = build_points(load_results([tmp_path]).runs)
    assert len(points) == 1 and len(points[0].runs) == 1
    assert len(warnings) == 1 and "counted once" in warnings[0].message


def test_sweep_search_trials_and_tuned_seeds_are_separate_points(tmp_path):
    import json

    base = json.loads((RESULTS / "peftbench" / "lora--rank8--seed0.json").read_text())
    for lr, role, seed in [(1e-3, "trial", 0), (3e-3, "trial", 0), (3e-3, "seed", 1), (3e-3, "seed", 2)]:
        base["peftbench"]["seed"] = seed
        base["peftbench"]["sweep"] = {"sweep_id": "s", "role": role, "lr": lr}
        (tmp_path / f"lora--rank8--lr{lr}--{role}{seed}.json").write_text(json.dumps(base))
    points, _ = build_points(load_results([tmp_path]).runs)
    names = {p.name: len(p.runs) for p in points}
    assert names == {"lora/rank8 lr=0.001": 1, "lora/rank8 lr=0.003": 1, "lora/rank8 tuned lr=0.003": 2}


def test_hostile_files_give_one_warning_line_each_and_never_crash():
    loaded = load_results([RESULTS / "hostile"])
    comparison = compare_results(loaded)
    by_file = {w.path.name: w.message for w in comparison.warnings}
    assert len(by_file) == len(comparison.warnings)  # one line per file
    assert "malformed JSON" in by_file["malformed.json"]
    assert "malformed JSON" in by_file["empty.json"]
    assert "not UTF-8" in by_file["not-utf8.json"]
    assert "status 'failed'" in by_file["failed-status.json"] and "CUDA out of memory" in by_file["failed-status.json"]
    assert "no test_score" in by_file["missing-metric.json"]
    assert "not a finite number" in by_file["nan-score.json"] and "no test_score" in by_file["nan-score.json"]
    assert "'big', not a number" in by_file["wrong-types.json"]
    assert "not a finite number" in by_file["wrong-types.json"]  # a 400-digit integer
    assert "not a list" in by_file["metrics-not-list.json"]
    assert "no train_info" in by_file["no-train-info.json"]
    assert [p.name for p in comparison.ignored] == ["list-top-level.json"]
    names = {p.name for p in comparison.points}
    # usable despite its bad fields: the file-size problem only leaves it out of what needs file size
    assert "lora/wrong-types" in names
    assert "lora/wrong-types" not in comparison.pair.frontier.missing
    assert "<img src=x onerror=alert(1)>" in comparison.pair.frontier.frontier


def test_noise_verdicts_use_the_best_evidence():
    points, _ = build_points(load_results([RESULTS / "peftbench"]).runs)
    by_name = {p.name: p for p in points}
    score, memory, size = get_metric("test_score"), get_metric("peak_memory"), get_metric("file_size")
    lora, vera, ia3 = by_name["lora/rank8"], by_name["vera/default"], by_name["ia3/default"]
    assert compare(lora, vera, score).how == "paired bootstrap over test items"
    assert compare(lora, vera, score).verdict == "noise"  # vera repeats most of lora's answers
    assert compare(lora, ia3, score).verdict == "clear"
    assert compare(lora, vera, size) .verdict == "clear"  # exact measurement
    assert compare(lora, vera, memory).how == "seed confidence intervals"


def test_frontier_marks_points_that_lead_only_within_noise():
    comparison = compare_results(load_results([RESULTS / "peftbench"]))
    frontier = comparison.pair.frontier.frontier
    assert "vera/default" in frontier and "ia3/default" in frontier
    # vera's only edge over lora is 4 MiB of memory, inside the seeds' spread: within noise.
    assert comparison.pair.within_noise["vera/default"] == "lora/rank8"
    assert "ia3/default" not in comparison.pair.within_noise  # its memory edge is real
    assert comparison.noise_summary.startswith("Seeds aggregated")


def test_single_published_runs_say_noise_is_not_measured():
    comparison = compare_results(load_results([RESULTS / "published"]))
    assert comparison.all_single_runs
    assert "noise is not measured" in comparison.noise_summary
    assert comparison.pair.within_noise == {}  # unknown noise is never called "within noise"


def test_point_fields_are_the_documented_filter_names():
    from peftbench.analysis.points import FILTER_FIELDS

    points, _ = build_points(load_results([RESULTS / "peftbench"]).runs)
    assert set(points[0].fields()) == FILTER_FIELDS


def test_every_metric_reads_a_field_that_exists():
    """A metric is one line naming its source: a typo there would make the axis silently empty."""
    from dataclasses import fields

    from peftbench.analysis.metrics import METRICS
    from peftbench.results.inference_record import InferenceResult
    from peftbench.results.record import RunResult

    roots = {"result": {f.name for f in fields(RunResult)}, "inference": {f.name for f in fields(InferenceResult)}}
    for metric in METRICS.values():
        assert metric.sources, f"{metric.name} names no source"
        for source in metric.sources:
            root, field_name, *_ = source.split(".")
            assert field_name in roots.get(root, ()), f"{metric.name}: {source} names no field of the run"
