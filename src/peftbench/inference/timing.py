"""Timing one model in one serving mode: PEFT's measure (greedy `generate` of exactly max_new_tokens per prompt
category, repeated), split into prefill and decode, at each batch size.

Per category and batch size, a run generates each of the category's batches once (batch size 1: each prompt;
larger: the category's prompts repeated to fill the batch, left-padded); its time is the mean time of a call,
as PEFT's "inference time". Time to first token is a call with max_new_tokens=1 (the prefill and one token);
decode per token is the rest of the call divided by the other tokens. Warm-up runs come first and are not
kept. Memory: the process's RSS (and on CUDA the allocator's figures) when the mode is ready and after its
generation.
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


def memory_now(device) -> dict[str, Optional[int]]:
    import psutil
    import torch

    figures: dict[str, Optional[int]] = {"rss_bytes": psutil.Process().memory_info().rss}
    if device.type == "cuda":
        figures["cuda_allocated_bytes"] = torch.cuda.memory_allocated(device)
        figures["cuda_reserved_bytes"] = torch.cuda.memory_reserved(device)
        figures["cuda_max_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
    return figures


def time_mode(model, tokenizer, prompts: dict[str, list[str]], settings: InferenceSettings, device, *,
              clock: str, autocast: bool, batch_sizes: Optional[list[int]] = None,
              adapter_names: Optional[Callable[[int], list[str]]] = None,
              on_step: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """The mode block's measured part: {"batches": {...}, "memory": {...}} (see results.inference_record).

    `adapter_names(batch_size)` gives peft's per-row adapter names for a mixed-adapter batch.
    """
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    memory = {"at_load": memory_now(device)}
    timer = Timer(device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if autocast else nullcontext()
    batches: dict[str, Any] = {}
    for batch_size in batch_sizes or settings.batch_sizes:
        extra = {"adapter_names": adapter_names(batch_size)} if adapter_names else {}
        per_category = {}
        for category, texts in prompts.items():
            new_tokens = settings.max_new_tokens[category]
            calls = _encoded_batches(tokenizer, texts, batch_size, device)

            def generate(inputs, n, extra=extra):
                model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                               pad_token_id=tokenizer.pad_token_id, **extra)

            runs: dict[str, list[float]] = {"wall": [], "cpu": [], "first_wall": [], "first_cpu": []}
            with torch.inference_mode(), amp:
                for run in range(settings.warmup_runs + settings.runs):
                    full = [timer(lambda inputs=inputs: generate(inputs, new_tokens)) for inputs in calls]
                    first = [timer(lambda inputs=inputs: generate(inputs, 1)) for inputs in calls]
                    if run >= settings.warmup_runs:
                        runs["wall"].append(statistics.fmean(t[0] for t in full))
                        runs["cpu"].append(statistics.fmean(t[1] for t in full))
                        runs["first_wall"].append(statistics.fmean(t[0] for t in first))
                        runs["first_cpu"].append(statistics.fmean(t[1] for t in first))
                    on_step()
            headline, first = runs[clock], runs[f"first_{clock}"]
            call_s, first_s = statistics.median(headline), statistics.median(first)
            per_category[category] = {
                "max_new_tokens": new_tokens, "prompts": len(texts), "runs": settings.runs,
                "inference_time_s": call_s, "spread_pct": spread_pct(headline),
                "time_per_token_s": call_s / new_tokens,
                "time_to_first_token_s": first_s,
                "decode_time_per_token_s": max(call_s - first_s, 0.0) / (new_tokens - 1),
                "wall_inference_time_s": statistics.median(runs["wall"]),
                "cpu_inference_time_s": statistics.median(runs["cpu"]),
            }
        batches[str(batch_size)] = per_category
    memory["after_generation"] = memory_now(device)
    return {"batches": batches, "memory": memory}


def steps_of(settings: InferenceSettings, batch_sizes: Optional[list[int]] = None) -> int:
    """How many on_step calls time_mode makes (for a progress bar)."""
    return len(batch_sizes or settings.batch_sizes) * len(settings.max_new_tokens) * (settings.warmup_runs + settings.runs)


def _encoded_batches(tokenizer, texts: list[str], batch_size: int, device) -> list[dict[str, Any]]:
    if batch_size == 1:
        groups = [[text] for text in texts]
    else:  # one batch: the category's prompts, repeated to fill it
        groups = [[texts[i % len(texts)] for i in range(batch_size)]]
    return [tokenizer(group, return_tensors="pt", padding=True).to(device) for group in groups]


def compare_with_base(block: dict[str, Any], base: dict[str, Any]) -> None:
    """Fill a mode block's overheads against the base model's block: per category and batch size, and the
    mode's headline (batch size 1 where measured, else the smallest: the mean over the categories), with the
    base's own spread as the noise level."""
    for size, categories in block.get("batches", {}).items():
        for category, measured in categories.items():
            reference = base.get("batches", {}).get(size, {}).get(category)
            if reference is None:
                continue
            overhead = 100.0 * (measured["inference_time_s"] - reference["inference_time_s"]) / reference["inference_time_s"]
            measured["overhead_pct"] = overhead
            measured["within_noise"] = abs(overhead) <= reference["spread_pct"]
    sizes = sorted(block.get("batches", {}), key=int)
    headline = [m for m in block["batches"][sizes[0]].values() if "overhead_pct" in m] if sizes else []
    if headline:
        base_spread = [base["batches"][sizes[0]][c]["spread_pct"] for c in block["batches"][sizes[0]]]
        block["overhead_pct"] = statistics.fmean(m["overhead_pct"] for m in headline)
        block["noise_pct"] = statistics.fmean(base_spread)
        block["within_noise"] = abs(block["overhead_pct"]) <= block["noise_pct"]
        block["headline_batch_size"] = int(sizes[0])
