"""`peftbench suite`: listing, the quick suite's contents, clear errors; no experiment is trained here."""

from typer.testing import CliRunner

from peftbench.cli import app
from peftbench.cli.suite import available_suites, suite_experiments

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
