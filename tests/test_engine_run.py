"""Engine end to end: `peftbench run` on copies of PEFT-suite experiment folders, the `math` task on local
fixture files, a tiny random Llama. Result fields are checked against the saved checkpoint."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from peftbench.cli import app
from peftbench.runners import isolated
from peftbench.run.engine import execute
from peftbench.run.plan import decide_hardware, plan_run
from peftbench.run.request import RunRequest
from waiting import SAFETY_NET_S, StreamWatch


LORA = "lora/llama-3.2-3B-rank32"


def set_options(params: dict) -> list[str]:
    options = []
    for key, value in params.items():
        options += ["--set", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    return options


def read_result(path: Path) -> dict:
    return json.loads(Path(path).read_text())


@pytest.fixture()
def bad_target_experiment(experiments_copy) -> Path:
    folder = experiments_copy / "lora" / "bad-targets"
    shutil.copytree(experiments_copy / LORA, folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    config["target_modules"] = ["q_proj", "query_key_value"]
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


def test_cli_run_writes_complete_result_and_checkpoint(
    experiments_copy, bad_target_experiment, math_fixture_params, tmp_path, monkeypatch
):
    from peftbench.run import plan as plan_module

    planned = []
    plan_run = plan_module.plan_run
    monkeypatch.setattr(plan_module, "plan_run", lambda request: planned.append(request.result_stem) or plan_run(request))
    monkeypatch.setattr(isolated, "plan_run", lambda request: planned.append(request.result_stem) or plan_run(request))
    results = tmp_path / "results"
    runner = CliRunner()
    # the failing experiment comes first: the next one must still run, and the exit code must say so
    args = ["run", str(bad_target_experiment), str(experiments_copy / LORA), "--task", "math",
            "--results", str(results), "--seed", "3", *set_options(math_fixture_params)]
    outcome = runner.invoke(app, args)
    assert outcome.exit_code == 1, outcome.output
    assert planned == ["lora--bad-targets--seed3", "lora--llama-3.2-3B-rank32--seed3"]  # each run planned once

    failed = read_result(results / "lora--bad-targets--seed3.json")
    assert failed["peftbench"]["status"] == "failed" == failed["train_info"]["status"]
    assert "query_key_value" in failed["peftbench"]["error_msg"]
    assert "v_proj" in failed["peftbench"]["error_msg"]  # the model's linear modules are listed
    assert failed["peftbench"]["steps"] == 0

    result = read_result(results / "lora--llama-3.2-3B-rank32--seed3.json")
    pb, train_info, run_info = result["peftbench"], result["train_info"], result["run_info"]
    assert pb["status"] == "success" and pb["error_msg"] == ""
    assert (pb["task"], pb["method"], pb["name"], pb["seed"]) == ("math", "lora", "llama-3.2-3B-rank32", 3)
    assert run_info["experiment_name"] == LORA
    assert run_info["train_config"]["seed"] == 3 and run_info["train_config"]["max_steps"] == 4
    assert run_info["peft_config"]["r"] == 32 and run_info["peft_config"]["peft_type"] == "LORA"

    # checkpoint: real size on disk and parameter count agree with the result
    checkpoint = results / "checkpoints" / "lora--llama-3.2-3B-rank32--seed3"
    weights = checkpoint / "adapter_model.safetensors"
    assert pb["checkpoint_size_bytes"] == weights.stat().st_size == train_info["file_size"]
    assert pb["checkpoint_folder_bytes"] == sum(p.stat().st_size for p in checkpoint.iterdir())
    from safetensors.torch import load_file

    saved_params = sum(t.numel() for t in load_file(str(weights)).values())
    assert pb["trainable_params"] == saved_params == train_info["num_trainable_params"]
    # tiny llama: 2 layers x (q: 32x32, v: 32x16) LoRA r=32 -> A and B per target
    assert saved_params == 2 * ((32 * 32 + 32 * 32) + (32 * 32 + 16 * 32))
    assert pb["total_params"] == train_info["num_total_params"] > saved_params

    # the PEFT suite's metrics: valid entries every eval_steps, then the final test entry
    metrics = train_info["metrics"]
    assert [m["step"] for m in metrics] == [2, 4, 4]
    assert "valid accuracy" in metrics[0] and "valid accuracy" in metrics[1]
    final = metrics[-1]
    assert final["test accuracy"] == pb["test_score"]
    assert final["forgetting"] == pytest.approx(pb["forgetting"])
    assert pb["forgetting"] == pytest.approx(pb["forgetting_loss_after"] - pb["forgetting_loss_before"])
    assert len(pb["per_item_correct"]) == 8 and pb["test_score"] == sum(pb["per_item_correct"]) / 8
    assert [p["step"] for p in pb["train_curve"]] == [1, 2, 3, 4]
    assert final["train loss"] == pytest.approx(sum(p["loss"] for p in pb["train_curve"][-2:]) / 2)
    assert pb["train_tokens"] > 0 and pb["tokens_per_second"] == pytest.approx(pb["train_tokens"] / pb["train_time_s"])

    # measurements are present and consistent
    assert pb["peak_memory_kind"] == "cpu_rss" and pb["device"] == "cpu"
    assert 0 < pb["peak_memory_train_bytes"] <= pb["peak_memory_total_bytes"]
    assert pb["peak_memory_train_allocated_bytes"] == sum(pb["peak_memory_train_breakdown"].values()) > 0
    assert 0 < pb["train_time_s"] and 0 < pb["eval_time_s"] and pb["total_time_s"] >= pb["train_time_s"] + pb["eval_time_s"]
    # the PEFT suite's times, as its MetaMathQA run.py clocks them: train() from loading its data to the
    # forgetting loss after the test, minus the validations; the total without peftbench's own extra work
    phases = pb["time_by_phase_s"]
    assert train_info["train_time"] == pytest.approx(sum(phases.get(name, 0.0) for name in (
        "data", "reference", "prepare", "train", "test")))
    assert run_info["total_time"] == pytest.approx(
        pb["total_time_s"] - sum(phases.get(name, 0.0) for name in ("checks", "harness", "output")))
    assert metrics[0]["elapsed time"] >= phases["data"] + metrics[0]["train time"] + metrics[0]["eval time"]
    assert result["meta_info"]["package_info"]["peft-version"]
    # the precision used, and the hardware that decided it: a condition of every comparison (docs/report.md)
    assert run_info["train_config"]["dtype"] == "float32" and run_info["train_config"]["use_amp"] is False
    assert pb["precision"] == "fp32"
    assert pb["hardware"]["device"] == "cpu" and pb["hardware"]["name"] and pb["hardware"]["use_amp_setting"] is False
    # the kernel of its fp32 linear layers, and what chose it
    assert run_info["train_config"]["cpu_matmul"] in ("onednn", "torch")
    assert pb["hardware"]["cpu_matmul_setting"] == "auto" and "micro-benchmark" in pb["hardware"]["cpu_matmul_decided_by"]

    # peft loads the checkpoint back
    from peft import PeftConfig

    assert PeftConfig.from_pretrained(str(checkpoint)).r == 32

    # a second run skips the existing result (no child starts: nothing changes)
    before = (results / "lora--llama-3.2-3B-rank32--seed3.json").stat().st_mtime_ns
    outcome = runner.invoke(app, ["run", str(experiments_copy / LORA), "--task", "math", "--results", str(results),
                                  "--seed", "3", *set_options(math_fixture_params)])
    assert outcome.exit_code == 0, outcome.output
    assert "skip" in outcome.output
    assert (results / "lora--llama-3.2-3B-rank32--seed3.json").stat().st_mtime_ns == before


def test_bad_input_stops_before_any_run(experiments_copy, math_fixture_params, tmp_path):
    runner = CliRunner()
    base = ["run", str(experiments_copy / LORA), "--task", "math", "--results", str(tmp_path / "r")]
    outcome = runner.invoke(app, [*base, "--set", "max_stepz=3"])
    assert outcome.exit_code == 2 and "max_stepz" in outcome.output
    outcome = runner.invoke(app, [*base, *set_options({**math_fixture_params, "test_data": "/nope/test.jsonl"})])
    assert outcome.exit_code == 2 and "test_data" in outcome.output and "/nope/test.jsonl" in outcome.output
    outcome = runner.invoke(app, [*base[:3], "--task", "no-such-task"])
    assert outcome.exit_code == 2 and "math" in outcome.output
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("assignment, expected", [
    ("optimizer_kwargs.lrr=1", "unknown optimizer argument 'lrr' in --set (optimizer_kwargs of torch.optim.AdamW). "
                               "Did you mean 'lr'?"),
    ("lr=1e-3", "unknown training parameter 'lr' in --set. Did you mean 'optimizer_kwargs.lr'?"),
])
def test_a_typo_in_set_is_refused_in_the_parent_before_any_model_loads(experiments_copy, math_fixture_params, tmp_path,
                                                                       monkeypatch, assignment, expected):
    from peftbench.tasks.text import TextTask

    started, loaded = [], []
    monkeypatch.setattr(isolated, "_start_child", lambda: started.append(1))
    monkeypatch.setattr(TextTask, "load_model", lambda *args: loaded.append(1))
    outcome = CliRunner().invoke(app, ["run", str(experiments_copy / LORA), "--task", "math", "--results",
                                       str(tmp_path / "r"), *set_options(math_fixture_params), "--set", assignment])
    assert outcome.exit_code == 2, outcome.output
    assert expected in " ".join(outcome.output.split())  # the terminal wraps long lines
    assert not started and not loaded and not (tmp_path / "r").exists()


@pytest.mark.parametrize("where", ["training", "model loading"])
def test_the_cpu_allocators_failure_under_a_memory_limit_is_oom(experiments_copy, math_fixture_params, tmp_path,
                                                                 monkeypatch, where):
    """Under a process limit (ulimit -v) torch's CPU allocator raises a RuntimeError, not MemoryError; a petabyte
    is refused the same way without any limit."""
    import torch

    from peftbench.tasks.text import TextTask

    def allocate_a_petabyte(*args, **kwargs):
        torch.empty(2**50, dtype=torch.uint8)

    monkeypatch.setattr(TextTask, "compute_loss" if where == "training" else "load_model", allocate_a_petabyte)
    result = run_in_process(experiments_copy / LORA, tmp_path, math_fixture_params)
    assert result["peftbench"]["status"] == "oom", result["peftbench"]["error_msg"]
    assert "can't allocate memory" in result["peftbench"]["error_msg"]


@pytest.mark.parametrize("last_words, exit_code, status", [
    ("segfault-like crash in the child", 139, "failed"),
    ("Traceback (most recent call last):\\nMemoryError", 1, "oom"),  # e.g. under ulimit -v before the run began
])
def test_child_that_dies_is_recorded_as_failed_or_oom(experiments_copy, math_fixture_params, tmp_path, monkeypatch,
                                                      last_words, exit_code, status):
    crash = f"import sys; sys.stderr.write('{last_words}\\n'); sys.exit({exit_code})"
    monkeypatch.setattr(isolated, "FORK_WARM_CHILD", False)  # the stand-in is a command
    monkeypatch.setattr(isolated, "CHILD_COMMAND", [sys.executable, "-c", crash])
    path, recorded, _ = isolated.run_request(RunRequest(task="math", results_dir=str(tmp_path),
                                                        experiment_dir=str(experiments_copy / LORA),
                                                        overrides=math_fixture_params))
    assert recorded == status
    result = read_result(path)
    assert result["peftbench"]["status"] == status
    assert status == "oom" or f"exit code {exit_code}" in result["peftbench"]["error_msg"]
    assert last_words.split("\\n")[-1] in result["peftbench"]["error_msg"]
    assert result["peftbench"]["precision"] == "fp32" and result["peftbench"]["hardware"]["device"] == "cpu"
    # a failed result is retried on the next run, a successful one is not
    assert not isolated.should_skip(path, force=False)


def run_in_process(folder: Path, results: Path, params: dict, **request) -> dict:
    path, status = execute(RunRequest(task="math", results_dir=str(results), experiment_dir=str(folder),
                                      overrides=params, show_progress=False, **request))
    return read_result(path)


def test_lora_fa_prompt_tuning_and_full_finetuning(experiments_copy, math_fixture_params, tmp_path):
    lora_fa = run_in_process(experiments_copy / "lora/llama-3.2-3B-rank32-lorafa", tmp_path, math_fixture_params)
    assert lora_fa["peftbench"]["status"] == "success", lora_fa["peftbench"]["error_msg"]
    assert lora_fa["run_info"]["train_config"]["optimizer_type"] == "lora-fa"
    # LoRA-FA freezes A: only the B matrices are trained
    assert lora_fa["peftbench"]["trainable_params"] == 2 * (32 * 32 + 16 * 32)

    prompt = run_in_process(experiments_copy / "prompt_tuning/llama-3.2-3B-default", tmp_path, math_fixture_params)
    assert prompt["peftbench"]["status"] == "success", prompt["peftbench"]["error_msg"]
    # the suite's config is sized for Llama-3.2-3B (token_dim 3072): the model's dimension is used instead
    assert prompt["run_info"]["peft_config"]["token_dim"] == 32
    assert prompt["peftbench"]["trainable_params"] == 200 * 32
    assert len(prompt["peftbench"]["per_item_correct"]) == 8

    full = run_in_process(experiments_copy / "full-finetuning/llama-3.2-3B-lr_0.00001", tmp_path,
                          math_fixture_params, save_checkpoint=False)
    pb = full["peftbench"]
    assert pb["status"] == "success", pb["error_msg"]
    assert full["run_info"]["peft_config"] is None
    assert pb["trainable_params"] == pb["total_params"]
    assert pb["checkpoint_size_bytes"] == 4 * pb["total_params"] and pb["checkpoint_size_estimated"]
    assert pb["forgetting"] == pytest.approx(pb["forgetting_loss_after"] - pb["forgetting_loss_before"])


def test_use_amp_auto_is_resolved_and_recorded(experiments_copy, math_fixture_params, tmp_path):
    from peftbench.hardware import detect_hardware

    result = run_in_process(experiments_copy / LORA, tmp_path, {**math_fixture_params, "use_amp": "auto", "max_steps": 2})
    pb, native = result["peftbench"], detect_hardware("cpu").bf16_native
    assert pb["status"] == "success", pb["error_msg"]
    assert result["run_info"]["train_config"]["use_amp"] is native  # the decision, not "auto"
    assert pb["precision"] == ("bf16-autocast" if native else "fp32")
    assert pb["hardware"]["use_amp_setting"] == "auto" and pb["hardware"]["bf16_native"] is native
    assert pb["hardware"]["decided_by"]


def test_prefix_tuning_with_kv_cache_init(experiments_copy, math_fixture_params, tmp_path):
    result = run_in_process(
        experiments_copy / "prefixtuning/llama-3.2-3B-tokens50-init_prefix-lr_0.005", tmp_path, math_fixture_params
    )
    assert result["peftbench"]["status"] == "success", result["peftbench"]["error_msg"]
    assert result["run_info"]["train_config"]["init_kv_cache_prefix"].startswith("You are a helpful math")


def test_divergence_is_recorded(experiments_copy, math_fixture_params, tmp_path):
    params = {**math_fixture_params, "optimizer_kwargs": {"lr": 1e6}, "grad_norm_clip": 0, "max_steps": 6}
    result = run_in_process(experiments_copy / LORA, tmp_path, params, save_checkpoint=False)
    pb = result["peftbench"]
    assert pb["status"] == "diverged", pb
    assert "loss became" in pb["error_msg"] and pb["test_score"] is None
    assert not any("test accuracy" in entry for entry in result["train_info"]["metrics"])  # no test was run


def test_evaluate_adapter_without_training(experiments_copy, math_fixture_params, tmp_path):
    trained = run_in_process(experiments_copy / LORA, tmp_path / "train", math_fixture_params)
    checkpoint = Path(trained["peftbench"]["checkpoint_dir"])
    path, status = execute(RunRequest(
        task="math", results_dir=str(tmp_path / "eval"), mode="evaluate", adapter_dir=str(checkpoint),
        method="lora", name="evaluated", overrides=math_fixture_params, show_progress=False,
        conversion={"source_result": "x", "rank": 32},
    ))
    result = read_result(path)
    pb = result["peftbench"]
    assert status == "success" and path.name == "lora--evaluated.json"
    assert pb["steps"] == 0 and pb["conversion"] == {"source_result": "x", "rank": 32}
    # same adapter, same data, greedy decoding: the same per-item outcome as right after training
    assert pb["per_item_correct"] == trained["peftbench"]["per_item_correct"]
    assert pb["forgetting"] == pytest.approx(trained["peftbench"]["forgetting"], abs=1e-5)
    assert pb["trainable_params"] == trained["peftbench"]["trainable_params"]


@pytest.mark.parametrize(
    ("optimizer_type", "optimizer_kwargs"),
    [("lora+", {"lr": 1e-3, "loraplus_lr_ratio": 16}), ("riemannian", {"lr": 1e-3, "reg": 1e-2}), ("SGD", {"lr": 1e-2})],
)
def test_optimizer_types(experiments_copy, math_fixture_params, tmp_path, optimizer_type, optimizer_kwargs):
    params = {**math_fixture_params, "optimizer_type": optimizer_type, "optimizer_kwargs": optimizer_kwargs,
              "max_steps": 2, "valid_size": 0, "test_size": 2}
    result = run_in_process(experiments_copy / LORA, tmp_path, params, save_checkpoint=False)
    assert result["peftbench"]["status"] == "success", result["peftbench"]["error_msg"]
    assert result["run_info"]["train_config"]["optimizer_type"] == optimizer_type
    first, last = result["peftbench"]["train_curve"][0], result["peftbench"]["train_curve"][-1]
    assert first["loss"] != last["loss"]  # the optimizer changed the adapter


@pytest.mark.parametrize("schedule", ["max_steps", "config"])
def test_adalora_budget_follows_max_steps_or_keeps_the_configs_as_the_suite(
    experiments_copy, math_fixture_params, tmp_path, schedule,
):
    folder = experiments_copy / "adalora" / "small"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "ADALORA", "task_type": "CAUSAL_LM", "init_r": 8, "target_r": 4, "tinit": 2, "tfinal": 2,
        "deltaT": 1, "total_step": 7, "target_modules": ["q_proj", "v_proj"],
    }))
    params = {**math_fixture_params, "max_steps": 6, "eval_steps": 6, "test_size": 2, "adalora_total_step": schedule}
    result = run_in_process(folder, tmp_path, params)
    assert result["peftbench"]["status"] == "success", result["peftbench"]["error_msg"]
    logged = result["run_info"]["peft_config"]
    assert logged["total_step"] == (6 if schedule == "max_steps" else 7)
    # update_and_allocate ran: the final budget (reached at total_step - tfinal) is in the result's config, which
    # is logged after training as the suite's, and in the saved one
    saved = json.loads((Path(result["peftbench"]["checkpoint_dir"]) / "adapter_config.json").read_text())
    assert saved["rank_pattern"] and logged["rank_pattern"]


def test_ctrl_c_leaves_a_cancelled_result(experiments_copy, math_fixture_params, tmp_path):
    import signal
    import subprocess

    request = RunRequest(task="math", results_dir=str(tmp_path), experiment_dir=str(experiments_copy / LORA),
                         # shuffled: the suite's one pass over the fixture rows would end long before Ctrl-C
                         overrides={**math_fixture_params, "max_steps": 100000, "eval_steps": 100000,
                                    "batch_order": "shuffled"})
    plan_file = tmp_path / "plan.json"  # what a parent sends its child
    plan_file.write_text(json.dumps(decide_hardware(plan_run(request)).to_dict()))
    child = subprocess.Popen([*isolated.CHILD_COMMAND, str(plan_file)], stderr=subprocess.PIPE, text=True)
    stderr = StreamWatch(child.stderr)
    stderr.wait_for("2/100000")  # training has made steps
    child.send_signal(signal.SIGINT)
    child.send_signal(signal.SIGINT)  # a second Ctrl-C must not interrupt writing the result
    stderr.rest()
    assert child.wait(timeout=SAFETY_NET_S) == 0
    result = read_result(tmp_path / "lora--llama-3.2-3B-rank32.json")
    assert result["peftbench"]["status"] == "cancelled" and "Ctrl-C" in result["peftbench"]["error_msg"]
    assert 0 < result["peftbench"]["steps"] < 100000
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".json" or ".tmp" in p.name) == [
        "lora--llama-3.2-3B-rank32.json", "plan.json"]


def test_force_reruns_an_existing_result(experiments_copy, math_fixture_params, tmp_path, monkeypatch):
    from peftbench.results.writer import write_json_atomic

    existing = tmp_path / "lora--llama-3.2-3B-rank32.json"
    write_json_atomic(existing, {"peftbench": {"status": "success"}, "train_info": {"status": "success"}})
    starts = tmp_path / "child-started"
    # a stand-in child that only records that it was started, then dies without writing a result
    monkeypatch.setattr(isolated, "FORK_WARM_CHILD", False)  # the stand-in is a command
    monkeypatch.setattr(isolated, "CHILD_COMMAND", [sys.executable, "-c", f"open({str(starts)!r}, 'a').write('x')"])
    args = ["run", str(experiments_copy / LORA), "--task", "math", "--results", str(tmp_path),
            *set_options(math_fixture_params)]
    outcome = CliRunner().invoke(app, args)
    assert outcome.exit_code == 0 and "skip" in outcome.output and not starts.exists()
    outcome = CliRunner().invoke(app, [*args, "--force"])
    assert outcome.exit_code == 1 and starts.read_text() == "x"
    assert read_result(existing)["peftbench"]["status"] == "failed"


def test_unknown_optimizer_type_fails_before_any_run(experiments_copy, math_fixture_params, tmp_path):
    outcome = CliRunner().invoke(app, ["run", str(experiments_copy / LORA), "--task", "math", "--results",
                                       str(tmp_path), *set_options({**math_fixture_params, "optimizer_type": "Adamw"})])
    assert outcome.exit_code == 2 and "'Adamw'" in outcome.output and "lora-fa" in outcome.output
    assert not list(tmp_path.glob("*.json"))


def test_out_of_memory_is_recorded_as_oom(experiments_copy, math_fixture_params, tmp_path, monkeypatch):
    import torch

    from peftbench.tasks.text import TextTask

    def exhausted(self, model, batch):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(TextTask, "compute_loss", exhausted)
    result = run_in_process(experiments_copy / LORA, tmp_path, math_fixture_params)
    assert result["peftbench"]["status"] == "oom" == result["train_info"]["status"]
    assert "2.00 GiB" in result["peftbench"]["error_msg"]
    assert not (tmp_path / "checkpoints").exists()


def test_a_cleanup_that_fails_while_cancelling_still_records_cancelled(experiments_copy, math_fixture_params,
                                                                       tmp_path, monkeypatch):
    import signal

    from peftbench.cancel import REASONS, Cancelled
    from peftbench.tasks.text import TextTask

    def cancelled_mid_cleanup(self, model, batch):
        try:
            raise Cancelled(signal.SIGTERM, REASONS[signal.SIGTERM])
        finally:
            raise RuntimeError("trying to pop from empty mode stack")  # a library's `with` left half-done

    monkeypatch.setattr(TextTask, "compute_loss", cancelled_mid_cleanup)
    result = run_in_process(experiments_copy / LORA, tmp_path, math_fixture_params)
    assert result["peftbench"]["status"] == "cancelled", result["peftbench"]["error_msg"]
    assert result["peftbench"]["error_msg"] == REASONS[signal.SIGTERM]


def test_gradient_checkpointing_trains_the_same_adapter(experiments_copy, math_fixture_params, tmp_path):
    params = {**math_fixture_params, "max_steps": 2, "valid_size": 0, "test_size": 1}
    plain = run_in_process(experiments_copy / LORA, tmp_path / "plain", params, save_checkpoint=False)
    checkpointed = run_in_process(experiments_copy / LORA, tmp_path / "gc", {**params, "use_gc": True},
                                  save_checkpoint=False)
    assert checkpointed["peftbench"]["status"] == "success", checkpointed["peftbench"]["error_msg"]
    # recomputing activations changes memory, not the maths: same seed, same losses
    plain_losses = [p["loss"] for p in plain["peftbench"]["train_curve"]]
    gc_losses = [p["loss"] for p in checkpointed["peftbench"]["train_curve"]]
    assert gc_losses == pytest.approx(plain_losses, rel=1e-4)


def test_list_shows_tasks_and_experiments(experiments_copy):
    outcome = CliRunner().invoke(app, ["list", str(experiments_copy)])
    assert outcome.exit_code == 0, outcome.output
    assert "math" in outcome.output and "prompt_tuning" in outcome.output and "full fine-tuning" in outcome.output
    wide = CliRunner().invoke(app, ["list", str(experiments_copy)], env={"COLUMNS": "250"})
    # the shipped models are named inside the package, not by an absolute path cut to fit
    assert "peftbench/assets/tiny-math-llama" in wide.output and "…" not in wide.output


def test_sigkill_is_oom_only_with_the_oom_killers_evidence(experiments_copy, math_fixture_params, tmp_path,
                                                            monkeypatch):
    kill = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    monkeypatch.setattr(isolated, "FORK_WARM_CHILD", False)  # the stand-in is a command
    monkeypatch.setattr(isolated, "CHILD_COMMAND", [sys.executable, "-c", kill])
    monkeypatch.setattr(isolated, "killed_by_oom_killer", lambda pid, count_before: False)
    request = RunRequest(task="math", results_dir=str(tmp_path), experiment_dir=str(experiments_copy / LORA),
                         overrides=math_fixture_params)
    path, status, _ = isolated.run_request(request)
    assert status == "killed" and "SIGKILL" in read_result(path)["peftbench"]["error_msg"]
    monkeypatch.setattr(isolated, "killed_by_oom_killer", lambda pid, count_before: True)
    path, status, _ = isolated.run_request(request)
    assert status == "oom" and "out-of-memory killer" in read_result(path)["peftbench"]["error_msg"]
    # both are run again by default (memory may be free now), kept on request
    assert not isolated.should_skip(path, force=False) and isolated.should_skip(path, force=False, keep_killed=True)


def test_same_seed_same_run_other_seed_other_run(experiments_copy, math_fixture_params, tmp_path):
    # shuffled: the seed changes the batch order and the initialisation (batch_order "peft" keeps the
    # suite's, where the seed changes neither: tests/test_math_faithful.py)
    params = {**math_fixture_params, "max_steps": 3, "valid_size": 0, "test_size": 1, "batch_order": "shuffled"}

    def losses(seed: int, folder: str) -> list[float]:
        result = run_in_process(experiments_copy / LORA, tmp_path / folder, params, seed=seed, save_checkpoint=False)
        return [p["loss"] for p in result["peftbench"]["train_curve"]]

    first = losses(1, "a")
    assert losses(1, "b") == first
    assert losses(2, "c") != first  # another batch order and adapter initialisation


def test_merge_for_eval_generates_on_a_merged_copy(experiments_copy, math_fixture_params, tmp_path, monkeypatch):
    from peftbench.run import phases as execute_module

    merged_models = []
    merged_copy = execute_module.merged_copy

    def recording_merged_copy(model, peft_config):
        merged = merged_copy(model, peft_config)
        merged_models.append((model, merged))
        return merged

    monkeypatch.setattr(execute_module, "merged_copy", recording_merged_copy)
    unmerged = run_in_process(experiments_copy / LORA, tmp_path / "unmerged", math_fixture_params, save_checkpoint=False)
    assert not merged_models  # off unless asked (PEFT's script evaluates unmerged)
    merged = run_in_process(experiments_copy / LORA, tmp_path / "merged", {**math_fixture_params, "merge_for_eval": True},
                            save_checkpoint=False)
    assert merged["peftbench"]["status"] == "success", merged["peftbench"]["error_msg"]
    assert merged["run_info"]["train_config"]["merge_for_eval"] is True and merged["peftbench"]["evaluated_merged"]
    assert unmerged["peftbench"]["evaluated_merged"] is False
    [(original, copy)] = merged_models
    assert copy is not original and not hasattr(copy, "peft_config")  # a plain model, the adapter in its weights
    assert any("lora_" in name for name, _ in original.named_parameters())  # the original keeps its adapter
    # the same seed trains the same adapter: merged weights give the same greedy completions
    assert [p["prediction"] for p in merged["peftbench"]["predictions"]] == [
        p["prediction"] for p in unmerged["peftbench"]["predictions"]
    ]
    # the forgetting measure still switches the (unmerged) adapter off on the original model
    assert merged["peftbench"]["forgetting"] == pytest.approx(unmerged["peftbench"]["forgetting"], abs=1e-5)

    merged_models.clear()
    prompt = run_in_process(experiments_copy / "prompt_tuning/llama-3.2-3B-default", tmp_path / "prompt",
                            {**math_fixture_params, "merge_for_eval": True}, save_checkpoint=False)
    assert prompt["peftbench"]["status"] == "success", prompt["peftbench"]["error_msg"]
    [(original, copy)] = merged_models
    assert copy is original  # prompt learning has nothing to merge: evaluated as it is
    assert prompt["peftbench"]["evaluated_merged"] is False


def test_merge_for_eval_falls_back_to_the_unmerged_model_where_peft_cannot_merge():
    from types import SimpleNamespace

    from peftbench.run.phases import merged_copy

    model = SimpleNamespace(weights=[1.0])  # no merge_and_unload, as a tuner without merging
    with pytest.warns(UserWarning, match="evaluating unmerged"):
        assert merged_copy(model, SimpleNamespace(is_prompt_learning=False)) is model
