"""The tables `peftbench infer` prints: per adapter, the overhead of each serving mode against the base model,
its time to first token and decode time per token (image tasks: seconds per image). Strings from result files go into rich Text, never markup."""

from __future__ import annotations

import textwrap
from typing import Any, Optional

from rich.table import Table
from rich.text import Text

from peftbench.results.inference_record import InferenceResult

TABLE_MODES = ("unmerged", "merged", "converted", "mixed")
NOTE_CHARS = 160  # of each mode's reason in the table, cut at a word; the result file has it whole


def format_overhead(value: Optional[float], within_noise: Optional[bool] = None) -> str:
    """"+12.3%", "-0.4% ~" (~: within the base model's own run-to-run spread), "-" when not measured."""
    if value is None:
        return "-"
    return f"{value:+.1f}%" + (" ~" if within_noise else "")


def _mode_cell(result: InferenceResult, mode: str) -> Text:
    block: Any = result.modes.get(mode, result.modes.get("full") if mode == "unmerged" else None)
    if not isinstance(block, dict):
        return Text("-")
    if block.get("supported") is False:
        return Text("n/a", style="dim")
    text = format_overhead(block.get("overhead_pct"), block.get("within_noise"))
    bounds = block.get("overhead_range_pct")
    if text != "-" and isinstance(bounds, list) and len(bounds) == 2 and all(_number(b) for b in bounds):
        text += f"\n{bounds[0]:+.0f}..{bounds[1]:+.0f}"  # how far the runs moved it
    return Text(text)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _milliseconds(value: Any) -> str:
    return f"{1000 * value:.2f}" if _number(value) else "-"


def _with_overhead(text: str, overhead: Any) -> str:
    return f"{text} ({format_overhead(overhead)})" if _number(overhead) and text != "-" else text


def _seconds(value: Any) -> str:
    return f"{value:.3g}" if _number(value) else "-"


def _first_category_name(result: InferenceResult) -> str:
    """"image" for an image task's result (its one category), else the text category's name or ""."""
    for block in result.modes.values():
        batches = block.get("batches") if isinstance(block, dict) else None
        if isinstance(batches, dict):
            for categories in batches.values():
                if isinstance(categories, dict) and categories:
                    return next(iter(categories))
    return ""


def inference_tables(results: list[InferenceResult]) -> list[Table]:
    """Tables that each fit 80 columns: the overheads per serving mode, the un-merged prefill and decode times, and
    why a mode cannot serve (one table of all three cut every column at 80)."""
    overheads = Table(title="Inference overhead against the base model, batch size 1: the median over runs of each "
                            "run's mean over prompt categories; below it, the lowest..highest run; ~ within noise; "
                            "n/a: the method cannot serve so", title_justify="left", header_style="bold")
    overheads.add_column("experiment", overflow="fold", min_width=16)
    for mode in TABLE_MODES:
        overheads.add_column(mode, justify="right", no_wrap=True)
    times = Table(title="Un-merged time to first token and decode time per token (short prompts), with their own "
                        "overheads", title_justify="left", header_style="bold")
    times.add_column("experiment", overflow="fold", min_width=16)
    times.add_column("adapter", overflow="fold")
    times.add_column("TTFT ms", justify="right")
    times.add_column("decode ms/token", justify="right")
    images = any("image" in _first_category_name(r) for r in results)
    if images:
        times.add_column("s/image", justify="right")
    notes_table = Table(title="Notes: what is served, and why a mode shows n/a", title_justify="left", header_style="bold")
    notes_table.add_column("experiment", overflow="fold", min_width=16)
    notes_table.add_column("note", overflow="fold")
    for result in results:
        unmerged = result.modes.get("unmerged") if isinstance(result.modes.get("unmerged"), dict) else None
        serving = unmerged or result.modes.get("full") or {}
        category = _first_category(serving)
        notes = [f"{mode}: {textwrap.shorten(str(block.get('reason', '')), NOTE_CHARS, placeholder=' …')}" for mode, block in result.modes.items()
                 if isinstance(block, dict) and block.get("supported") is False]
        if "full" in result.modes:
            notes.insert(0, "full fine-tuning: the whole model is served, no adapter")
        if result.status != "success":
            notes = [f"{result.status}: {result.error_msg.strip().splitlines()[0] if result.error_msg.strip() else ''}"]
        overheads.add_row(Text(result.experiment_name), *[_mode_cell(result, mode) for mode in TABLE_MODES])
        times.add_row(
            Text(result.experiment_name), Text(result.adapter_state),
            _with_overhead(_milliseconds(category.get("time_to_first_token_s")), category.get("prefill_overhead_pct")),
            _with_overhead(_milliseconds(category.get("decode_time_per_token_s")), category.get("decode_overhead_pct")),
            *([_seconds(category.get("seconds_per_image"))] if images else []),
        )
        if notes:
            notes_table.add_row(Text(result.experiment_name), Text("; ".join(notes), style="dim"))
    return [overheads, times] + ([notes_table] if notes_table.row_count else [])


def _first_category(block: dict[str, Any]) -> dict[str, Any]:
    """The smallest batch size's first category (PEFT's "short") of a mode block, or {}."""
    batches = block.get("batches") if isinstance(block, dict) else None
    if not isinstance(batches, dict) or not batches:
        return {}
    categories = batches[min(batches, key=lambda size: int(size) if size.isdigit() else 1 << 30)]
    return next(iter(categories.values()), {}) if isinstance(categories, dict) else {}
