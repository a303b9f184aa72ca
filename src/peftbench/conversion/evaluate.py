"""Score a converted adapter on a task, as an ordinary result file beside the original's.

The engine's evaluate mode (a child process: base model + adapter folder -> test score, forgetting, size,
parameters) does the work, through `run_trials` like every other run; this module only names the result and
adds the `conversion` block, so that the report lists `<method>-as-lora` next to `<method>`.
"""

from __future__ import annotations

from pathlib import Path

from peftbench.conversion.report import ConversionReport

CONVERTED_METHOD_SUFFIX = "-as-lora"


def rank_slug(rank_spec: str, vllm: bool) -> str:
    """'r8', 'e0.9', 'full' (+ '-vllm') from a RankSpec.describe() text: the converted result's name part."""
    spec = rank_spec.removesuffix(" (vLLM)")
    if spec.startswith("energy "):
        slug = "e" + spec.removeprefix("energy ")
    elif spec == "full":
        slug = "full"
    else:
        slug = f"r{spec}"
    return slug + ("-vllm" if vllm else "")


def converted_result_names(method: str, name: str, rank_spec: str, vllm: bool) -> tuple[str, str]:
    """(method, name) of a converted adapter's result: `<method>-as-lora`, `<name>-<rank slug>`."""
    return f"{method}{CONVERTED_METHOD_SUFFIX}", f"{name}-{rank_slug(rank_spec, vllm)}"


def source_names(adapter_dir: str | Path, report: ConversionReport) -> tuple[str, str]:
    """(method, name) of the source adapter: from a peftbench checkpoint folder `<method>--<name>`, else guessed."""
    from peftbench.run.request import split_result_stem

    folder = Path(adapter_dir).resolve().name
    return split_result_stem(folder) or (report.peft_type.lower(), folder)


def conversion_block(report: ConversionReport, source_result: Path | None) -> dict:
    layers = report.layers
    return {
        "source_adapter": report.source_adapter,
        "source_result": str(source_result) if source_result else None,
        "source_peft_type": report.peft_type,
        "source_method": report.method,
        "rank": report.rank_spec,
        "vllm": report.vllm,
        "approximate": report.approximate,
        "lora_rank": report.lora_rank,
        "lora_parameters": report.lora_parameters,
        "layer_ranks": {layer.module: layer.rank for layer in layers},
        "energy_kept_min": min(layer.energy_kept for layer in layers),
        "energy_kept_mean": sum(layer.energy_kept for layer in layers) / len(layers),
        "delta_relative_error_max": max(layer.delta_relative_error for layer in layers),
        "max_logits_relative_error": report.max_logits_relative_error,
        "adapter_logits_effect": report.adapter_logits_effect,
        "weight_change_view_error": report.weight_change_view_error,
        "base_model_loaded_as": report.base_model_loaded_as,
    }


def evaluate_converted(
    report: ConversionReport,
    adapter_dir: str | Path,
    lora_dir: str | Path,
    task: str,
    results_dir: str | Path,
    base_model: str,
    overrides: dict | None = None,
    show_progress: bool = True,
):
    """Evaluate the converted LoRA on `task` on the same base model; returns the run's TrialOutcome."""
    from peftbench.runners.batch import run_trials
    from peftbench.run.request import RunRequest, result_stem

    method, name = source_names(adapter_dir, report)
    source_result = Path(results_dir) / f"{result_stem(method, name)}.json"
    converted_method, converted_name = converted_result_names(method, name, report.rank_spec, report.vllm)
    request = RunRequest(
        task=task, results_dir=str(Path(results_dir).resolve()), mode="evaluate",
        adapter_dir=str(Path(lora_dir).resolve()), method=converted_method, name=converted_name,
        overrides={**(overrides or {}), "model_id": str(base_model)}, save_checkpoint=False, force=True,
        conversion=conversion_block(report, source_result if source_result.exists() else None),
        show_progress=show_progress,
    )
    (outcome,) = run_trials([request], description="evaluate", show_progress=False, share_cores=False)
    return outcome
