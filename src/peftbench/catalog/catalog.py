"""The method catalog: every method the installed peft registers, what the probe found it can do, and how it
did on each benchmark; selecting methods by capability."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from peftbench.catalog.benchmarks import Benchmark, load_benchmarks
from peftbench.catalog.capabilities import ALL_CAPABILITIES, YES, Finding, capability_name
from peftbench.results.reader import LoadWarning


@dataclass
class MethodEntry:
    peft_type: str  # "LORA"
    config_class: str
    category: str  # "adapter" | "prompt learning"
    description: str
    paper: str | None
    findings: dict[str, Finding]
    error: str | None = None  # why the method could not be probed on the tiny Llama, or why its probe crashed
    probe_seconds: float | None = None

    @property
    def name(self) -> str:
        return self.peft_type.lower()

    def can(self, capability: str) -> bool:
        return self.findings[capability].status == YES

    def to_json(self) -> dict:
        return {"name": self.name, "peft_type": self.peft_type, "config_class": self.config_class,
                "category": self.category, "description": self.description, "paper": self.paper,
                "error": self.error, "probe_seconds": self.probe_seconds,
                "capabilities": {name: finding.to_json() for name, finding in self.findings.items()}}


@dataclass
class Catalog:
    versions: dict[str, str]  # peft, torch, transformers, probe: what the findings were established with
    methods: list[MethodEntry]
    benchmarks: list[Benchmark]
    probe_seconds: float | None  # None: every finding came from the cache
    warnings: list[LoadWarning] = field(default_factory=list)

    def to_json(self, methods: Sequence[MethodEntry] | None = None) -> dict:
        chosen = self.methods if methods is None else methods
        return {
            "versions": self.versions,
            "capabilities": [{"name": c.name, "label": c.label, "question": c.question} for c in ALL_CAPABILITIES],
            "methods": [{**entry.to_json(), "benchmarks": self.results_of(entry)} for entry in chosen],
            "benchmarks": [benchmark.to_json() for benchmark in self.benchmarks],
        }

    def results_of(self, entry: MethodEntry) -> dict[str, dict | None]:
        """Per benchmark, the method's best result there, or None: never benchmarked there."""
        return {b.name: (b.methods[entry.peft_type].to_json() if entry.peft_type in b.methods else None)
                for b in self.benchmarks}

    def find(self, names: Sequence[str]) -> list[MethodEntry]:
        """The methods called `names` (peft types, any case, '-' or '_'); ValueError naming the unknown ones."""
        by_name = {entry.name: entry for entry in self.methods}
        keys = [name.strip().lower().replace("-", "_") for name in names if name.strip()]
        unknown = [name for name in keys if name not in by_name]
        if unknown:
            raise ValueError(f"unknown method(s) {', '.join(unknown)}; the installed peft registers: "
                             f"{', '.join(by_name)}")
        return [by_name[key] for key in keys]


def parse_capabilities(texts: Sequence[str]) -> list[str]:
    """'merge,mixed-batch' and '--layer conv2d' style names as capability names (ValueError for unknown ones)."""
    return [capability_name(part) for text in texts for part in text.split(",") if part.strip()]


def select(methods: Sequence[MethodEntry], capabilities: Sequence[str]) -> list[MethodEntry]:
    """The methods that can do every one of `capabilities` (a finding of "yes")."""
    return [entry for entry in methods if all(entry.can(capability) for capability in capabilities)]


def _entry(probed: dict) -> MethodEntry:
    return MethodEntry(
        peft_type=probed["peft_type"], config_class=probed.get("config_class", ""),
        category=probed.get("category", ""), description=probed.get("description", ""),
        paper=probed.get("paper"), error=probed.get("error"), probe_seconds=probed.get("seconds"),
        findings={name: Finding.from_json(finding) for name, finding in probed["findings"].items()},
    )


def build_catalog(results: Sequence[str | Path] = (), *, published: bool = True, refresh: bool = False,
                  progress: bool = False, peft_types: Sequence[str] | None = None) -> Catalog:
    """Probe (or read from the cache) every method, and join the benchmarks of `results` and the published ones."""
    from peftbench.catalog.survey import method_capabilities

    versions, probed, seconds = method_capabilities(peft_types, refresh=refresh, progress=progress)
    benchmarks, warnings = load_benchmarks(results, published=published, progress=progress)
    return Catalog(versions, [_entry(method) for method in probed], benchmarks, seconds, warnings)


def method_findings(*, progress: bool = False) -> dict[str, dict[str, Finding]]:
    """Every registered method's findings by peft type (probed, or read from the cache)."""
    from peftbench.catalog.survey import method_capabilities

    _versions, probed, _seconds = method_capabilities(progress=progress)
    return {entry.peft_type: entry.findings for entry in map(_entry, probed)}
