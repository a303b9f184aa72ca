"""The method catalog in the terminal: one row per method (capabilities, best result per benchmark), and the
side-by-side comparison of chosen methods with every finding's reason.

Descriptions, error messages and experiment names go into `rich.text.Text`, never into markup."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from peftbench.analysis.metrics import format_value
from peftbench.catalog.benchmarks import stars_text
from peftbench.catalog.capabilities import (
    LAYER_CAPABILITIES,
    MODEL_CAPABILITIES,
    NO,
    NOT_TRIED,
    QUANTIZED_CAPABILITIES,
    YES,
)

STATUS_STYLES = {YES: "green", NO: "red"}
STATUS_MARKS = {YES: "yes", NO: "no"}  # "not tried": a dim dash


def _mark(finding) -> Text:
    return Text(STATUS_MARKS.get(finding.status, "-"), style=STATUS_STYLES.get(finding.status, "dim"))


def _yes_names(entry, capabilities) -> Text:
    names = [c.heading for c in capabilities if entry.can(c.name)]
    return Text(" ".join(names) or "-", style="" if names else "dim")


def catalog_tables(catalog, entries) -> list[Table]:
    """Two tables, each narrow enough for an 80-column terminal without cutting a heading ('tra…' says nothing):
    what each method can do, then the layers it targets and its best result per benchmark."""
    capabilities = Table(title=f"{len(entries)} of {len(catalog.methods)} PEFT methods: what each can do",
                         title_justify="left")
    capabilities.add_column("method", no_wrap=True)
    for capability in MODEL_CAPABILITIES:
        capabilities.add_column(capability.heading, justify="center", no_wrap=True)
    for entry in entries:
        name = Text(entry.name, style="red" if entry.error else "bold")
        capabilities.add_row(name, *[_mark(entry.findings[c.name]) for c in MODEL_CAPABILITIES])

    results = Table(title="the layers each can target, and its best result per benchmark", title_justify="left")
    # quantized bases: a column only where something was tried (the provenance line says why not otherwise)
    quantized = any(entry.findings[c.name].status != NOT_TRIED for entry in entries for c in QUANTIZED_CAPABILITIES)
    results.add_column("method", no_wrap=True)
    results.add_column("layers")
    if quantized:
        results.add_column("quantized")
    for benchmark in catalog.benchmarks:
        results.add_column(Text(f"{benchmark.name}: {benchmark.metrics[0].label}"))  # a task name is untrusted
    for entry in entries:
        name = Text(entry.name, style="red" if entry.error else "bold")
        results.add_row(name, _yes_names(entry, LAYER_CAPABILITIES),
                        *([_yes_names(entry, QUANTIZED_CAPABILITIES)] if quantized else []),
                        *[Text(b.cell(entry.peft_type), style="" if entry.peft_type in b.methods else "dim")
                          for b in catalog.benchmarks])
    return [capabilities, results]


def _finding_text(finding) -> Text:
    text = _mark(finding)
    if finding.why:
        text.append(f" ({finding.why})", style="")
    return text


def comparison_table(catalog, entries) -> Table:
    table = Table(show_lines=True)
    table.add_column("")
    for entry in entries:
        table.add_column(Text(entry.name, style="bold"), overflow="fold")
    table.add_row("what it is", *[Text(entry.description or "-") for entry in entries])
    table.add_row("paper", *[Text(entry.paper or "-") for entry in entries])
    table.add_row("config class", *[Text(entry.config_class) for entry in entries])
    if any(entry.error for entry in entries):
        table.add_row("probe error", *[Text(entry.error or "-", style="red") for entry in entries])
    for capability in MODEL_CAPABILITIES + LAYER_CAPABILITIES + QUANTIZED_CAPABILITIES:
        table.add_row(capability.label, *[_finding_text(entry.findings[capability.name]) for entry in entries])
    for benchmark in catalog.benchmarks:
        for metric in benchmark.metrics:
            cells = []
            for entry in entries:
                result = benchmark.methods.get(entry.peft_type)
                if result is None:
                    cells.append(Text("never benchmarked here", style="dim"))
                    continue
                stars = stars_text(result.stars.get(metric.name))
                cells.append(Text(f"{format_value(metric, result.values[metric.name])} {stars}".strip()))
            reference = benchmark.reference
            label = f"{benchmark.name}: {metric.label}"
            if reference is not None and reference.values.get(metric.name) is not None:
                label += f" (full fine-tuning: {format_value(metric, reference.values[metric.name])})"
            table.add_row(Text(label), *cells)
    return table


def provenance_line(catalog) -> str:
    versions = ", ".join(f"{name} {value}" for name, value in catalog.versions.items())
    how = (f"probed now in {catalog.probe_seconds:.1f} s" if catalog.probe_seconds is not None
           else "probe read from the cache")
    untried = sorted({entry.findings[c.name].why for entry in catalog.methods for c in QUANTIZED_CAPABILITIES
                      if entry.findings[c.name].status == NOT_TRIED})
    quantized = f"quantized bases not tried: {'; '.join(untried)}; " if untried else ""
    return (f"capabilities tried with {versions} ({how}); {quantized}stars: quantiles among the methods "
            "benchmarked (best 20% = five); `--compare A,B` shows each finding's reason")
