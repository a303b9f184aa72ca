"""Tensor-level memory: the tracker against hand-computed bytes, the steps it samples, the figures a run
records, and `peftbench memory` (estimates on a model built from config.json alone)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from peftbench.cli import app
from peftbench.training.tensor_memory import StepSampler, TensorMemoryTracker

FIXTURES = Path(__file__).parent / "fixtures"
LLAMA_3B = FIXTURES / "models" / "llama-3.2-3B"
LORA = "lora/llama-3.2-3B-rank32"
FULL = "full-finetuning/llama-3.2-3B-lr_0.00001"
FLOAT = 4  # bytes per float32


def set_options(params: dict) -> list[str]:
    return [item for key, value in params.items()
            for item in ("--set", f"{key}={value if isinstance(value, str) else json.dumps(value)}")]


def mlp(d_in: int, hidden: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(d_in, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))


# ---- the tracker against hand-computable cases ----
def test_linear_parameters_gradients_and_adamw_state_are_counted_exactly():
    d_in, d_out, batch = 64, 32, 8
    layer = torch.nn.Linear(d_in, d_out)
    optimizer = torch.optim.AdamW(layer.parameters(), foreach=False)
    x = torch.randn(batch, d_in)
    params = (d_in * d_out + d_out) * FLOAT
    tracker = TensorMemoryTracker()
    for _ in range(2):  # the second step starts with the first one's optimizer state
        tracker.register(layer, optimizer, x)
        with tracker:
            optimizer.zero_grad(set_to_none=True)
            layer(x).sum().backward()
            assert tracker.current["gradients"] == params
            optimizer.step()
    assert tracker.current["parameters"] == params
    assert tracker.current["inputs"] == batch * d_in * FLOAT
    # exp_avg and exp_avg_sq per parameter, plus each parameter's step counter (a float32 scalar)
    assert tracker.current["optimizer_state"] == 2 * params + 2 * FLOAT
    assert tracker.current["activations"] == tracker.current["temporaries"] == 0  # all freed after the step
    assert tracker.current_total == sum(tracker.current.values())
    # the peak is inside an optimizer step: everything persistent plus that step's own temporaries
    assert tracker.peak_total >= params + params + 2 * params + batch * d_in * FLOAT
    assert tracker.peak_total == sum(tracker.peak_breakdown.values())


def test_one_layers_saved_activations_are_counted_exactly():
    d_in, hidden, batch = 64, 32, 8
    model = mlp(d_in, hidden)
    x = torch.randn(batch, d_in)
    tracker = TensorMemoryTracker()
    tracker.register(model, inputs=x)
    with tracker:
        out = model(x)
        # saved for backward: ReLU's output (also the second Linear's input); the first Linear's output is
        # freed once ReLU has read it, the inputs and weights are not activations
        assert tracker.current["activations"] == batch * hidden * FLOAT
        assert tracker.current["temporaries"] == batch * 1 * FLOAT  # the output
        # at the peak, as ReLU wrote its output, Linear 1's output was still alive
        assert tracker.peak_breakdown == {**tracker.current, "temporaries": batch * hidden * FLOAT}
        out.sum().backward()
        del out
    assert tracker.current["activations"] == 0  # backward released them
    assert tracker.current["gradients"] == sum(p.numel() for p in model.parameters()) * FLOAT


def test_peak_is_the_largest_sum_of_live_tensors():
    tracker = TensorMemoryTracker()
    with tracker:
        a = torch.empty(1000)  # 4000 B
        b = torch.empty(500)  # + 2000 B = 6000 B
        del a
        c = torch.empty(1200)  # 2000 + 4800 = 6800 B: the peak
        del b, c
        d = torch.empty(100)
    assert tracker.peak_total == 6800 and tracker.current_total == 400
    del d
    assert tracker.current_total == 0


def test_cuda_counts_whole_allocator_blocks():
    from peftbench.training.tensor_memory import _allocated_bytes

    assert _allocated_bytes(1, "cuda") == 512 and _allocated_bytes(513, "cuda") == 1024
    assert _allocated_bytes(513, "cpu") == 513


def test_sampler_tracks_only_steps_that_can_set_the_peak():
    model = mlp(4, 4)
    optimizer = torch.optim.AdamW(model.parameters())
    sampler = StepSampler(TensorMemoryTracker(), model, optimizer)
    shapes = [(4, 50), (4, 40), (4, 30), (4, 60), (4, 55), (2, 70), (3, 60), (4, 70)]
    for step, shape in enumerate(shapes, start=1):
        inputs = {"input_ids": torch.zeros(shape, dtype=torch.long)}
        sampler.begin(step, inputs)
        sampler.end()
        sampler.end()  # twice is harmless (the training loop's `finally` calls it again)
    # 1 and 2 always; then a step whose batch is larger in some dimension than every tracked steady step
    assert sampler.tracked_steps == [1, 2, 4, 6, 8]


# ---- a run records it ----
@pytest.fixture(scope="module")
def lora_and_full_results(tmp_path_factory, math_fixture_params):
    experiments = tmp_path_factory.mktemp("experiments")
    for name in (LORA, FULL):
        shutil.copytree(FIXTURES / "experiments" / name, experiments / name)
    results = tmp_path_factory.mktemp("results")
    # batch 5: the first batch has padding, as nearly every real batch (see training.memory_estimate)
    params = {**math_fixture_params, "valid_size": 0, "max_steps": 3, "batch_size": 5}
    outcome = CliRunner().invoke(app, ["run", str(experiments / LORA), str(experiments / FULL), "--task", "math",
                                       "--results", str(results), "--no-save", *set_options(params)])
    assert outcome.exit_code == 0, outcome.output
    return {name: json.loads((results / (name.replace("/", "--") + ".json")).read_text())["peftbench"]
            for name in (LORA, FULL)}, experiments, params


def test_lora_and_full_finetuning_record_tracked_peaks_and_full_is_larger(lora_and_full_results):
    results, _, _ = lora_and_full_results
    lora, full = results[LORA], results[FULL]
    for pb in (lora, full):
        assert pb["peak_memory_train_allocated_bytes"] == sum(pb["peak_memory_train_breakdown"].values()) > 0
        assert pb["peak_memory_tracked_steps"][:2] == [1, 2]
        assert pb["peak_memory_cuda_train_allocated_bytes"] is None  # CPU run
        assert pb["peak_memory_train_breakdown"]["parameters"] > 0
    assert full["peak_memory_train_allocated_bytes"] > lora["peak_memory_train_allocated_bytes"]


def test_estimate_agrees_with_the_measured_cpu_run(lora_and_full_results):
    """The estimator counted as a CPU run counts (same batches) lands on the measured peak."""
    from peftbench.run.plan import plan_run
    from peftbench.run.request import RunRequest
    from peftbench.training.memory_estimate import batch_shapes, estimate_training_memory, load_tokenizer_if_any

    results, experiments, params = lora_and_full_results
    for name in (LORA, FULL):
        run = plan_run(RunRequest(task="math", results_dir=".", experiment_dir=str(experiments / name), overrides=params))
        tokenizer = load_tokenizer_if_any(run.task, run.config)
        shapes = batch_shapes(run.task, run.config, tokenizer)
        assert shapes.source.startswith("batch shapes of the run's 3 real training batches")
        estimate = estimate_training_memory(run.spec, run.task, run.config, shapes, tokenizer, device_type="cpu")
        measured = results[name]["peak_memory_train_breakdown"]
        # The estimate traces the longest batch as a steady-state step, with the optimizer state.
        assert estimate.breakdown["optimizer_state"] > 0
        if measured["optimizer_state"] == 0:
            # the measured peak is step 1's (the longest batch, before any optimizer state): all else is equal
            assert {**estimate.breakdown, "optimizer_state": 0} == measured, name
            assert estimate.peak_bytes == sum(measured.values()) + estimate.breakdown["optimizer_state"]
        else:
            # a later step's (full fine-tuning: its optimizer state outweighs step 1's longer batch), on a batch no
            # longer than the one traced: the same weights and state, no less of the rest, within a few percent
            same = ("parameters", "buffers", "gradients", "optimizer_state")
            assert {k: estimate.breakdown[k] for k in same} == {k: measured[k] for k in same}, name
            assert all(estimate.breakdown[k] >= measured[k] for k in ("activations", "temporaries", "inputs")), name
            assert sum(measured.values()) <= estimate.peak_bytes <= 1.05 * sum(measured.values()), name


# ---- peftbench memory ----
def test_memory_command_on_a_local_tiny_config(lora_and_full_results, tmp_path):
    _, experiments, params = lora_and_full_results
    config_only = tmp_path / "config-only"
    config_only.mkdir()
    shutil.copy(Path(params["model_id"]) / "config.json", config_only / "config.json")
    runner = CliRunner()
    args = ["memory", str(experiments / LORA), str(experiments / FULL), "--task", "math", "--json",
            *set_options({**params, "model_id": str(config_only)})]
    outcome = runner.invoke(app, args)
    assert outcome.exit_code == 0, outcome.output
    estimates = json.loads(outcome.stdout)
    assert [e["experiment_name"] for e in estimates] == [LORA, FULL]
    for estimate in estimates:
        assert estimate["peak_bytes"] == sum(estimate["breakdown"].values()) > 0
        assert estimate["batch_shapes"] == [[5, 96]]  # no tokenizer next to the config: batch x max length
    assert "batch shape 5 x 96 (batch_size x max_seq_length): no tokenizer" in outcome.stderr
    assert estimates[1]["peak_bytes"] > estimates[0]["peak_bytes"]
    assert estimates[1]["breakdown"]["optimizer_state"] > 0
    table = runner.invoke(app, args[:-1 - 2 * len(params)] + set_options({**params, "model_id": str(config_only)}))
    assert table.exit_code == 0 and "estimated peak training memory" in table.stdout


def test_memory_command_llama_3b_from_config_alone():
    """The PEFT suite's setting: Llama-3.2-3B in bf16, batch 4 x 768, from its config.json alone."""
    outcome = CliRunner().invoke(app, ["memory", str(FIXTURES / "experiments" / LORA), str(FIXTURES / "experiments" / FULL),
                                       "--task", "math", "--set", f"model_id={LLAMA_3B}", "--json"])
    assert outcome.exit_code == 0, outcome.output
    lora, full = json.loads(outcome.stdout)
    assert "batch shape 4 x 768 (batch_size x max_seq_length): the training data is not at hand" in outcome.stderr
    # 3.21 B parameters in bf16 (embedding tied to the output layer), counted in whole 512-byte blocks
    assert full["total_params"] == 3_212_749_824 and full["trainable_params"] == full["total_params"]
    assert 2 * 3_212_749_824 <= full["breakdown"]["parameters"] < 2 * 3_212_749_824 * 1.001
    assert full["breakdown"]["optimizer_state"] >= 2 * full["breakdown"]["parameters"]  # AdamW: two moments
    assert lora["trainable_params"] == 9_175_040  # r=32 on q_proj and v_proj of 28 layers
    assert full["peak_bytes"] > lora["peak_bytes"] > lora["breakdown"]["parameters"]


def _write_experiment(folder: Path, adapter_config: dict) -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps(adapter_config))
    return folder


def test_memory_command_bad_inputs_fail_clearly(tmp_path):
    runner = CliRunner()
    lora = str(FIXTURES / "experiments" / LORA)
    vit = tmp_path / "vit"
    vit.mkdir()
    (vit / "config.json").write_text(json.dumps(
        {"model_type": "vit", "architectures": ["ViTForImageClassification"], "hidden_size": 32,
         "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}))
    not_causal = runner.invoke(app, ["memory", lora, "--task", "math", "--set", f"model_id={vit}"])
    assert not_causal.exit_code == 2
    assert "model_type 'vit'" in not_causal.output and "not a causal language model" in not_causal.output

    wrong_targets = _write_experiment(tmp_path / "lora" / "wrong-targets", {
        "peft_type": "LORA", "r": 8, "target_modules": ["q_proj", "query_key_value"]})
    missing = runner.invoke(app, ["memory", str(wrong_targets), "--task", "math", "--set", f"model_id={LLAMA_3B}"])
    assert missing.exit_code == 2
    assert "query_key_value" in missing.output and "do not exist in the model" in missing.output
    assert "v_proj" in missing.output  # the model's linear modules are listed

    for key in ("batch_size", "max_seq_length"):
        bad_shape = runner.invoke(app, ["memory", lora, "--task", "math", "--set", f"model_id={LLAMA_3B}",
                                        "--set", f"{key}=0"])
        assert bad_shape.exit_code == 2
        assert f"invalid value for '{key}': 0 (must be a positive integer)" in bad_shape.output


def test_memory_command_names_a_method_it_cannot_trace_and_goes_on(tmp_path):
    # SHiRA's sparse mask is found with nonzero(): a shape that depends on values, which fake tensors lack
    shira = _write_experiment(tmp_path / "shira" / "default", {"peft_type": "SHIRA", "r": 8, "target_modules": ["q_proj"]})
    ia3 = _write_experiment(tmp_path / "ia3" / "default", {"peft_type": "IA3", "target_modules": ["v_proj", "down_proj"],
                                                          "feedforward_modules": ["down_proj"]})
    outcome = CliRunner().invoke(app, ["memory", str(shira), str(ia3), "--task", "math", "--json",
                                       "--set", f"model_id={LLAMA_3B}", "--set", "max_seq_length=64"])
    assert outcome.exit_code == 1
    assert "shira/default: could not be traced without the model's weights" in outcome.stderr
    assert "computes shapes from tensor values" in outcome.stderr
    assert [e["experiment_name"] for e in json.loads(outcome.stdout)] == ["ia3/default"]


def test_memory_command_blames_values_only_for_errors_about_values(tmp_path, monkeypatch):
    from peftbench.run import memory_estimates

    def broken(*args, **kwargs):
        raise ValueError("something else went wrong")

    monkeypatch.setattr(memory_estimates, "estimate_training_memory", broken)
    outcome = CliRunner().invoke(app, ["memory", str(FIXTURES / "experiments" / LORA), "--task", "math",
                                       "--set", f"model_id={LLAMA_3B}"])
    assert outcome.exit_code == 1
    assert "(ValueError: something else went wrong)" in outcome.stderr
    assert "tensor values" not in outcome.stderr and "track_memory" in outcome.stderr


def test_memory_command_on_the_default_task_whose_precision_is_auto():
    """math-tiny's use_amp is "auto" (bf16 where native): the estimate, for a GPU, takes a GPU that has it."""
    quick = Path(__file__).resolve().parents[1] / "src" / "peftbench" / "suites" / "quick"
    outcome = CliRunner().invoke(app, ["memory", str(quick / "lora" / "rank16"), str(quick / "full-finetuning" / "default"),
                                       "--task", "math-tiny"], env={"COLUMNS": "80"})
    assert outcome.exit_code == 0, outcome.output
    assert "use_amp 'auto' taken as bf16 autocast" in outcome.stderr
    assert "full-finetuning/default" in outcome.stdout and "activations" in outcome.stdout  # names and parts whole
    as_json = CliRunner().invoke(app, ["memory", str(quick / "lora" / "rank16"), "--task", "math-tiny", "--json",
                                       "--set", "use_amp=false"])
    assert as_json.exit_code == 0 and "use_amp 'auto'" not in as_json.output


def test_track_memory_run_also_watches_evaluation(tmp_path, math_fixture_params):
    experiment = tmp_path / "experiments" / LORA
    shutil.copytree(FIXTURES / "experiments" / LORA, experiment)
    params = {**math_fixture_params, "valid_size": 0, "max_steps": 2, "track_memory": "run"}
    outcome = CliRunner().invoke(app, ["run", str(experiment), "--task", "math", "--results", str(tmp_path / "r"),
                                       "--no-save", *set_options(params)])
    assert outcome.exit_code == 0, outcome.output
    pb = json.loads((tmp_path / "r" / (LORA.replace("/", "--") + ".json")).read_text())["peftbench"]
    assert pb["peak_memory_total_allocated_bytes"] >= pb["peak_memory_train_allocated_bytes"] > 0
    bad = CliRunner().invoke(app, ["run", str(experiment), "--task", "math", "--set", "track_memory=always"])
    assert bad.exit_code == 2 and "invalid value for 'track_memory'" in bad.output


def test_validation_is_left_out_of_the_training_peak_but_counts_in_the_whole_run():
    from peftbench.training.memory import PeakMemoryMeter

    meter = PeakMemoryMeter(torch.device("cpu"))
    meter.start_run()
    meter.start_training()
    during_training = bytearray(64 * 2**20)  # touched pages count in RSS
    del during_training
    with meter.excluded():  # a validation, as the training loop runs it
        during_validation = bytearray(192 * 2**20)
        del during_validation
    meter.end_training()
    report = meter.report()
    assert 56 * 2**20 <= report.peak_memory_train_bytes < 150 * 2**20  # the 64 MiB of training, not the 192 MiB of validation
    assert report.peak_memory_total_bytes >= 180 * 2**20
