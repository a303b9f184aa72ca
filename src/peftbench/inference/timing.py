"""Timing the serving modes of one adapter: for text, PEFT's measure (greedy `generate` of exactly
max_new_tokens per prompt category, repeated), split into prefill and decode, at each batch size.

Per category and batch size, a run generates each of the category's batches once (batch size 1: each prompt;
larger: the category's prompts repeated to fill the batch, left-padded); its time is the mean time of a call,
as PEFT's "inference time". Time to first token is a call with max_new_tokens=1 (the prefill and one token);
decode per token is the rest of the call divided by the other tokens. For images (time_images): seconds per
generated image.

All modes of one adapter are timed in one loop (_interleave): at each batch size and category, a measured run
times the base model's pristine copy once and then every mode, in an order that rotates from run to run, so
one base run is the yardstick of every mode beside it (a shared machine's load moves them alike: measured,
the base model re-measured in another process came out 28% slower) and is paid once, not once per mode.
Before that, each mode warms up alone (`warmup_runs`: each category's first batch generated in full at each
batch size, not kept), and its memory is read over that warm-up: the process's RSS (and on CUDA the
allocator's figures) when the warm-up starts and after it, with the peak in between (RSS high-water mark,
CUDA max allocated); the process then holds every mode's model and the base model's copy.
"""

from __future__ import annotations

import statistics
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from peftbench.inference.settings import InferenceSettings


def spread_pct(values: list[float]) -> float:
    """(max - min) / median of repeated measurements, in %: the run-to-run noise."""
    middle = statistics.median(values)
    return 100.0 * (max(values) - min(values)) / middle if middle > 0 else 0.0


class Timer:
    """Wall time (perf_counter) and this process's CPU time of one call; CUDA work is waited for."""

    def __init__(self, device) -> None:
        import torch

        self._sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def __call__(self, function: Callable[[], Any]) -> tuple[float, float]:
        self._sync()
        wall, cpu = time.perf_counter(), time.process_time()
        function()
        self._sync()
        return time.perf_counter() - wall, time.process_time() - cpu


def memory_now(device, *, window_start: Optional[dict] = None) -> dict[str, Optional[int]]:
    """RSS and on CUDA the allocator's figures; given the figures at a window's start (_start_memory_window), also
    the peak RSS since then."""
    import torch

    from peftbench.training.memory import current_rss_bytes, peak_rss_bytes

    figures: dict[str, Optional[int]] = {"rss_bytes": current_rss_bytes()}
    if window_start is not None:
        peak = peak_rss_bytes()
        # the kernel updates its high-water mark lazily (not on every page freed), so it can read a few pages
        # below the RSS read at the window's start: the peak of a window is never below its start
        start = window_start.get("rss_bytes")
        figures["peak_rss_bytes"] = max(peak, start) if peak is not None and start is not None else peak
    if device.type == "cuda":
        figures["cuda_allocated_bytes"] = torch.cuda.memory_allocated(device)
        figures["cuda_reserved_bytes"] = torch.cuda.memory_reserved(device)
        figures["cuda_max_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
    return figures


def _start_memory_window(device) -> dict[str, Optional[int]]:
    """The memory figures as a mode begins, and a new peak window for its generation (RSS, CUDA)."""
    import torch

    from peftbench.training.memory import reset_peak_rss

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    reset_peak_rss()
    return memory_now(device)


@dataclass
class Served:
    """One serving mode: its model, the batch sizes it is measured at, and what its generate calls get beside
    the inputs at a batch size (a mixed-adapter batch: peft's adapter_names)."""

    model: Any
    batch_sizes: list[int]
    options: Callable[[int], dict[str, Any]] = lambda batch_size: {}
    parameters: Optional[int] = None  # what the served model holds, counted when it was built
    extra: dict[str, Any] = field(default_factory=dict)  # figures for the mode's block (the converted LoRA's rank)


def time_text(served: dict[str, Served], tokenizer, prompts: dict[str, list[str]], settings: InferenceSettings,
              device, *, clock: str, autocast: bool, reference=None,
              on_step: Callable[[], None] = lambda: None) -> dict[str, dict[str, Any]]:
    """Each mode's measured block: {"batches": {...}, "memory": {...}} (see results.inference_record), with
    the overheads against `reference` (the base model) when it is given."""
    import torch

    timer = Timer(device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if autocast else nullcontext()
    encoded: dict[tuple[int, str], list[dict[str, Any]]] = {}

    def run(entry: Served, unit: tuple[int, str], warmup: bool = False):
        """(mean wall, mean cpu) of a full call and of a first-token call over the unit's batches."""
        size, category = unit
        if unit not in encoded:
            encoded[unit] = _encoded_batches(tokenizer, prompts[category], size, device)
        calls, new_tokens, options = encoded[unit], settings.max_new_tokens[category], entry.options(size)

        def generate(inputs, n):
            entry.model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, **options)

        if warmup:
            generate(calls[0], new_tokens)
            return None
        full = [timer(lambda inputs=inputs: generate(inputs, new_tokens)) for inputs in calls]
        first = [timer(lambda inputs=inputs: generate(inputs, 1)) for inputs in calls]
        return tuple(map(statistics.fmean, zip(*full))), tuple(map(statistics.fmean, zip(*first)))

    with torch.inference_mode(), amp:
        runs, reference_runs, memory = _interleave(
            served, reference, lambda entry: [(size, c) for size in entry.batch_sizes for c in prompts], run,
            settings, device, on_step)
    blocks = {}
    for mode, per_unit in runs.items():
        batches: dict[str, Any] = {}
        for (size, category), mode_runs in per_unit.items():
            batches.setdefault(str(size), {})[category] = _category(
                mode_runs, reference_runs.get((size, category), []), clock, settings.max_new_tokens[category],
                len(prompts[category]))
        blocks[mode] = _block(batches, memory[mode], served[mode], reference is not None)
    return blocks


def _block(batches: dict[str, Any], memory: dict[str, Any], entry: Served, paired: bool) -> dict[str, Any]:
    block: dict[str, Any] = {"supported": True, "parameters": entry.parameters, **entry.extra, "batches": batches,
                             "memory": memory}
    if paired:
        _headline(block)
    return block


def _interleave(served: dict[str, Served], reference, units_of: Callable[[Served], list], run: Callable,
                settings: InferenceSettings, device, on_step: Callable[[], None]):
    """({mode: {unit: [measured run, ...]}}, {unit: [the reference's runs]}, {mode: memory}): each mode's
    warm-up alone, in its memory window; then, for each measured run and unit (batch size and category), the
    reference and every mode measured at that unit, each once, the first of them rotating from run to run."""
    memory = {}
    for mode, entry in served.items():
        window = _start_memory_window(device)
        for _ in range(settings.warmup_runs):
            for unit in units_of(entry):
                run(entry, unit, warmup=True)
        memory[mode] = {"at_load": window, "after_generation": memory_now(device, window_start=window)}
        on_step()
    units = list(dict.fromkeys(unit for entry in served.values() for unit in units_of(entry)))
    yardstick = Served(reference, []) if reference is not None else None
    if yardstick is not None:
        for _ in range(settings.warmup_runs):
            for unit in units:
                run(yardstick, unit, warmup=True)
    runs = {mode: {unit: [] for unit in units_of(entry)} for mode, entry in served.items()}
    reference_runs: dict[Any, list] = {unit: [] for unit in units} if yardstick is not None else {}
    for index in range(settings.runs):
        for unit in units:
            players = [(None, yardstick)] if yardstick is not None else []
            players += [(mode, entry) for mode, entry in served.items() if unit in runs[mode]]
            turn = index % len(players)
            for mode, entry in players[turn:] + players[:turn]:
                (reference_runs if mode is None else runs[mode])[unit].append(run(entry, unit))
            on_step()
    return runs, reference_runs, memory


def steps_of(served: dict[str, Served], settings: InferenceSettings, categories: int) -> int:
    """How many on_step calls time_text or time_images makes (for a progress bar)."""
    units = {(size, c) for entry in served.values() for size in entry.batch_sizes for c in range(categories)}
    return len(served) + settings.runs * len(units)


def _category(runs: list[tuple], reference_runs: list[tuple], clock: str, new_tokens: int, prompts: int) -> dict[str, Any]:
    """One category's figures from its runs: ((wall, cpu) of the full call, (wall, cpu) of the first token)."""
    index = 0 if clock == "wall" else 1
    calls = [full[index] for full, _ in runs]
    call_s, first_s = statistics.median(calls), statistics.median(first[index] for _, first in runs)
    figures = {
        "max_new_tokens": new_tokens, "prompts": prompts, "runs": len(runs),
        "inference_time_s": call_s, "spread_pct": spread_pct(calls),
        "time_per_token_s": call_s / new_tokens,
        "time_to_first_token_s": first_s,
        "decode_time_per_token_s": max(call_s - first_s, 0.0) / (new_tokens - 1),
        "wall_inference_time_s": statistics.median(full[0] for full, _ in runs),
        "cpu_inference_time_s": statistics.median(full[1] for full, _ in runs),
    }
    figures.update(_paired(calls, [full[index] for full, _ in reference_runs]))
    if reference_runs:  # the prefill's and the decode's own overheads, from the medians
        base = _category(reference_runs, [], clock, new_tokens, prompts)
        figures["base_time_to_first_token_s"] = base["time_to_first_token_s"]
        figures["base_decode_time_per_token_s"] = base["decode_time_per_token_s"]
        figures["prefill_overhead_pct"] = _percent(first_s, base["time_to_first_token_s"])
        figures["decode_overhead_pct"] = _percent(figures["decode_time_per_token_s"], base["decode_time_per_token_s"])
    return figures


def _percent(value: float, base: float) -> Optional[float]:
    return 100.0 * (value / base - 1) if base > 0 else None


def _paired(calls: list[float], base: list[float]) -> dict[str, Any]:
    """The overhead against the base model's runs beside them: each run's, their median, and whether that is
    within the base's own run-to-run spread (nothing without base runs)."""
    if not base:
        return {}
    per_run = [100.0 * (c / b - 1) for c, b in zip(calls, base)]
    overhead = statistics.median(per_run)
    return {"base_inference_time_s": statistics.median(base), "base_spread_pct": spread_pct(base),
            "overhead_pct": overhead, "run_overheads_pct": per_run, "within_noise": abs(overhead) <= spread_pct(base)}


def time_images(served: dict[str, Served], parts, prompts: list[str], config, settings: InferenceSettings, *,
                clock: str, reference=None, on_step: Callable[[], None] = lambda: None) -> dict[str, dict[str, Any]]:
    """Seconds per generated image (one prompt a call, the task's inference steps and guidance), each mode
    paired with the base model's runs as time_text pairs them. Image generation is measured at batch size 1."""
    import torch

    from peftbench.tasks.image_gen.generation import generate, pipeline_with, place

    place(parts, next(iter(served.values())).model)
    device = parts.device
    timer = Timer(device)
    index = 0 if clock == "wall" else 1

    def run(entry: Served, unit, warmup: bool = False) -> Optional[float]:
        generator = torch.Generator(device=device).manual_seed(settings.seed)
        with pipeline_with(parts, entry.model) as pipeline:
            if warmup:
                generate(pipeline, parts, prompts[:1], generator, config)
                return None
            times = [timer(lambda prompt=prompt: generate(pipeline, parts, [prompt], generator, config))
                     for prompt in prompts]
        return statistics.fmean(t[index] for t in times)

    runs, reference_runs, memory = _interleave(served, reference, lambda entry: [(1, "image")], run, settings,
                                               device, on_step)
    blocks = {}
    for mode, per_unit in runs.items():
        mode_runs = per_unit[(1, "image")]
        image = {"num_inference_steps": config.num_inference_steps, "guidance_scale": config.guidance_scale,
                 "resolution": config.resolution, "prompts": len(prompts), "runs": len(mode_runs),
                 "seconds_per_image": statistics.median(mode_runs), "inference_time_s": statistics.median(mode_runs),
                 "spread_pct": spread_pct(mode_runs), **_paired(mode_runs, reference_runs.get((1, "image"), []))}
        blocks[mode] = _block({"1": {"image": image}}, memory[mode], served[mode], reference is not None)
    return blocks


def _headline(block: dict[str, Any]) -> None:
    """The mode's headline at its smallest batch size (1 where measured): each run's overhead, the mean over the
    categories of that run against the base model's runs beside it; their median, and their range (lowest,
    highest), which therefore holds the median; the base model's own run-to-run spread is the noise level."""
    size = min(block["batches"], key=int)
    categories = list(block["batches"][size].values())
    per_run = [statistics.fmean(run) for run in zip(*(c["run_overheads_pct"] for c in categories))]
    block["overhead_pct"] = statistics.median(per_run)
    block["overhead_range_pct"] = [min(per_run), max(per_run)]
    block["noise_pct"] = statistics.fmean(c["base_spread_pct"] for c in categories)
    block["within_noise"] = abs(block["overhead_pct"]) <= block["noise_pct"]
    block["headline_batch_size"] = int(size)


def _encoded_batches(tokenizer, texts: list[str], batch_size: int, device) -> list[dict[str, Any]]:
    if batch_size == 1:
        groups = [[text] for text in texts]
    else:  # one batch: the category's prompts, repeated to fill it
        groups = [[texts[i % len(texts)] for i in range(batch_size)]]
    return [tokenizer(group, return_tensors="pt", padding=True).to(device) for group in groups]
