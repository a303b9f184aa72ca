"""`InferenceResult`: the record of one inference measurement (`peftbench infer`), its file, and its join to
training results.

One file per experiment: RESULTS/inference/<stem>.json, where <stem> is the training result's own stem
(`<method>--<name>`, runners.request.result_stem), so that the analysis finds the inference figures of
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
    {supported, reason, parameters, overhead_pct, noise_pct, within_noise, headline_batch_size, lora_rank,
     lora_parameters, memory: {at_load: {...}, after_generation: {rss_bytes, cuda_...}},
     batches: {"<batch size>": {"<category>": {max_new_tokens, prompts, runs, inference_time_s, spread_pct,
       time_per_token_s, time_to_first_token_s, decode_time_per_token_s, wall_inference_time_s,
       cpu_inference_time_s, base_inference_time_s, base_spread_pct, overhead_pct, within_noise,
       base_time_to_first_token_s, base_decode_time_per_token_s, prefill_overhead_pct, decode_overhead_pct}}}}
    where times are medians over the runs (a run: each prompt of the category generated once; its time the
    mean per call, as PEFT's benchmark), spread_pct = (max - min) / median of the runs, overhead_pct the
    median over runs of the time against the base model's run beside it (same category and batch size),
    within_noise when |overhead| <= the base's own spread. The mode's overhead_pct is the mean over the
    categories at its smallest batch size. `base` (base-model.json only) has the base model's own figures.
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
    if not isinstance(section, dict):
        return None, f"{path}: not an inference result (no {SECTION!r} object)"
    values = {}
    for name, kind in _kinds().items():
        value = section.get(name)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if value is not None and isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool)):
            values[name] = value
    return InferenceResult(**values), None


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


def inference_file_of(result_file: Path) -> Path:
    """Where the inference result of the training result `result_file` (RESULTS/<stem>.json) is."""
    return inference_path(result_file.parent, result_file.stem)
