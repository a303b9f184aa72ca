"""The method catalog (`peftbench methods`): findings tried on tiny models and checked against peft directly, the
cache per peft version, a crashing method, filters, the JSON, the published ratings and the usage snippets."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from peftbench.catalog import survey
from peftbench.catalog.benchmarks import published_results_dir
from peftbench.catalog.capabilities import CAPABILITY_NAMES, NO, NOT_TRIED, STATUSES, YES, Finding
from peftbench.catalog.probe import SAME_OUTPUTS_TOLERANCE, _TinyLlama, method_info, probe_method
from peftbench.cli import app
from test_report_html import browser, watched_page  # noqa: F401 - the report test's chromium fixture, shared


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv(survey.CACHE_DIR_ENV, str(tmp_path / "cache"))


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _trained(model, seed: int):
    """Every trainable parameter of the model's active adapter moved by seeded noise: a non-identity adapter."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model


def _two_trained_adapters(make_config):
    """The tiny Llama with adapters 'default' and 'other' (both moved off their init), 'default' active; an
    input and each adapter's logits on it."""
    from peft import get_peft_model

    base = _TinyLlama.fresh()
    input_ids = torch.randint(0, base.config.vocab_size, (1, 6), generator=torch.Generator().manual_seed(3))
    model = _trained(get_peft_model(base, make_config()), seed=1)
    model.add_adapter("other", make_config())
    model.set_adapter("other")
    _trained(model, seed=2)
    model.eval()
    with torch.no_grad():
        other = model(input_ids=input_ids).logits
        model.set_adapter("default")
        default = model(input_ids=input_ids).logits
    assert _relative(default, other) > 1e-2  # two different adapters, so the checks that follow can fail
    return model, input_ids, default, other


@pytest.fixture(scope="module")
def lora_probe():
    return probe_method("LORA")


def test_lora_probe_finds_merge_mixed_batch_and_conversion(lora_probe):
    findings = lora_probe["findings"]
    assert set(findings) == set(CAPABILITY_NAMES)
    for capability in ("trains", "save-reload", "merge", "multi-adapter", "mixed-batch", "hot-swap", "convert-lora",
                       "mix-methods", "modules-to-save", "layer:linear", "layer:conv2d", "layer:embedding"):
        assert findings[capability]["status"] == YES, (capability, findings[capability])
    assert "relative logits error" in findings["convert-lora"]["why"]
    assert lora_probe["paper"].startswith("https://")
    assert "LoRA" in lora_probe["description"]


def test_a_quantized_base_is_tried_with_the_cpu_backend_and_peft_agrees(lora_probe):
    # torchao comes with the dev extra (pyproject.toml), which `make test` installs
    pytest.importorskip("torchao")
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora.torchao import TorchaoLoraLinear

    from peftbench.catalog.probe import quantized_tiny_llama

    finding = lora_probe["findings"]["quantized:torchao"]
    assert finding["status"] == YES and "torchao int8" in finding["how"], finding
    # peft itself: on the quantized base, LoRA's layer is its torchao layer, and training reaches it
    base = quantized_tiny_llama("torchao")
    model = get_peft_model(base, LoraConfig(target_modules=["q_proj"], init_lora_weights=False))
    assert isinstance(model.base_model.model.model.layers[0].self_attn.q_proj, TorchaoLoraLinear)
    ids = torch.randint(0, base.config.vocab_size, (2, 6), generator=torch.Generator().manual_seed(0))
    model(input_ids=ids, labels=ids).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters() if p.requires_grad)
    # a method that refuses the quantized weights is a "no" with peft's error, and peft directly agrees
    from peftbench.catalog.probe import _probe_quantized, default_config

    for peft_type in ("OFT", "HRA"):
        finding = _probe_quantized(peft_type, "torchao")
        try:
            direct = get_peft_model(quantized_tiny_llama("torchao"), default_config(peft_type))
            direct(input_ids=ids, labels=ids).loss.backward()
            trained = any(p.grad is not None and p.grad.abs().sum() > 0 for p in direct.parameters() if p.requires_grad)
        except Exception as error:  # noqa: BLE001 - peft's refusal is what the finding must say
            trained = False
            assert finding.status == NO and type(error).__name__ in finding.why, (peft_type, finding)
        assert (finding.status == YES) == trained, (peft_type, finding)
    # the backends that need an accelerator are never claimed
    for backend in ("bnb-4bit", "bnb-8bit", "hqq", "gptq"):
        assert lora_probe["findings"][f"quantized:{backend}"]["status"] == NOT_TRIED


def test_a_backend_that_is_not_installed_is_not_tried_and_named(monkeypatch):
    from peftbench.catalog import probe

    real_find_spec = probe.importlib.util.find_spec
    monkeypatch.setattr(probe.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("torchao", "bitsandbytes") else real_find_spec(name, *a))
    assert probe._probe_quantized("LORA", "torchao") == Finding(NOT_TRIED, "backend torchao not installed", "")
    assert probe._probe_quantized("LORA", "bnb-4bit") == Finding(NOT_TRIED, "backend bitsandbytes not installed", "")


def test_lora_merge_and_mixed_batch_hold_in_peft_directly():
    """The claims, checked without the probe's code: merged outputs equal unmerged ones, and a mixed batch's rows
    equal each adapter alone."""
    from peft import LoraConfig

    model, input_ids, default, other = _two_trained_adapters(lambda: LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        mixed = model(input_ids=input_ids.repeat(2, 1), adapter_names=["default", "other"]).logits
        assert _relative(mixed[:1], default) < SAME_OUTPUTS_TOLERANCE
        assert _relative(mixed[1:], other) < SAME_OUTPUTS_TOLERANCE
        model.merge_adapter()
        assert _relative(model(input_ids=input_ids).logits, default) < SAME_OUTPUTS_TOLERANCE


def test_prompt_tuning_cannot_merge_and_peft_agrees():
    from peft import PromptTuningConfig, get_peft_model

    findings = probe_method("PROMPT_TUNING")["findings"]
    assert findings["trains"]["status"] == YES
    assert findings["merge"]["status"] == NO and findings["merge"]["why"]
    assert findings["convert-lora"]["status"] == NO
    assert findings["layer:conv2d"]["status"] == NO
    model = get_peft_model(_TinyLlama.fresh(), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    with pytest.raises(AttributeError):
        model.merge_adapter()


def test_ia3_mixed_batch_is_no_and_peft_serves_the_wrong_adapter():
    """IA3 accepts `adapter_names` without error, but a row does not get its adapter: a "yes" would be wrong."""
    from peft import IA3Config

    findings = probe_method("IA3")["findings"]
    assert findings["merge"]["status"] == YES
    assert findings["mixed-batch"]["status"] == NO
    model, input_ids, _default, other = _two_trained_adapters(IA3Config)
    with torch.no_grad():
        try:
            mixed = model(input_ids=input_ids.repeat(2, 1), adapter_names=["default", "other"]).logits
        except Exception:  # noqa: BLE001 - refusing is also "cannot"
            return
    assert _relative(mixed[1:], other) > SAME_OUTPUTS_TOLERANCE


def _fake_probe(peft_types, on_done=lambda _: None, workers=None):
    """Findings without probing, from peft's real descriptions: LoRA can do everything, OFT merges and targets
    conv2d but serves no mixed batch, IA3 merges only; everything else nothing."""
    can = {"LORA": set(CAPABILITY_NAMES), "OFT": {"merge", "layer:conv2d", "layer:linear"}, "IA3": {"merge"}}
    results = {}
    for peft_type in peft_types:
        findings = {name: Finding(YES if name in can.get(peft_type, ()) else NO, "fake", "test").to_json()
                    for name in CAPABILITY_NAMES}
        results[peft_type] = {**method_info(peft_type), "findings": findings, "seconds": 0.0}
        on_done(peft_type)
    return results


def test_cache_is_reused_and_invalidated_when_peft_changes(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(survey, "probe_in_children", lambda types, *a, **k: calls.append(list(types)) or _fake_probe(types))
    versions = {"peft": "0.21.2", "torch": "2.0", "transformers": "5.0", "probe": "x"}
    monkeypatch.setattr(survey, "probe_versions", lambda: dict(versions))
    first = survey.method_capabilities(["LORA", "IA3"])
    assert calls == [["LORA", "IA3"]] and first[2] is not None
    again = survey.method_capabilities(["LORA", "IA3"])
    assert calls == [["LORA", "IA3"]] and again[2] is None  # from the cache
    assert again[1] == first[1]
    versions["peft"] = "0.22.0"
    survey.method_capabilities(["LORA", "IA3"])
    assert calls[-1] == ["LORA", "IA3"]  # a new peft: probed again
    assert len(list((tmp_path / "cache").glob("method-capabilities-*.json"))) == 2
    survey.method_capabilities(["LORA", "IA3"], refresh=True)
    assert len(calls) == 3


def test_a_crashing_method_is_listed_with_its_error_and_the_others_still_probed(monkeypatch, tmp_path):
    """A child that dies in one method (as a segfault would) and a method whose probe raises."""
    child = tmp_path / "child.py"
    child.write_text(
        "import json, os, sys\n"
        "for peft_type in json.loads(sys.stdin.read()):\n"
        "    print(json.dumps({'started': peft_type}), flush=True)\n"
        "    if peft_type == 'IA3':\n"
        "        print('Fatal Python error: Segmentation fault', file=sys.stderr, flush=True)\n"
        "        os._exit(139)\n"
        "    if peft_type == 'OFT':\n"
        "        print(json.dumps({'failed': peft_type, 'error': 'RuntimeError: broken'}), flush=True)\n"
        "        continue\n"
        "    print(json.dumps({'finished': {'peft_type': peft_type, 'findings': {}}}), flush=True)\n"
    )
    monkeypatch.setattr(survey, "CHILD_COMMAND", [sys.executable, str(child)])
    results = survey.probe_in_children(["LORA", "IA3", "OFT", "VERA"], workers=1)
    assert list(results) == ["LORA", "IA3", "OFT", "VERA"]
    assert "exit code 139" in results["IA3"]["error"] and "Segmentation fault" in results["IA3"]["error"]
    assert results["OFT"]["error"] == "RuntimeError: broken"
    assert results["IA3"]["findings"]["merge"]["status"] == NOT_TRIED
    assert results["VERA"]["findings"] == {}  # probed by a fresh child after the crash
    assert "error" not in results["LORA"]


def test_a_method_peft_does_not_know_is_listed_with_the_real_childs_error():
    results = survey.probe_in_children(["NOT_A_METHOD"], workers=1)
    assert results["NOT_A_METHOD"]["error"].startswith("KeyError")


@pytest.fixture
def fake_catalog(monkeypatch):
    monkeypatch.setattr(survey, "probe_in_children", _fake_probe)


RESULTS = Path(__file__).parent / "fixtures" / "results"


def _cli(*args):
    return CliRunner().invoke(app, ["methods", *args], env={"COLUMNS": "300"})


def test_json_lists_every_registered_method_with_every_capability(fake_catalog):
    result = _cli("--json", "--no-published")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [m["peft_type"] for m in data["methods"]] == survey.registered_peft_types()
    from peftbench.catalog.capabilities import QUANTIZATION_BACKENDS

    # the libraries the findings depend on; a quantization backend only where it is installed
    assert {"peft", "torch", "transformers", "probe"} <= set(data["versions"])
    assert set(data["versions"]) - {"peft", "torch", "transformers", "probe"} <= set(QUANTIZATION_BACKENDS.values())
    for method in data["methods"]:
        assert set(method["capabilities"]) == set(CAPABILITY_NAMES)
        assert all(c["status"] in STATUSES for c in method["capabilities"].values())
        assert method["benchmarks"] == {}


def test_filters_keep_exactly_the_methods_that_can(fake_catalog):
    def names(*args):
        result = _cli("--json", "--no-published", *args)
        assert result.exit_code == 0, result.output
        return [m["name"] for m in json.loads(result.stdout)["methods"]]

    assert set(names("--can", "merge")) == {"lora", "ia3", "oft"}
    assert set(names("--can", "merge", "--layer", "conv2d")) == {"lora", "oft"}
    assert names("--can", "merge,mixed-batch", "--layer", "conv2d") == ["lora"]
    assert names("--quantized", "4bit") == ["lora"]
    bad = _cli("--can", "teleport")
    assert bad.exit_code == 2 and "unknown capability 'teleport'" in bad.output and "mixed-batch" in bad.output


def _published_best_runs() -> dict[str, dict[str, float]]:
    """Each peft type's best published run by test accuracy, as the PEFT shop's load_benchmark_results keeps it,
    read from the files independently of peftbench's reader: {peft type: {peftbench metric: value}}."""
    best: dict[str, dict[str, float]] = {}
    for path in sorted(published_results_dir().glob("*.json")):
        data = json.loads(path.read_text())
        train_info = data["train_info"]
        if train_info["status"] != "success":
            continue
        config = data["run_info"]["peft_config"]
        peft_type = config["peft_type"] if config else "full-finetuning"
        last = train_info["metrics"][-1]
        run = {"test_score": last["test accuracy"], "forgetting": last["forgetting"],
               "peak_memory_total": train_info["accelerator_memory_max"], "train_time": train_info["train_time"],
               "file_size": train_info["file_size"]}
        if peft_type not in best or run["test_score"] > best[peft_type]["test_score"]:
            best[peft_type] = run
    return best


def _shop_stars(values: dict[str, float], higher_is_better: bool) -> dict[str, int]:
    """The PEFT shop's benchmark_stars, written out as it is: rank = how many others are strictly better."""
    stars = {}
    for key, value in values.items():
        rank = sum(other > value if higher_is_better else other < value for other in values.values())
        stars[key] = 5 - int(5 * rank / len(values))
    return stars


def test_ratings_are_the_published_scores_quantiles(fake_catalog):
    result = _cli("--json")
    data = json.loads(result.stdout)
    published = next(b for b in data["benchmarks"] if b["published"])
    runs = _published_best_runs()
    reference = runs.pop("full-finetuning")  # the reference, never ranked
    assert published["full_finetuning"]["values"]["test_score"] == pytest.approx(reference["test_score"])
    directions = {m["name"]: m["higher_is_better"] for m in published["metrics"]}
    assert set(directions) == {"test_score", "forgetting", "peak_memory_total", "train_time", "file_size"}  # the shop's
    assert directions["test_score"] and not any(v for k, v in directions.items() if k != "test_score")
    for metric, higher_is_better in directions.items():
        expected = _shop_stars({t: run[metric] for t, run in runs.items()}, higher_is_better)
        for peft_type, run in runs.items():
            assert published["methods"][peft_type]["values"][metric] == pytest.approx(run[metric]), (peft_type, metric)
            assert published["methods"][peft_type]["stars"][metric] == expected[peft_type], (peft_type, metric)
    lora = next(m for m in data["methods"] if m["name"] == "lora")
    assert lora["benchmarks"]["math (published)"]["stars"]["test_score"] == 5
    cpt = next(m for m in data["methods"] if m["name"] == "cpt")
    assert cpt["benchmarks"]["math (published)"] is None  # never benchmarked here


def test_table_says_never_benchmarked_and_warns_once_per_unreadable_file(fake_catalog, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "broken.json").write_text("{not json")
    result = _cli(str(results))
    assert result.exit_code == 0, result.output
    assert "never benchmarked here" in result.output
    assert result.output.count("broken.json") == 1


def test_compare_snippets_run_as_printed(fake_catalog, tmp_path):
    """On a benchmark run on the shipped tiny Llama the snippets build and run as printed; on the published one,
    they name its base model and its best config."""
    from peftbench.tasks.math_tiny import shipped_model_path

    results = tmp_path / "results"
    results.mkdir()
    for source in (RESULTS / "peftbench").glob("*--seed0.json"):  # lora, ia3, vera: run on the tiny Llama
        data = json.loads(source.read_text())
        data["meta_info"]["model_info"] = {"model_id": str(shipped_model_path())}
        if data["run_info"]["peft_config"]["peft_type"] == "LORA":  # untrusted: only the class's own fields count
            data["run_info"]["peft_config"].update({"r": 4, "target_modules": ["q_proj"], "lora_alpha": 16,
                                                    "__import__('os').system('x')": 1, "not_a_field": 2})
        (results / source.name).write_text(json.dumps(data))
    result = _cli(str(results), "--no-published", "--compare", "lora,ia3,prompt_tuning", "--json")
    assert result.exit_code == 0, result.output
    snippets = json.loads(result.stdout)["snippets"]
    assert "LoraConfig(r=4, target_modules=['q_proj'], lora_alpha=16))" in snippets["lora"]
    assert "math-tiny: lora/rank8" in snippets["lora"]
    for name, snippet in snippets.items():
        namespace: dict = {}
        exec(compile(snippet, f"<{name} snippet>", "exec"), namespace)  # noqa: S102 - our own printed code
        model = namespace["model"]
        assert model.peft_config["default"].peft_type.value == name.upper()
        model(input_ids=torch.tensor([[1, 2, 3]]))  # built for this base model: it runs

    published = json.loads(_cli("--compare", "lora", "--json").stdout)
    best_lora = published["methods"][0]["benchmarks"]["math (published)"]  # the best published LoRA config
    assert best_lora["experiment"] in published["snippets"]["lora"]
    assert "from_pretrained('meta-llama/Llama-3.2-3B')" in published["snippets"]["lora"]
    assert f"LoraConfig(task_type='CAUSAL_LM', r={best_lora['peft_config']['r']}," in published["snippets"]["lora"]
    text = _cli("--compare", "lora,oft")
    assert text.exit_code == 0 and "get_peft_model(model, OFTConfig(" in text.output
    unknown = _cli("--compare", "lora,nope")
    assert unknown.exit_code == 2 and "nope" in unknown.output


def test_recommend_must_keeps_only_methods_that_can(fake_catalog):
    fixture = RESULTS / "peftbench"
    result = CliRunner().invoke(app, ["recommend", str(fixture), "--must", "mixed-batch", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["best"].startswith("lora") and data["ranking"] and all(r["name"].startswith("lora") for r in data["ranking"])
    excluded = dict((e["name"].split("/")[0], e["why"]) for e in data["excluded"])
    assert {"vera", "ia3", "oft"} <= set(excluded)
    assert "cannot mixed-batch: no (fake)" in excluded["vera"]
    assert any(reason.startswith("only methods that can mixed-batch") for reason in data["reasons"])
    merge = json.loads(CliRunner().invoke(app, ["recommend", str(fixture), "--must", "merge", "--json"]).stdout)
    assert {r["name"].split("/")[0] for r in merge["ranking"]} == {"lora", "ia3", "oft"}
    nobody = CliRunner().invoke(app, ["recommend", str(fixture), "--must", "hot-swap,trains", "--filter", "method != 'lora'"])
    assert nobody.exit_code == 1 and "no method among the results can hot-swap and trains" in nobody.output
    bad = CliRunner().invoke(app, ["recommend", str(fixture), "--must", "fly"])
    assert bad.exit_code == 2 and "unknown capability 'fly'" in bad.output


def test_html_catalog_filters_in_a_real_browser(fake_catalog, tmp_path, browser):
    """The report's catalog section in chromium: one row per method, capability checkboxes and the search box
    filter the rows, and a capability cell gives its reason."""
    import io

    from rich.console import Console

    from peftbench.catalog.catalog import build_catalog
    from peftbench.reporting import render_report

    fixture = RESULTS / "peftbench"
    path = tmp_path / "report.html"
    render_report([fixture], html=path, console=Console(file=io.StringIO()), catalog=build_catalog([fixture]))
    page, errors, dialogs, requests = watched_page(browser, path)
    page.wait_for_selector("#catalog-table tbody tr")
    rows = page.locator("#catalog-table tbody tr")
    assert rows.count() == len(survey.registered_peft_types())
    visible = lambda: page.locator("#catalog-table tbody tr:not([hidden]) td.name").all_text_contents()  # noqa: E731
    page.locator("#catalog-filters input[data-capability='merge']").check()
    assert sorted(visible()) == ["ia3", "lora", "oft"]
    page.locator("#catalog-filters input[data-capability='layer:conv2d']").check()
    assert sorted(visible()) == ["lora", "oft"]
    assert page.locator("#catalog-count").text_content() == f"2 of {rows.count()}"
    page.fill("#catalog-search", "orthogonal")
    assert visible() == ["oft"]
    page.locator("#catalog-table tr[data-method='oft'] td[data-capability='mixed-batch'] a").click()
    assert page.locator("#catalog-reason").text_content() == "oft, mixed batch: no (fake). How: test"
    lora_score = page.locator("#catalog-table tr[data-method='lora'] td").last.text_content()
    assert "★" in lora_score and page.locator("#catalog-table tr[data-method='cpt'] td").last.text_content() \
        == "never benchmarked here"
    assert not errors and not dialogs
    assert all(url.startswith(("file://", "data:", "about:")) for url in requests)


def test_an_unwritable_cache_warns_and_keeps_the_findings(monkeypatch, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv(survey.CACHE_DIR_ENV, str(blocker / "cache"))
    monkeypatch.setattr(survey, "probe_in_children", lambda types, *a, **k: _fake_probe(types))
    with pytest.warns(UserWarning, match="could not cache the method catalog's findings"):
        _versions, methods, _seconds = survey.method_capabilities(["LORA"])
    assert methods[0]["peft_type"] == "LORA" and methods[0]["findings"]["merge"]["status"] == YES


def test_best_point_and_stars_follow_the_score_direction():
    from types import SimpleNamespace

    from peftbench.analysis.metrics import get_metric, oriented
    from peftbench.catalog.benchmarks import _best, quantile_stars

    score = get_metric("test_score")
    points = [SimpleNamespace(name=name, mean=lambda _m, v=value: v) for name, value in
              [("zero", 0.0), ("negative", -0.5), ("none", None)]]
    assert _best(points, score).name == "zero"  # a score of 0.0 is a score, not a missing one
    assert _best(points, oriented(score, False)).name == "negative"
    values = {f"m{i}": float(i) for i in range(10)}
    stars = quantile_stars(values, score)
    assert [stars[f"m{i}"] for i in range(10)] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert quantile_stars({"a": 1.0, "b": 1.0, "c": 0.0}, score) == {"a": 5, "b": 5, "c": 2}


def test_a_batch_check_that_cannot_tell_adapters_apart_is_not_tried():
    """Adapters that leave the outputs as they are would pass a mixed-batch or hot-swap check vacuously."""
    from types import SimpleNamespace

    from peftbench.catalog.probe import _needs_two_distinct

    logits = torch.randn(2, 5, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    same = SimpleNamespace(logits=logits, base_logits=logits.clone())
    finding = _needs_two_distinct(same, logits.clone())
    assert finding.status == NOT_TRIED and "could not tell them apart" in finding.why
    apart = SimpleNamespace(logits=logits + 1, base_logits=logits)
    assert _needs_two_distinct(apart, logits - 1) is None


def test_a_task_name_is_printed_as_itself_not_as_markup(fake_catalog, tmp_path):
    data = json.loads((RESULTS / "peftbench" / "lora--rank8--seed0.json").read_text())
    data["peftbench"]["task"] = "[bold red]evil"
    (tmp_path / "lora.json").write_text(json.dumps(data))
    result = _cli(str(tmp_path), "--no-published")
    assert result.exit_code == 0, result.output
    assert "[bold red]evil: test score" in result.output


@pytest.mark.parametrize("peft_type", ["IA3", "LOHA"])
def test_mixing_with_lora_agrees_with_peft_s_own_list_of_mixable_methods(peft_type):
    """peft's mixed model refuses the tuners outside COMPATIBLE_TUNER_TYPES; the probe's verdict follows from
    trying, and must say the same."""
    from peft import PeftType
    from peft.tuners.mixed import COMPATIBLE_TUNER_TYPES

    from peftbench.catalog.probe import probe_method

    finding = probe_method(peft_type)["findings"]["mix-methods"]
    assert (finding["status"] == YES) == (PeftType(peft_type) in COMPATIBLE_TUNER_TYPES), finding


def test_serving_overhead_is_shown_beside_the_ratings_where_it_was_measured(fake_catalog, tmp_path):
    """An adapter that `peftbench infer` measured shows its overhead in its benchmark (unrated: the shop has no
    serving benchmark); one never measured has none, and a benchmark with no measurement has no such column."""
    import shutil

    from peftbench.results.inference_record import inference_path

    results = tmp_path / "results"
    results.mkdir()
    for source in (RESULTS / "peftbench").glob("*--seed0.json"):
        shutil.copy(source, results / source.name)
    measured = Path(__file__).parent / "fixtures" / "inference" / "peft-layout" / "lora--lora_r8.json"
    inference_path(results, "ia3--default--seed0").parent.mkdir()
    shutil.copy(measured, inference_path(results, "ia3--default--seed0"))
    data = json.loads(_cli(str(results), "--json").stdout)
    ours = next(b for b in data["benchmarks"] if not b["published"])
    assert "inference_overhead" in [m["name"] for m in ours["metrics"]]
    expected = json.loads(measured.read_text())["generation_info"]["overall"]["inference_overhead_pct"]
    assert ours["methods"]["IA3"]["values"]["inference_overhead"] == pytest.approx(expected)
    assert ours["methods"]["IA3"]["stars"].get("inference_overhead") is None
    assert ours["methods"]["LORA"]["values"]["inference_overhead"] is None
    published = next(b for b in data["benchmarks"] if b["published"])
    assert "inference_overhead" not in [m["name"] for m in published["metrics"]]
