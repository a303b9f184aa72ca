"""What an inference measurement does: prompts, lengths, repeats, batch sizes, serving modes.

The defaults are PEFT's text_generation_benchmark (default_benchmark_params.json, configs/prompts.json): its
published settings. A task may declare smaller ones (`Task.inference_params`: math-tiny's fit the quick suite
into minutes on two CPU cores), and `peftbench infer --set KEY=VALUE` overrides either.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Optional

from peftbench.config import ConfigError

CATEGORIES = ("short", "medium", "long")  # PEFT's prompt categories
MEASURED_MODES = ("unmerged", "mixed", "converted", "merged")  # what --set modes=[...] may list
CLOCKS = ("auto", "wall", "cpu")


@dataclass
class InferenceSettings:
    # PEFT's configs/prompts.json (shipped in the package), or a JSON file of the same layout
    prompts: str = "peft"
    prompts_per_category: Optional[int] = None  # the first N prompts of each category (None: all, PEFT's 5)
    max_new_tokens: dict[str, int] = field(default_factory=lambda: {"short": 20, "medium": 50, "long": 100})
    runs: int = 10  # PEFT's num_inference_runs
    # runs of each mode alone before the measured ones, each category's first batch at each batch size, not
    # kept (PEFT's benchmark has none: its first call's lazy initialisation is inside its mean); the mode's
    # memory is read over them, so there is at least one
    warmup_runs: int = 1
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8])
    modes: list[str] = field(default_factory=lambda: list(MEASURED_MODES))
    # the modes measured at every batch size; the others at the smallest only (mixed: the smallest above 1)
    modes_at_every_batch_size: list[str] = field(default_factory=lambda: list(MEASURED_MODES))
    converted_rank: int = 16  # the rank of the "converted" mode's LoRA (peftbench convert --rank)
    seed: int = 42
    # "wall" (PEFT's: time.perf_counter) or "cpu" (this process's CPU time: barely moved by other processes on a
    # shared machine, and equal to the wall time on an idle core at one thread); "auto": cpu on a CPU at one
    # thread, wall otherwise
    clock: str = "auto"

    @classmethod
    def build(cls, task_params: dict[str, Any], overrides: dict[str, Any], where: str = "--set") -> "InferenceSettings":
        known = {f.name for f in fields(cls)}
        for source, values in (("the task's inference_params", task_params), (where, overrides)):
            unknown = sorted(set(values) - known)
            if unknown:
                raise ConfigError(f"{source}: unknown inference setting {unknown[0]!r}; valid: {', '.join(sorted(known))}")
        settings = cls(**{**task_params, **overrides})
        settings.validate(where)
        return settings

    def validate(self, where: str) -> None:
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"{where}: invalid inference setting {key}={getattr(self, key)!r} ({why})", key=key)

        if not isinstance(self.prompts, str) or not self.prompts:
            raise bad("prompts", "'peft' or a JSON file {category: [prompt, ...]}")
        if self.prompts_per_category is not None and not _positive_int(self.prompts_per_category):
            raise bad("prompts_per_category", "a positive integer or null")
        if not isinstance(self.max_new_tokens, dict) or set(self.max_new_tokens) != set(CATEGORIES) or not all(
                _positive_int(n) and n >= 2 for n in self.max_new_tokens.values()):
            raise bad("max_new_tokens", f"an object with integers >= 2 for {', '.join(CATEGORIES)}")
        for key in ("runs", "converted_rank"):
            if not _positive_int(getattr(self, key)):
                raise bad(key, "a positive integer")
        if not _positive_int(self.warmup_runs):
            raise bad("warmup_runs", "a positive integer: a mode's memory is read over its warm-up")
        if not isinstance(self.batch_sizes, list) or not self.batch_sizes or not all(map(_positive_int, self.batch_sizes)):
            raise bad("batch_sizes", "a non-empty list of positive integers, e.g. [1, 8]")
        for key in ("modes", "modes_at_every_batch_size"):
            value = getattr(self, key)
            if not isinstance(value, list) or not all(isinstance(m, str) for m in value) or not set(value) <= set(MEASURED_MODES):
                raise bad(key, f"a list of {', '.join(MEASURED_MODES)}")
        if self.clock not in CLOCKS:
            raise bad("clock", f"valid: {', '.join(CLOCKS)}")
        load_prompts(self)  # a missing or malformed prompts file is an error now, before any model loads

    def batch_sizes_of(self, mode: str) -> list[int]:
        """The batch sizes `mode` is measured at ([] for a mixed batch when every size is 1)."""
        sizes = sorted(self.batch_sizes)
        if mode == "mixed":
            sizes = [size for size in sizes if size > 1]
        return sizes if mode in self.modes_at_every_batch_size else sizes[:1]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def load_prompts(settings: InferenceSettings) -> dict[str, list[str]]:
    """The prompts per category, cut to prompts_per_category; a ConfigError naming the file for a bad one."""
    if settings.prompts == "peft":
        source = "PEFT's configs/prompts.json"
        text = resources.files("peftbench.inference").joinpath("prompts.json").read_text(encoding="utf-8")
    else:
        source = settings.prompts
        try:
            text = Path(settings.prompts).read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(f"prompts file {source}: cannot be read ({error.strerror or error})") from None
    try:
        prompts = json.loads(text)
    except ValueError as error:
        raise ConfigError(f"prompts file {source}: not valid JSON ({error})") from None
    if not isinstance(prompts, dict) or not all(
            isinstance(prompts.get(c), list) and prompts[c] and all(isinstance(p, str) and p for p in prompts[c])
            for c in CATEGORIES):
        raise ConfigError(f"prompts file {source}: expected {{{', '.join(repr(c) + ': [text, ...]' for c in CATEGORIES)}}}")
    return {category: prompts[category][: settings.prompts_per_category] for category in CATEGORIES}
