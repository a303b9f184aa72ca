"""The validity protocol's statistics and `peftbench validate --results` on result files written here (no training)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from peftbench.cli import app
from peftbench.config import ConfigError
from peftbench.results.record import RunResult
from peftbench.results.writer import result_document, write_json_atomic
from peftbench.validity.agreement import CHOOSE, REPORT, half_of, noise_ceiling, rank_agreement
from peftbench.validity.protocol import PUBLISHED_METAMATHQA, RECIPE_FILE, Recipe, claim_results_folder


@pytest.mark.parametrize("noise", [0.1, 0.5, 1.0, 3.0])
def test_bootstrap_interval_contains_the_point_estimate(noise):
    rng = np.random.default_rng(int(noise * 10))
    truth = rng.normal(size=40)
    agreement = rank_agreement(truth + rng.normal(scale=noise, size=40), truth, n_resamples=500)
    for interval in (agreement.spearman, agreement.kendall):
        assert interval.low <= interval.value <= interval.high
        assert interval.low < interval.high
    assert agreement.n == 40 and agreement.resamples_used == 500


def test_agreement_of_identical_orders_is_one_and_of_reversed_ones_minus_one():
    scores = [0.1, 0.3, 0.2, 0.5, 0.4]
    assert rank_agreement(scores, scores, n_resamples=200).spearman.value == pytest.approx(1.0)
    reversed_ = rank_agreement(scores, [-s for s in scores], n_resamples=200)
    assert reversed_.spearman.value == pytest.approx(-1.0) and reversed_.kendall.value == pytest.approx(-1.0)


def test_agreement_is_undefined_without_variation_and_with_under_three_configs():
    assert np.isnan(rank_agreement([0, 0, 0, 0], [1, 2, 3, 4], n_resamples=50).spearman.value)
    assert np.isnan(rank_agreement([1, 2], [1, 2], n_resamples=50).kendall.value)


def synthetic_runs(n_configs: int, seeds: int, noise: float, seed: int = 0) -> dict[str, dict[int, float]]:
    """Configs of true quality ~ N(0, 1); each seed's score adds independent N(0, noise^2)."""
    rng = np.random.default_rng(seed)
    quality = rng.normal(size=n_configs)
    return {f"m{i}/c": {s: float(quality[i] + rng.normal(scale=noise)) for s in range(seeds)} for i in range(n_configs)}


def test_noise_ceiling_follows_the_known_ratio_of_seed_noise_to_spread():
    # Split-half correlation of one-seed halves: var(q) / (var(q) + noise^2); Spearman of normal data is
    # (6 / pi) asin(r / 2). noise 1 -> r = 0.5 -> Spearman 0.483.
    ceiling = noise_ceiling(synthetic_runs(200, 2, noise=1.0), n_resamples=300)
    assert ceiling.halves == ((0,), (1,))
    expected = 6 / np.pi * np.arcsin(0.5 / 2)
    assert ceiling.agreement.spearman.low < expected < ceiling.agreement.spearman.high
    assert abs(ceiling.agreement.spearman.value - expected) < 0.15
    assert ceiling.mean_of_all_seeds > ceiling.agreement.spearman.value  # two seeds' mean is more reliable


def test_noise_ceiling_is_near_one_without_noise_and_near_zero_when_noise_dominates():
    assert noise_ceiling(synthetic_runs(60, 4, noise=0.01), n_resamples=200).agreement.spearman.value > 0.99
    drowned = noise_ceiling(synthetic_runs(60, 2, noise=30.0), n_resamples=200).agreement.spearman
    assert drowned.low < 0 < drowned.high


def test_noise_ceiling_halves_the_seeds_and_needs_two():
    ceiling = noise_ceiling(synthetic_runs(10, 4, noise=0.1), n_resamples=50)
    assert ceiling.halves == ((0, 2), (1, 3))
    assert noise_ceiling(synthetic_runs(10, 1, noise=0.1)) is None


def test_the_method_split_is_fixed_by_name_and_splits_the_published_methods():
    methods = sorted({path.name.split("--")[0] for path in PUBLISHED_METAMATHQA.glob("*.json")})
    halves = {method: half_of(method) for method in methods}
    assert halves == {method: half_of(method) for method in reversed(methods)}  # no state, no order effect
    assert {CHOOSE, REPORT} == set(halves.values())
    # the documented split (docs/validity.md): changing it would let recipe choices leak into the report half
    assert (half_of("lora"), half_of("ia3"), half_of("oft"), half_of("full-finetuning")) == DOCUMENTED_HALVES


DOCUMENTED_HALVES = (REPORT, CHOOSE, REPORT, REPORT)


def write_run(folder: Path, method: str, name: str, seed: int, score: float | None, status: str = "success",
              final_loss: float | None = None) -> None:
    """A result file; its training curve falls from 2.0 to `final_loss` (default: 1 - score) over 10 steps, which
    is its final train loss."""
    end = final_loss if final_loss is not None else None if score is None else 1 - score
    curve = [] if end is None else [{"step": step, "loss": 2.0 + (end - 2.0) * step / 10} for step in range(1, 11)]
    result = RunResult(task="math-tiny", method=method, name=name, seed=seed, status=status, test_score=score,
                       total_time_s=10.0, extra={"cpu_time_s": 5.0}, train_curve=curve,
                       final_train_loss=end if status == "success" else None)
    write_json_atomic(folder / f"{method}--{name}--seed{seed}.json", result_document(result))


def reference_configs() -> list[tuple[str, str, float]]:
    """Six published configs, best first."""
    found = []
    for path in sorted(PUBLISHED_METAMATHQA.glob("*.json")):
        data = json.loads(path.read_text())
        method, name = path.stem.split("--", 1)
        found.append((method, name, data["train_info"]["metrics"][-1]["test accuracy"]))
    found.sort(key=lambda item: -item[2])
    return found[:40:7][:6]


def test_validate_results_reads_offline_runs_against_the_published_ones(tmp_path):
    configs = reference_configs()
    reference = tmp_path / "reference"
    reference.mkdir()
    for method, name, _ in configs:
        shutil.copy(PUBLISHED_METAMATHQA / f"{method}--{name}.json", reference)
    offline = tmp_path / "offline"
    offline.mkdir()
    for rank, (method, name, _) in enumerate(configs):  # the published order, and small seed noise
        write_run(offline, method, name, 0, 0.5 - 0.05 * rank)
        write_run(offline, method, name, 1, 0.5 - 0.05 * rank + 0.01)
    write_run(offline, "lora", "not-published", 0, 0.9)
    write_run(offline, configs[0][0], configs[0][1], 2, None, status="failed")

    output = CliRunner().invoke(app, ["validate", "--results", str(offline), "--reference", str(reference), "--json"])
    assert output.exit_code == 0, output.output
    report = json.loads(output.output)
    assert report["n_configs"] == 6 and report["n_learn"] == 6
    assert report["agreement"]["all"]["both"]["spearman"]["value"] == pytest.approx(1.0)
    assert report["agreement"]["all"]["both"]["n"] == 6
    halves = report["agreement"]["all"]
    assert halves[CHOOSE]["n"] + halves[REPORT]["n"] == 6
    assert report["noise_ceiling"]["all"]["spearman"]["value"] == pytest.approx(1.0)
    assert report["noise_ceiling"]["all"]["seed_halves"] == [[0], [1]]  # the failed seed-2 run has no score
    assert report["seed_noise"]["all"]["median_sd"] == pytest.approx(np.std([0.5, 0.51], ddof=1), abs=1e-6)
    assert report["unmatched"] == ["lora/not-published"]
    assert list(report["not_scored"]) == [f"{configs[0][0]}/{configs[0][1]} seed 2"]

    text = CliRunner().invoke(app, ["validate", "--results", str(offline), "--reference", str(reference), "--table"])
    assert text.exit_code == 0, text.output
    assert "noise ceiling" in text.output and "report half" in text.output and "| config |" in text.output


def test_validate_refuses_a_missing_folder_and_a_folder_of_another_recipe(tmp_path):
    missing = CliRunner().invoke(app, ["validate", "--results", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "no such folder" in missing.output
    claim_results_folder(tmp_path, Recipe(task="math-tiny", steps=120, seeds=(0,)))
    claim_results_folder(tmp_path, Recipe(task="math-tiny", steps=120, seeds=(1,)))  # more seeds: the same recipe
    assert json.loads((tmp_path / RECIPE_FILE).read_text())["seeds"] == [0, 1]
    with pytest.raises(ConfigError, match="another recipe"):
        claim_results_folder(tmp_path, Recipe(task="math-tiny", steps=240, seeds=(0,)))


def test_the_vectorized_resample_statistics_are_scipys():
    from scipy.stats import kendalltau, spearmanr

    from peftbench.validity.agreement import _statistics

    rng = np.random.default_rng(3)
    x = rng.integers(0, 5, size=(20, 12)).astype(float)  # many ties, as in resamples and in 0-scores
    y = rng.normal(size=(20, 12))
    expected = [(spearmanr(a, b).statistic, kendalltau(a, b).statistic) for a, b in zip(x, y)]
    assert np.allclose(_statistics(x, y), expected, equal_nan=True)


def test_report_prints_the_measured_validity_of_an_offline_task_and_nothing_for_others(tmp_path, monkeypatch):
    from peftbench.validity import notes

    offline, reference = tmp_path / "offline", tmp_path / "reference"
    offline.mkdir()
    reference.mkdir()
    configs = reference_configs()
    for rank, (method, name, _) in enumerate(configs):
        shutil.copy(PUBLISHED_METAMATHQA / f"{method}--{name}.json", reference)
        for seed in (0, 1):
            write_run(offline, method, name, seed, 0.5 - 0.05 * rank + 0.02 * seed * (rank % 2))
    saved = CliRunner().invoke(app, ["validate", "--results", str(offline), "--reference", str(reference), "--json"])
    measured = tmp_path / "measured"
    measured.mkdir()
    (measured / "math-tiny.json").write_text(saved.output)
    monkeypatch.setattr(notes, "MEASURED", measured)

    shown = CliRunner().invoke(app, ["report", str(offline)])
    assert shown.exit_code == 0, shown.output
    figures = json.loads(saved.output)
    expected = f"Spearman {figures['agreement']['all']['both']['spearman']['value']:.2f} ["
    line = " ".join(shown.output.split())
    assert "validity of math-tiny" in line and expected in line and "noise ceiling" in line
    assert notes.validity_notes(["image-tiny", "math"]) == []  # nothing measured for them


def test_math_tiny_ranks_by_the_final_training_loss_where_accuracy_is_zero_for_all(tmp_path):
    """Every config scores 0 on the test (accuracy cannot rank them), but their final training losses follow the
    published order: ranked by train_loss (math-tiny's default) they agree fully, by test not at all; "learns"
    stays a test-score matter. A diverged run counts its first step's loss (the untrained model's)."""
    configs = reference_configs()
    for rank, (method, name, _) in enumerate(configs):
        for seed in (0, 1):
            write_run(tmp_path, method, name, seed, 0.0, final_loss=0.5 + 0.1 * rank + 0.01 * seed)
    method, name, _ = configs[-1]
    write_run(tmp_path, method, name, 0, None, status="diverged", final_loss=0.1)  # starts at 2.0: worst

    def report(*options: str) -> dict:
        output = CliRunner().invoke(app, ["validate", "--results", str(tmp_path), "--json", *options])
        assert output.exit_code == 0, output.output
        return json.loads(output.output)

    by_loss, by_test = report(), report("--rank-by", "test")
    assert by_loss["rank_by"] == "train_loss" and by_test["rank_by"] == "test"
    assert by_loss["agreement"]["all"]["both"]["spearman"]["value"] == pytest.approx(1.0)
    assert by_test["agreement"]["all"]["both"]["spearman"]["value"] is None  # no variation: undefined
    assert by_loss["n_learn"] == by_test["n_learn"] == 0
    worst = next(c for c in by_loss["configs"] if c["config"] == f"{method}/{name}")
    assert worst["scores"]["0"] == pytest.approx(2.0 + (0.1 - 2.0) * 0.1)  # the first step's loss
    bad = CliRunner().invoke(app, ["validate", "--results", str(tmp_path), "--rank-by", "accuracy"])
    assert bad.exit_code == 2 and "--rank-by 'accuracy'; valid: test, train_loss" in bad.output


def test_validate_analyses_only_the_seeds_asked_for(tmp_path):
    configs = reference_configs()
    for rank, (method, name, _) in enumerate(configs):
        write_run(tmp_path, method, name, 0, 0.5 - 0.05 * rank)  # seed 0: the published order
        write_run(tmp_path, method, name, 1, 0.05 * rank)  # seed 1: reversed
    def spearman(*seeds: str) -> float:
        output = CliRunner().invoke(app, ["validate", "--results", str(tmp_path), "--json", *seeds])
        assert output.exit_code == 0, output.output
        return json.loads(output.output)["agreement"]["all"]["both"]["spearman"]["value"]
    assert spearman("--seeds", "0") == pytest.approx(1.0)
    assert spearman("--seeds", "1") == pytest.approx(-1.0)


def test_the_shipped_suite_configs_cover_every_published_result():
    """`validate --experiments published` runs the PEFT suite's configs shipped in the package: each published
    MetaMathQA result has its experiment folder there, with the suite's defaults beside experiments/."""
    import json

    from peftbench.validity.protocol import PUBLISHED_METAMATHQA, PUBLISHED_METAMATHQA_EXPERIMENTS, SUITE_DEFAULTS_FILE

    assert (PUBLISHED_METAMATHQA_EXPERIMENTS.parent / SUITE_DEFAULTS_FILE).is_file()
    for path in sorted(PUBLISHED_METAMATHQA.glob("*.json")):
        name = json.loads(path.read_text())["run_info"]["experiment_name"]  # "<method>/<config>"
        folder = PUBLISHED_METAMATHQA_EXPERIMENTS / name
        assert folder.is_dir(), name
        assert any((folder / file).is_file() for file in ("adapter_config.json", "training_params.json")), name


def test_a_task_without_reference_results_runs_every_shipped_config(tmp_path):
    """image-tiny has no reference results (PEFT's published image-gen results are kept aside): `validate
    --experiments published` plans every config of the shipped image-gen suite, each seed, with 12 images per
    test prompt, and refuses only a folder with nothing to run."""
    from peftbench.experiments import discover_experiments
    from peftbench.validity.protocol import Recipe, plan_runs, protocol_of, validate

    experiments = protocol_of("image-tiny").experiments
    folders = discover_experiments(experiments)
    assert len(folders) >= 30 and (experiments.parent / "default_training_params.json").is_file()
    requests = plan_runs(Recipe(task="image-tiny", seeds=(0, 1), lr_policy="configured"), experiments, tmp_path, None)
    assert len(requests) == 2 * len(folders)
    assert {Path(r.experiment_dir).name for r in requests} == {f.name for f in folders}
    assert all(r.overrides["test_repeats"] == 12 and "optimizer_kwargs" not in r.overrides for r in requests)
    # the protocol ranks test figures: no drift or sample images
    assert all(r.overrides["drift_image_prompts"] == [] == r.overrides["sample_image_prompts"] for r in requests)
    with pytest.raises(ConfigError, match="no config there matching --only nothing-like-this"):
        validate("image-tiny", tmp_path / "runs", experiments=experiments, only=["nothing-like-this"])
