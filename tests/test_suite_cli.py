"""`peftbench suite`: listing, the quick suite's contents, clear errors; no experiment is trained here."""

from typer.testing import CliRunner

from peftbench.cli import app
from peftbench.builtin_suites import available_suites, suite_experiments

REQUIRED_METHODS = {"lora", "oft", "ia3", "prompt_tuning", "full-finetuning"}

runner = CliRunner()


def test_quick_suite_has_the_required_methods():
    assert "quick" in available_suites()
    experiments = suite_experiments("quick")
    assert len(experiments) >= 8
    assert REQUIRED_METHODS <= {path.parent.name for path in experiments}
    lora_variants = {path.name for path in experiments if path.parent.name == "lora"}
    assert {"rank16", "rank16-rslora", "rank16-dora", "rank16-lorafa"} <= lora_variants


def test_suite_list_prints_every_experiment():
    result = runner.invoke(app, ["suite", "--list"])
    assert result.exit_code == 0, result.output
    for path in suite_experiments("quick"):
        assert f"{path.parent.name}/{path.name}" in result.output


def test_unknown_suite_is_a_clear_error():
    result = runner.invoke(app, ["suite", "qiuck"])
    assert result.exit_code == 2
    assert "unknown suite 'qiuck'" in result.output and "quick" in result.output


def test_only_that_matches_nothing_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["suite", "quick", "--only", "no-such-method", "--results", str(tmp_path)])
    assert result.exit_code == 2
    assert "no experiment of suite 'quick' matches --only 'no-such-method'" in result.output


def test_bad_set_option_is_rejected_before_anything_runs(tmp_path):
    result = runner.invoke(app, ["suite", "quick", "--set", "max_step=5", "--results", str(tmp_path)])
    assert result.exit_code == 2
    assert "max_step" in result.output and "max_steps" in result.output
    assert not list(tmp_path.iterdir())


def test_suite_runs_an_experiment_end_to_end_and_prints_the_table(tmp_path):
    """One quick-suite experiment, a few steps on a few rows, through the real child-process runner."""
    tiny = ["--set", "max_steps=2", "--set", "eval_steps=2", "--set", "train_size=16", "--set", "valid_size=4",
            "--set", "test_size=6", "--set", "forgetting_size=2", "--set", "batch_size=4", "--set", "num_threads=1"]
    result = runner.invoke(app, ["suite", "quick", "--only", "ia3/default", "--results", str(tmp_path), *tiny,
                                 "--save-checkpoint"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "checkpoints" / "ia3--default" / "adapter_config.json").exists()  # for `peftbench convert`
    import json

    record = json.loads((tmp_path / "ia3--default.json").read_text())["peftbench"]
    assert record["status"] == "success"
    assert record["task"] == "math-tiny"
    assert len(record["per_item_correct"]) == 6
    assert "ia3/default" in result.output  # the table names the experiment


def test_quick_suite_starts_longest_first_and_its_order_names_real_experiments():
    import json

    from peftbench.builtin_suites import suites_root

    names = [f"{path.parent.name}/{path.name}" for path in suite_experiments("quick")]
    longest_first = json.loads((suites_root() / "quick" / "order.json").read_text())["longest_first"]
    # a renamed or removed experiment would otherwise silently drop to the end of the queue
    assert sorted(longest_first) == sorted(names)
    assert names == longest_first
    assert names[0] == "loha/rank16"  # the slowest one (benchmarks/math-tiny.md) must not start last


def test_suites_keep_no_adapters_unless_asked(tmp_path):
    from peftbench.builtin_suites import suite_requests

    requests, _ = suite_requests("quick", None, "lora/rank16", tmp_path, [], force=False, keep_killed=False)
    assert requests and not any(request.save_checkpoint for request in requests)


def test_a_suite_with_unfinished_experiments_exits_1_and_names_them(tmp_path, monkeypatch):
    """A failed run and a result the full disk would not take: exit 1, a last line naming both, and the one not
    written is reported as such (not as a kept result) and runs again next time."""
    import errno

    import peftbench.runners.isolated as isolated
    from peftbench.results.writer import ResultWriteError

    asked = []

    def stand_in(request):  # runners.batch.execute_trial's child-process runner, without training
        asked.append(request.result_stem)
        result_file = request.result_file()
        if request.result_stem == "ia3--default":
            raise ResultWriteError(errno.ENOSPC, f"cannot write result file {result_file}: no space left on the device")
        return result_file, "failed", False

    monkeypatch.setattr(isolated, "run_request", stand_in)
    command = ["suite", "quick", "--only", "ia3/default", "--results", str(tmp_path), "--workers", "1"]
    result = runner.invoke(app, command)
    assert result.exit_code == 1, result.output
    assert "kept, not run again" not in result.output
    assert "result not written" in result.output and "no space left on the device" in result.output
    last_line = result.output.strip().splitlines()[-1]
    assert "did not finish" in last_line and "ia3--default (result not written)" in last_line

    result = runner.invoke(app, ["suite", "quick", "--only", "lora/rank16", "--results", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "lora--rank16 (failed)" in result.output.strip().splitlines()[-1]

    runner.invoke(app, command)
    assert asked.count("ia3--default") == 2  # nothing recorded it as done
