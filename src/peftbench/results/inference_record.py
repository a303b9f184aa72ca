"""`InferenceResult`: the record of one inference measurement (`peftbench infer`), its file, and its join to
training results.

One file per experiment: RESULTS/inference/<stem>.json, where <stem> is the training result's own stem
(`<method>--<name>`, run.request.result_stem), so that the analysis finds the inference figures of
RESULTS/<stem>.json at RESULTS/inference/<stem>.json, and no table maps one to the other. The base model's
own measurement is RESULTS/inference/base-model.json (no `--`: it can never be an experiment's stem).

The dataclass's fields are the file's keys, under one section `peftbench_inference` (which the training
results' reader does not take for a result file): `inference_document` writes every field without naming any,
and `read_inference_file` reads every field back by its declared type; adding a measurement means adding a
field here and filling it in peftbench.inference.measure.
"""

from __future__ import annotations

import json
import typing
from dataclasses import asdict, dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any, Optional

from peftbench.results.writer import write_json_atomic

SCHEMA_VERSION = 1
SECTION = "peftbench_inference"
INFERENCE_DIR = "inference"  # RESULTS/inference/<stem>.json
BASE_STEM = "base-model"
# The serving modes, in the order they are measured. "full" is a fully fine-tuned model (no adapter).
MODES = ("unmerged", "mixed", "converted", "merged", "full")
# The headline: the cheapest way to serve the adapter as trained (merged where the method can merge); the
# converted LoRA is another adapter (an approximation), and mixed batches are a multi-tenant figure.
HEADLINE_MODES = ("merged", "full", "unmerged")
MAX_INFERENCE_FILE_BYTES = 16 * 2**20


@dataclass
class InferenceResult:
    """Everything one inference measurement produced; fields a failed measurement never reached stay empty.

    A mode block (`base`, each entry of `modes`) is plain JSON:
    {supported, reason, parameters, overhead_pct, overhead_range_pct, noise_pct, within_noise, headline_batch_size,
     lora_rank, lora_parameters, memory: {at_load: {...}, after_generation: {rss_bytes, cuda_...}},
     batches: {"<batch size>": {"<category>": {max_new_tokens, prompts, runs, inference_time_s, spread_pct,
       time_per_token_s, time_to_first_token_s, decode_time_per_token_s, wall_inference_time_s,
       cpu_inference_time_s, base_inference_time_s, base_spread_pct, overhead_pct, within_noise,
       base_time_to_first_token_s, base_decode_time_per_token_s, prefill_overhead_pct, decode_overhead_pct}}}}
    where times are medians over the runs (a run: each prompt of the category generated once; its time the
    mean per call, as PEFT's benchmark), spread_pct = (max - min) / median of the runs, overhead_pct the
    median over runs of the time against the base model's run beside it (same category and batch size),
    within_noise when |overhead| <= the base's own spread, run_overheads_pct each run's. The mode's
    overhead_pct is, at its smallest batch size, the median over runs of each run's mean over the categories,
    overhead_range_pct the lowest and highest of those, noise_pct the base's mean spread. `base`
    (base-model.json only) has the base model's own figures.
    """

    schema_version: int = SCHEMA_VERSION
    task: str = ""
    method: str = ""
    name: str = ""
    experiment_name: str = ""
    status: str = "failed"  # success | failed | cancelled
    error_msg: str = ""
    source: str = ""  # the folder measured (experiment folder, checkpoint, converted LoRA); "" for the base model
    # "untrained" (built from adapter_config.json, as PEFT's benchmark does), "trained" (a saved checkpoint),
    # "converted" (a `peftbench convert` output), "full" (full fine-tuning: no adapter), "base"
    adapter_state: str = ""
    peft_type: Optional[str] = None
    created_at: Optional[str] = None
    model_id: Optional[str] = None
    device: Optional[str] = None  # "cpu" | "cuda:0 (NVIDIA H100 ...)"
    hardware: Optional[dict[str, Any]] = None  # hardware.Hardware.to_dict(): the CPU model or GPU
    precision: Optional[str] = None  # hardware.precision_name
    num_threads: Optional[int] = None
    clock: str = "wall"  # which timer the headline times are from: "wall" (PEFT's) or "cpu" (this process's)
    settings: dict[str, Any] = field(default_factory=dict)  # peftbench.inference.settings.InferenceSettings
    trainable_params: Optional[int] = None
    total_params: Optional[int] = None
    adapter_size_mb: Optional[float] = None  # PEFT's estimate: adapter parameters x bytes of their dtype
    base: dict[str, Any] = field(default_factory=dict)  # the base model's mode block the overheads are against
    modes: dict[str, Any] = field(default_factory=dict)  # mode -> mode block (see above)
    headline_mode: Optional[str] = None  # the first of HEADLINE_MODES that was measured
    inference_overhead_pct: Optional[float] = None  # that mode's overhead_pct
    within_noise: Optional[bool] = None
    package_info: dict[str, Any] = field(default_factory=dict)

    def choose_headline(self) -> None:
        """Set headline_mode, inference_overhead_pct and within_noise from the measured modes."""
        for mode in HEADLINE_MODES:
            block = self.modes.get(mode) or {}
            if block.get("supported") and block.get("overhead_pct") is not None:
                self.headline_mode, self.inference_overhead_pct = mode, block["overhead_pct"]
                self.within_noise = block.get("within_noise")
                return


def inference_path(results_dir: str | Path, stem: str) -> Path:
    return Path(results_dir) / INFERENCE_DIR / f"{stem}.json"


def write_inference(path: Path, result: InferenceResult) -> None:
    write_json_atomic(path, {SECTION: asdict(result)})


@cache
def _kinds() -> dict[str, type]:
    hints = typing.get_type_hints(InferenceResult)
    kinds = {}
    for f in fields(InferenceResult):
        hint = hints[f.name]
        arms = [arm for arm in typing.get_args(hint) if arm is not type(None)] if typing.get_origin(hint) is typing.Union else [hint]
        kinds[f.name] = typing.get_origin(arms[0]) or arms[0]
    return kinds


def read_inference_file(path: str | Path) -> tuple[Optional[InferenceResult], Optional[str]]:
    """(the result, None), or (None, why it cannot be used); never raises for what the file holds. A value of
    the wrong JSON kind is left out (its default kept): the file is untrusted."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_INFERENCE_FILE_BYTES:
            return None, f"{path}: larger than {MAX_INFERENCE_FILE_BYTES >> 20} MiB; not read"
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"{path}: no such file"
    except (OSError, ValueError, RecursionError) as error:
        return None, f"{path}: cannot be read ({type(error).__name__}: {error})"[:300]
    section = data.get(SECTION) if isinstance(data, dict) else None
    if not isinstance(section, dict) and isinstance(data, dict):
        section = _from_peft_layout(data, path.stem)
    if not isinstance(section, dict):
        return None, (f"{path}: not an inference result (no {SECTION!r} object, nor PEFT's text_generation_benchmark "
                      "layout: run_info, generation_info.by_category)")
    values = {}
    for name, kind in _kinds().items():
        value = section.get(name)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if value is not None and isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool)):
            values[name] = value
    return InferenceResult(**values), None


def _number(value: Any) -> Optional[float]:
    finite = isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) != float("inf") and value == value
    return float(value) if finite else None


def _from_peft_layout(data: dict[str, Any], stem: str) -> Optional[dict[str, Any]]:
    """A result file of PEFT's text_generation_benchmark (its utils.BenchmarkResult.to_dict: run_info,
    generation_info, meta_info; named <method>--<name>.json) as this file's section, or None if it is not one.

    PEFT measures one mode, the un-merged adapter at batch size 1, against the base model's cached means in
    another process, with no spread: its categories keep their figures under this file's names
    (inference_time_s, time_per_token_s, base_inference_time_s, overhead_pct), its overall overhead (the mean of
    the categories', as this file's headline) is the mode's, and within_noise stays unknown (None)."""
    run_info, generation, meta = (data.get(key) for key in ("run_info", "generation_info", "meta_info"))
    if not (isinstance(run_info, dict) and isinstance(generation, dict) and isinstance(generation.get("by_category"), dict)):
        return None
    meta = meta if isinstance(meta, dict) else {}
    categories = {}
    for category, entry in generation["by_category"].items():
        metrics = entry.get("metrics") if isinstance(entry, dict) else None
        if not isinstance(metrics, dict):
            continue
        figures = {"inference_time_s": _number(metrics.get("inference_time")),
                   "time_per_token_s": _number(metrics.get("time_per_token")),
                   "base_inference_time_s": _number(metrics.get("base_inference_time")),
                   "overhead_pct": _number(metrics.get("inference_overhead_pct")),
                   "generated_tokens": _number(metrics.get("generated_tokens"))}
        categories[str(category)] = {key: value for key, value in figures.items() if value is not None}
    overall = generation.get("overall") if isinstance(generation.get("overall"), dict) else {}
    overhead = _number(overall.get("inference_overhead_pct"))
    memory = generation.get("memory") if isinstance(generation.get("memory"), dict) else {}
    peaks = {key: value * 2**20 for key, value in (
        ("peak_rss_bytes", _number(memory.get("peak_ram_memory_mb"))),
        ("cuda_max_allocated_bytes", _number(memory.get("peak_accelerator_memory_mb")))) if value is not None}
    unmerged = {"supported": True, "overhead_pct": overhead, "within_noise": None, "headline_batch_size": 1,
                "batches": {"1": categories}, "memory": {"after_generation": peaks}}
    parameters = meta.get("parameters") if isinstance(meta.get("parameters"), dict) else {}
    sizes = meta.get("model_size") if isinstance(meta.get("model_size"), dict) else {}
    hardware = run_info.get("hardware") if isinstance(run_info.get("hardware"), dict) else {}
    config = run_info.get("benchmark_config") if isinstance(run_info.get("benchmark_config"), dict) else {}
    status = run_info.get("status") if run_info.get("status") in ("success", "failed", "cancelled") else "failed"
    method, _, name = stem.partition("--")  # PEFT's experiment_name: <method>--<name>
    return {
        "task": "text_generation_benchmark", "method": method, "name": name, "experiment_name": f"{method}/{name}",
        "status": status, "error_msg": run_info.get("error") or "", "adapter_state": "untrained",
        "peft_type": (run_info.get("peft_config") or {}).get("peft_type") if isinstance(run_info.get("peft_config"), dict) else None,
        "created_at": run_info.get("timestamp"), "model_id": meta.get("model_id") or config.get("model_id"),
        "device": hardware.get("accelerator_type"), "hardware": {"name": hardware.get("accelerator_type")},
        "precision": config.get("dtype"), "clock": "wall", "settings": config,
        "trainable_params": parameters.get("trainable_params"), "total_params": parameters.get("total_params"),
        "adapter_size_mb": sizes.get("adapter_size_mb"), "modes": {"unmerged": unmerged},
        "headline_mode": "unmerged" if overhead is not None else None, "inference_overhead_pct": overhead,
        "package_info": meta.get("package_info") if isinstance(meta.get("package_info"), dict) else {},
    }


def serving_mode_label(result: InferenceResult) -> str:
    """The headline's serving mode in words, e.g. "merged", "unmerged (cannot merge)", "merged, within noise"."""
    mode = result.headline_mode
    if mode not in MODES:  # untrusted: only the names peftbench writes
        return ""
    merged = result.modes.get("merged")
    label = mode
    if mode == "unmerged" and isinstance(merged, dict) and merged.get("supported") is False:
        label += " (cannot merge)"
    if result.within_noise is True:
        label += ", within noise"
    return label


def overhead_range_label(result: InferenceResult) -> str:
    """The headline overhead's range over the measured runs, e.g. "(+40.1 to +55.3)": how far one run of the
    measurement moves it ("" when not recorded: one run, or a file without it)."""
    block = result.modes.get(result.headline_mode or "")
    bounds = block.get("overhead_range_pct") if isinstance(block, dict) else None
    values = [_number(v) for v in bounds] if isinstance(bounds, list) and len(bounds) == 2 else []
    if len(values) != 2 or None in values or values[0] == values[1]:
        return ""
    return f"({values[0]:+.1f} to {values[1]:+.1f})"


def inference_file_of(result_file: Path) -> Path:
    """Where the inference result of the training result `result_file` (RESULTS/<stem>.json) is."""
    return inference_path(result_file.parent, result_file.stem)
