"""One result model: the engine's RunResult is written by `result_document` and read back by the one reader,
field for field, from peftbench's files and from the PEFT suite's published ones."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest

from peftbench.results.reader import read_result_file
from peftbench.results.record import RunResult, peftbench_fields
from peftbench.results.writer import result_document, write_json_atomic

PUBLISHED = Path(__file__).parent / "fixtures" / "results" / "published"


def value_of_kind(name: str, hint) -> typing.Any:
    """A value of the field's declared kind, distinct per field, so that a mix-up of two fields shows."""
    arms = [a for a in typing.get_args(hint) if a is not type(None)] if typing.get_origin(hint) is typing.Union else [hint]
    kind = typing.get_origin(arms[0]) or arms[0]
    seed = sum(map(ord, name))
    return {int: seed, float: seed / 7, str: f"{name}-value", bool: seed % 2 == 0,
            list: [{"step": seed}], dict: {"key": name}}[kind]


def every_field_filled() -> RunResult:
    hints = typing.get_type_hints(RunResult)
    result = RunResult(status="success", method="lora", name="rank8", extra={"sweep": {"role": "trial"}})
    for f in peftbench_fields():
        if f.name not in ("status", "method", "name", "schema_version"):
            setattr(result, f.name, value_of_kind(f.name, hints[f.name]))
    return result


def test_every_peftbench_field_is_written_and_read_back_without_naming_it(tmp_path):
    """A field added to RunResult needs no writer or reader code: this covers every field there is."""
    written = every_field_filled()
    path = write_json_atomic(tmp_path / "lora--rank8.json", result_document(written))
    read = read_result_file(path)
    assert read.source == "peftbench" and not read.problems, read.problems
    for f in peftbench_fields():
        assert getattr(read.result, f.name) == getattr(written, f.name), f.name
    assert read.result.extra == written.extra
    assert json.loads(path.read_text())["peftbench"]["sweep"] == {"role": "trial"}  # extra: in the section


def test_the_suite_sections_are_written_in_the_published_layout_and_read_back(tmp_path):
    written = RunResult(status="success", method="lora", name="rank8", experiment_name="lora/rank8", steps=10,
                        test_score=0.5, final_train_loss=1.25, train_samples=40, train_tokens=4000, forgetting=0.01,
                        suite_train_time_s=12.0, train_time_s=10.0, checkpoint_size_bytes=1234,
                        peft_config={"peft_type": "LORA"}, train_config={"seed": 3}, memory_reserved_avg=7)
    document = result_document(written)
    assert document["train_info"]["metrics"][-1] == {"step": 10, "test accuracy": 0.5, "train loss": 1.25,
                                                     "train samples": 40, "train total tokens": 4000,
                                                     "forgetting": 0.01}
    assert document["train_info"]["train_time"] == 12.0 and document["train_info"]["file_size"] == 1234
    read = read_result_file(write_json_atomic(tmp_path / "r.json", document))
    for name in ("experiment_name", "final_train_loss", "train_samples", "suite_train_time_s", "peft_config",
                 "train_config", "memory_reserved_avg"):
        assert getattr(read.result, name) == getattr(written, name), name
    assert read.result.peft_type == "LORA"


def test_a_published_file_fills_the_same_record():
    path = PUBLISHED / "lora--llama-3.2-3B-rank32.json"
    data = json.loads(path.read_text())
    read = read_result_file(path)
    assert read.source == "peft-suite" and not read.problems
    result, final = read.result, data["train_info"]["metrics"][-1]
    assert result.status == "success" and result.experiment_name == "lora/llama-3.2-3B-rank32"
    assert result.test_score == final["test accuracy"] and result.forgetting == final["forgetting"]
    assert result.trainable_params == data["train_info"]["num_trainable_params"]
    assert result.peak_memory_total_bytes == data["train_info"]["accelerator_memory_max"]
    assert result.peft_type == "LORA" and result.task == "math"


def test_wrongly_typed_fields_are_left_out_naming_the_key(tmp_path):
    document = result_document(RunResult(status="success", method="lora", name="x", test_score=0.5))
    document["peftbench"].update(device=5, per_item_correct="many", test_score="high", hardware=[1])
    read = read_result_file(write_json_atomic(tmp_path / "r.json", document))
    assert read.result.device is None and read.result.per_item_correct == [] and read.result.hardware is None
    assert read.result.test_score == 0.5  # the suite's section still holds it
    problems = " ".join(read.problems)
    for expected in ("peftbench['device'] is 5, not a string", "peftbench['per_item_correct'] is 'many', not a list",
                     "peftbench['test_score'] is 'high', not a number"):
        assert expected in problems


@pytest.mark.parametrize(("content", "expected"), [
    (None, "missing"), ("{ truncated", "malformed JSON"), ("[1, 2]", "not a result"),
])
def test_unreadable_files_are_described_never_raised(tmp_path, content, expected):
    path = tmp_path / "r.json"
    if content is not None:
        path.write_text(content)
    read = read_result_file(path)
    assert read.result is None and read.status is None
    assert {"missing": read.missing, "malformed JSON": "malformed JSON" in (read.error or ""),
            "not a result": read.not_a_result}[expected]


def _package_in(site: Path, name: str) -> Path:
    """A package `name` under `site`, with a wheel's RECORD of its one file's sha256 (as pip installs it)."""
    import base64
    import hashlib

    package = site / name
    package.mkdir(parents=True)
    source = package / "__init__.py"
    source.write_text("VALUE = 1\n")
    digest = base64.urlsafe_b64encode(hashlib.sha256(source.read_bytes()).digest()).rstrip(b"=").decode()
    info = site / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "RECORD").write_text(f"{name}/__init__.py,sha256={digest},10\n{name}-1.0.dist-info/RECORD,,\n")
    return source


def test_an_installed_release_is_peft_s_detached_head_dirty_when_a_file_changed(tmp_path, monkeypatch):
    """The PEFT suite's `git rev-parse --abbrev-ref HEAD` on a checkout of a release tag says "HEAD"."""
    from peftbench.results.writer import package_checkout

    source = _package_in(tmp_path / "site-packages", "wheelpkg")
    monkeypatch.syspath_prepend(str(tmp_path / "site-packages"))
    assert package_checkout("wheelpkg") == ("HEAD", False)
    package_checkout.cache_clear()
    source.write_text("VALUE = 2\n")  # edited after installation
    assert package_checkout("wheelpkg") == ("HEAD", True)
    package_checkout.cache_clear()


def test_a_git_checkout_records_its_branch_and_whether_its_worktree_is_dirty(tmp_path, monkeypatch):
    import subprocess

    from peftbench.results.writer import package_checkout

    repository = tmp_path / "gitpkg-repo"
    source = _package_in(repository / "src", "gitpkg")

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repository, check=True,
                       capture_output=True)

    git("init", "-q", "-b", "my-feature")
    git("add", "-A")
    git("commit", "-qm", "one")
    monkeypatch.syspath_prepend(str(repository / "src"))
    assert package_checkout("gitpkg") == ("my-feature", False)
    package_checkout.cache_clear()
    source.write_text("VALUE = 2\n")
    assert package_checkout("gitpkg") == ("my-feature", True)
    package_checkout.cache_clear()


def test_a_nan_in_the_suite_sections_is_written_as_peft_writes_it_and_read_back_as_not_measured(tmp_path):
    """PEFT's json.dump writes full fine-tuning's drift as the bare token NaN; peftbench's own section stays
    strict JSON (null)."""
    import math

    written = RunResult(status="success", method="full-finetuning", name="x", steps=4, test_score=0.5,
                        score_name="dino_similarity", forgetting_name="drift", forgetting=math.nan)
    path = write_json_atomic(tmp_path / "r.json", result_document(written), allow_nan=True)
    text = path.read_text()
    assert '"drift": NaN' in text and "NaN" not in text[text.index('"peftbench"'):]
    read = read_result_file(path)
    assert not read.problems and read.result.forgetting is None and read.result.test_score == 0.5


def test_the_published_image_results_read_as_before():
    """NaN drift (full fine-tuning), PEFT's total and train times: the published files' own figures."""
    for path in sorted((PUBLISHED.parent / "peft-image-gen").glob("*.json")):
        data, read = json.loads(path.read_text()), read_result_file(path)
        assert read.source == "peft-suite" and not read.problems, (path.name, read.problems)
        drift = data["train_info"]["metrics"][-1]["drift"]
        assert read.result.forgetting == (None if drift != drift else drift)
        assert read.result.total_time_s == read.result.suite_total_time_s == data["run_info"]["total_time"]
        assert read.result.suite_train_time_s == data["train_info"]["train_time"]
