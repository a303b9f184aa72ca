"""Timing one model in one serving mode: for text, PEFT's measure (greedy `generate` of exactly max_new_tokens per prompt
category, repeated), split into prefill and decode, at each batch size.

Per category and batch size, a run generates each of the category's batches once (batch size 1: each prompt;
larger: the category's prompts repeated to fill the batch, left-padded); its time is the mean time of a call,
as PEFT's "inference time". Time to first token is a call with max_new_tokens=1 (the prefill and one token);
decode per token is the rest of the call divided by the other tokens. Warm-up runs come first and are not
kept. For images (time_images): seconds per generated image. Memory: the process's RSS (and on CUDA the
allocator's figures) when the mode is ready and after its generation, with the peak in between (RSS
high-water mark, CUDA max allocated).
"""

from __future__ import annotations

import statistics
import time
from contextlib import nullcontext
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


def time_mode(model, tokenizer, prompts: dict[str, list[str]], settings: InferenceSettings, device, *,
              clock: str, autocast: bool, reference=None, batch_sizes: Optional[list[int]] = None,
              adapter_names: Optional[Callable[[int], list[str]]] = None,
              on_step: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """The mode block's measured part: {"batches": {...}, "memory": {...}} (see results.inference_record).

    With a `reference` (the base model), each run times the reference too, alternating which goes first, and
    the overhead is the median over runs of the paired ratio: a shared machine's load moves both alike
    (measured: the base model re-measured in another process came out 28% slower). `adapter_names(batch_size)`
    gives peft's per-row adapter names for a mixed-adapter batch.
    """
    import torch

    memory = {"at_load": _start_memory_window(device)}
    timer = Timer(device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if autocast else nullcontext()
    batches: dict[str, Any] = {}
    for batch_size in batch_sizes or settings.batch_sizes:
        extra = {"adapter_names": adapter_names(batch_size)} if adapter_names else {}
        per_category = {}
        for category, texts in prompts.items():
            new_tokens = settings.max_new_tokens[category]
            calls = _encoded_batches(tokenizer, texts, batch_size, device)

            def one_run(measured, options) -> tuple[tuple[float, float], tuple[float, float]]:
                """(mean wall, mean cpu) of a full call and of a first-token call, over the category's batches."""
                def generate(inputs, n):
                    measured.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                      pad_token_id=tokenizer.pad_token_id, **options)

                full = [timer(lambda inputs=inputs: generate(inputs, new_tokens)) for inputs in calls]
                first = [timer(lambda inputs=inputs: generate(inputs, 1)) for inputs in calls]
                return tuple(map(statistics.fmean, zip(*full))), tuple(map(statistics.fmean, zip(*first)))

            runs: list[tuple] = []
            reference_runs: list[tuple] = []
            with torch.inference_mode(), amp:
                for run in range(settings.warmup_runs + settings.runs):
                    if reference is not None and run % 2:
                        reference_runs.append(one_run(reference, {}))
                    runs.append(one_run(model, extra))
                    if reference is not None and not run % 2:
                        reference_runs.append(one_run(reference, {}))
                    on_step()
            per_category[category] = _category(runs[settings.warmup_runs:], reference_runs[settings.warmup_runs:],
                                               clock, new_tokens, len(texts))
        batches[str(batch_size)] = per_category
    memory["after_generation"] = memory_now(device, window_start=memory["at_load"])
    block: dict[str, Any] = {"batches": batches, "memory": memory}
    if reference is not None:
        _headline(block)
    return block


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
    """The overhead against the base model's runs beside them: the median of the paired ratios, and whether
    it is within the base's own run-to-run spread (nothing without base runs)."""
    if not base:
        return {}
    overhead = statistics.median(100.0 * (c / b - 1) for c, b in zip(calls, base))
    return {"base_inference_time_s": statistics.median(base), "base_spread_pct": spread_pct(base),
            "overhead_pct": overhead, "within_noise": abs(overhead) <= spread_pct(base)}


def time_images(model, parts, prompts: list[str], config, settings: InferenceSettings, *, clock: str,
                reference=None, on_step: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """Seconds per generated image (one prompt a call, the task's inference steps and guidance), paired with
    the base model's runs as time_mode pairs them. Image generation is measured at batch size 1."""
    import torch

    from peftbench.tasks.image_gen.generation import generate, pipeline_with, place

    place(parts, model)
    device = parts.device
    memory = {"at_load": _start_memory_window(device)}
    timer = Timer(device)
    index = 0 if clock == "wall" else 1

    def one_run(measured) -> float:
        generator = torch.Generator(device=device).manual_seed(settings.seed)
        with pipeline_with(parts, measured) as pipeline:
            times = [timer(lambda prompt=prompt: generate(pipeline, parts, [prompt], generator, config))
                     for prompt in prompts]
        return statistics.fmean(t[index] for t in times)

    runs: list[float] = []
    reference_runs: list[float] = []
    for run in range(settings.warmup_runs + settings.runs):
        if reference is not None and run % 2:
            reference_runs.append(one_run(reference))
        runs.append(one_run(model))
        if reference is not None and not run % 2:
            reference_runs.append(one_run(reference))
        on_step()
    runs, reference_runs = runs[settings.warmup_runs:], reference_runs[settings.warmup_runs:]
    image = {"num_inference_steps": config.num_inference_steps, "guidance_scale": config.guidance_scale,
             "resolution": config.resolution, "prompts": len(prompts), "runs": len(runs),
             "seconds_per_image": statistics.median(runs), "inference_time_s": statistics.median(runs),
             "spread_pct": spread_pct(runs), **_paired(runs, reference_runs)}
    memory["after_generation"] = memory_now(device, window_start=memory["at_load"])
    block: dict[str, Any] = {"batches": {"1": {"image": image}}, "memory": memory}
    if reference is not None:
        _headline(block)
    return block


def _headline(block: dict[str, Any]) -> None:
    """The mode's headline: the mean over categories at its smallest batch size (1 where measured), with the
    base model's own run-to-run spread as the noise level."""
    size = min(block["batches"], key=int)
    categories = block["batches"][size].values()
    block["overhead_pct"] = statistics.fmean(c["overhead_pct"] for c in categories)
    block["noise_pct"] = statistics.fmean(c["base_spread_pct"] for c in categories)
    block["within_noise"] = abs(block["overhead_pct"]) <= block["noise_pct"]
    block["headline_batch_size"] = int(size)


def steps_of(settings: InferenceSettings, batch_sizes: Optional[list[int]] = None) -> int:
    """How many on_step calls time_mode makes (for a progress bar)."""
    return len(batch_sizes or settings.batch_sizes) * len(settings.max_new_tokens) * (settings.warmup_runs + settings.runs)


def _encoded_batches(tokenizer, texts: list[str], batch_size: int, device) -> list[dict[str, Any]]:
    if batch_size == 1:
        groups = [[text] for text in texts]
    else:  # one batch: the category's prompts, repeated to fill it
        groups = [[texts[i % len(texts)] for i in range(batch_size)]]
    return [tokenizer(group, return_tensors="pt", padding=True).to(device) for group in groups]
