"""`peftbench methods`: which method can do what (each capability tried on the installed peft), joined with the
results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

HELP = """Every PEFT method the installed peft registers: what it is, what it can do, and how it did.

Each capability (trains, save/reload, merge, several adapters, mixed-adapter batches, weighted combination,
hot-swap, conversion to LoRA, targetable layer types, quantized bases) is tried on a tiny model built in
memory, once per peft / torch version (cached), and shown as yes / no (why) / not tried (why). Results
folders given as arguments, and the PEFT suite's published MetaMathQA results shipped with peftbench, add
each method's best score, memory, time and forgetting per benchmark, with star ratings (best 20% = five).

Examples:

  peftbench methods
  peftbench methods results/ --can merge,mixed-batch --layer conv2d
  peftbench methods --compare lora,oft,ia3
  peftbench methods --json > catalog.json
"""


def methods(
    results: Annotated[Optional[list[Path]], typer.Argument(help="Result files or folders to join in.")] = None,
    can: Annotated[Optional[list[str]], typer.Option("--can", help="Only methods that can do all of these, e.g. merge,mixed-batch.")] = None,
    layer: Annotated[Optional[list[str]], typer.Option("--layer", help="Only methods that can target this layer type: linear, conv1d, conv2d, conv3d, embedding, multihead-attention.")] = None,
    quantized: Annotated[Optional[list[str]], typer.Option("--quantized", help="Only methods that train on this quantized base: bnb-8bit (8bit), bnb-4bit (4bit), hqq, torchao, gptq, awq, eetq, aqlm.")] = None,
    compare: Annotated[Optional[str], typer.Option("--compare", help="Side by side, with a usage snippet each: e.g. lora,oft,ia3.")] = None,
    published: Annotated[bool, typer.Option("--published/--no-published", help="Join the published MetaMathQA results shipped with peftbench.")] = True,
    refresh: Annotated[bool, typer.Option("--refresh", help="Probe again even if the cache holds this peft version's findings.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the catalog as JSON.")] = False,
) -> None:
    from rich.console import Console
    from rich.text import Text

    from peftbench.catalog.catalog import build_catalog, parse_capabilities, select

    try:
        wanted = parse_capabilities(list(can or []) + [f"layer:{x}" for x in layer or []]
                                    + [f"quantized:{x}" for x in quantized or []])
    except ValueError as error:
        _fail(str(error))
    for path in results or []:
        if not path.exists():
            _fail(f"{path}: no such file or folder (give result files or folders)")
    console = Console(stderr=json_out)
    catalog = build_catalog(results or [], published=published, refresh=refresh, progress=True)
    for warning in catalog.warnings:  # file names and messages are untrusted: never markup
        console.print(Text(f"warning: {warning.path}: {warning.message}", style="yellow"))
    try:
        chosen = catalog.find(compare.split(",")) if compare else select(catalog.methods, wanted)
    except ValueError as error:
        _fail(str(error))
    if compare and wanted:
        chosen = select(chosen, wanted)
    if json_out:
        document = catalog.to_json(chosen)
        if compare:
            document["snippets"] = {entry.name: _snippet(catalog, entry) for entry in chosen}
        typer.echo(json.dumps(document, indent=2))
        return
    from peftbench.reporting.catalog import catalog_tables, comparison_table, provenance_line

    if compare:
        console.print(comparison_table(catalog, chosen))
        for entry in chosen:
            console.print(Text(f"\n{entry.name}", style="bold"))
            console.print(_snippet(catalog, entry), markup=False, highlight=False, soft_wrap=True)
    else:
        for table in catalog_tables(catalog, chosen):
            console.print(table)
        for entry in chosen:
            if entry.error:
                console.print(Text(f"{entry.name}: not probed on the tiny Llama: {entry.error}", style="red"))
        if wanted and not chosen:
            console.print(f"no method can do all of: {', '.join(wanted)}")
    console.print(Text(provenance_line(catalog), style="dim"))


def _snippet(catalog, entry) -> str:
    """The method's best benchmarked config (the first benchmark that has one) on the base model it was
    benchmarked on; never benchmarked: its defaults on peftbench's shipped tiny Llama."""
    from peftbench.catalog.snippet import usage_snippet
    from peftbench.tasks.math_tiny import shipped_model_path

    benchmarked = next(((b, b.methods[entry.peft_type]) for b in catalog.benchmarks if entry.peft_type in b.methods),
                       None)
    if benchmarked is None:
        return usage_snippet(entry.peft_type, None, str(shipped_model_path()),
                             f"{entry.name} with its defaults (never benchmarked here), on peftbench's tiny Llama")
    benchmark, result = benchmarked
    run = result.point.runs[0]
    configured = run.result.train_config.get("model_id")  # the PEFT suite writes its base model only there
    base_model = run.result.model_id or (configured if isinstance(configured, str) else str(shipped_model_path()))
    origin = f"the config benchmarked on {benchmark.name}: {result.point.experiment_name}, on its base model"
    return usage_snippet(entry.peft_type, result.to_json()["peft_config"], base_model, origin)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    app.command(name="methods", help=HELP)(methods)
