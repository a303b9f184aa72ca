"""`peftbench recommend`: the best method under your constraints, the runner-up, and why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

HELP = """Recommend the best method under constraints, name the runner-up and explain the choice (including
whether the two are within noise).

Sizes: 20GB, 512MB, 1.5TB (powers of 1024, as nvidia-smi and PyTorch report memory; GiB works too). Durations: 90s, 30m, 1.5h, 1h30m. Counts: 500k, 10M.

Example: peftbench recommend results/ --max-memory 20GB --max-train-time 30m --priority test_score
"""


def recommend(
    results: Annotated[list[Path], typer.Argument(help="Result files or folders (searched recursively).")],
    max_memory: Annotated[Optional[str], typer.Option("--max-memory", help="Peak training memory limit (peak_memory: tensor level, as torch.cuda.max_memory_allocated; published results, which lack it: peak_memory_total, reserved memory of the whole run), e.g. 20GB.")] = None,
    max_train_time: Annotated[Optional[str], typer.Option("--max-train-time", help="Training time limit, e.g. 30m.")] = None,
    max_total_time: Annotated[Optional[str], typer.Option("--max-total-time", help="Whole-run time limit, e.g. 1h.")] = None,
    max_file_size: Annotated[Optional[str], typer.Option("--max-file-size", help="Adapter checkpoint size limit, e.g. 50MB.")] = None,
    max_params: Annotated[Optional[str], typer.Option("--max-params", help="Trainable parameter limit, e.g. 10M.")] = None,
    max_forgetting: Annotated[Optional[float], typer.Option("--max-forgetting", help="Forgetting (image tasks: drift) limit.")] = None,
    min_score: Annotated[Optional[float], typer.Option("--min-score", help="Lowest acceptable test score, e.g. 0.4.")] = None,
    max_inference_overhead: Annotated[Optional[str], typer.Option(
        "--max-inference-overhead", help="Inference overhead limit against the base model, served the cheapest way "
        "(merged where the method can; `peftbench infer`), e.g. 10%. Unmeasured methods are left out.")] = None,
    priority: Annotated[
        str, typer.Option("--priority", help="What to optimize: test_score, forgetting, peak_memory, train_time, file_size, ...")
    ] = "test_score",
    task: Annotated[Optional[str], typer.Option("--task", help="Only results of this task (needed when several are loaded).")] = None,
    filter_expression: Annotated[
        Optional[str], typer.Option("--filter", help="Consider only points matching this expression (see `peftbench report --help`).")
    ] = None,
    must: Annotated[Optional[list[str]], typer.Option("--must", help="Only methods that can do these, as `peftbench methods` tried them: e.g. merge,mixed-batch.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the recommendation as JSON.")] = False,
) -> None:
    from rich.console import Console

    from peftbench.analysis.filters import FilterError, parse_filter
    from peftbench.analysis.metrics import get_metric
    from peftbench.analysis.points import FILTER_FIELDS
    from peftbench.analysis.recommend import ConstraintError, recommend_results
    from peftbench.catalog.catalog import method_findings, parse_capabilities
    from peftbench.analysis.runs import load_results

    try:
        priority_metric = get_metric(priority)
        constraints = _constraints(max_memory, max_train_time, max_total_time, max_file_size, max_params,
                                   max_forgetting, min_score, max_inference_overhead)
        point_filter = parse_filter(filter_expression, FILTER_FIELDS) if filter_expression else None
        required = parse_capabilities(must or [])
    except (KeyError, ValueError, ConstraintError, FilterError) as error:
        _fail(error.args[0])

    console = Console(stderr=json_out)
    findings = method_findings(progress=True) if required else None
    report = recommend_results(load_results(results, progress=True), constraints, priority_metric, task=task,
                               point_filter=point_filter, must=required, findings=findings)
    _warn(console, report.warnings)
    if report.error:
        _fail(report.error)
    _warn(console, report.condition_warnings)
    if json_out:
        typer.echo(json.dumps(_as_json(report), indent=2))
    elif not _print_recommendation(console, report.recommendation):
        raise typer.Exit(1)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _warn(console, warnings) -> None:
    from rich.text import Text

    for warning in warnings:
        console.print(Text(f"warning: {warning}", style="yellow"))


def _constraints(max_memory, max_train_time, max_total_time, max_file_size, max_params, max_forgetting, min_score,
                 max_inference_overhead=None):
    """The limit options as analysis.recommend Constraints (ConstraintError for a value that does not parse)."""
    from peftbench.analysis.metrics import get_metric
    from peftbench.analysis.recommend import (
        Constraint, finite_limit, parse_count, parse_duration, parse_percent, parse_size,
    )

    limits = [
        ("peak_memory", max_memory, parse_size, "--max-memory"),
        ("train_time", max_train_time, parse_duration, "--max-train-time"),
        ("total_time", max_total_time, parse_duration, "--max-total-time"),
        ("file_size", max_file_size, parse_size, "--max-file-size"),
        ("trainable_params", max_params, parse_count, "--max-params"),
        ("inference_overhead", max_inference_overhead, parse_percent, "--max-inference-overhead"),
    ]
    constraints = [Constraint(get_metric(metric), parse(text, option)) for metric, text, parse, option in limits
                   if text is not None]
    if max_forgetting is not None:
        constraints.append(Constraint(get_metric("forgetting"), finite_limit(max_forgetting, "--max-forgetting",
                                                                             max_forgetting)))
    if min_score is not None:
        constraints.append(Constraint(get_metric("test_score"), finite_limit(min_score, "--min-score", min_score),
                                      at_least=True))
    return constraints


def _as_json(report) -> dict:
    result = report.recommendation
    return {
        "priority": result.priority.name,
        "constraints": [str(c) for c in result.constraints],
        "best": result.best.name if result.best else None,
        "runner_up": result.runner_up.name if result.runner_up else None,
        "within_noise": result.difference.verdict == "noise" if result.difference else None,
        "noise_verdict": result.difference.verdict if result.difference else None,
        "ranking": [{"name": p.name, result.priority.name: p.mean(result.priority.name)} for p in result.ranked],
        "reasons": result.reasons,
        "excluded": [{"name": name, "why": why} for name, why in result.excluded],
        "condition_warnings": [str(w) for w in report.condition_warnings],
    }


def _print_recommendation(console, result) -> bool:
    """The best, the runner-up and why; False when nothing meets the constraints (the reasons say why)."""
    from rich.text import Text

    from peftbench.analysis.metrics import format_value, get_metric
    from peftbench.analysis.points import memory_axis

    if result.best is None:
        console.print(Text(result.reasons[0], style="bold red"))
        for reason in result.reasons[1:]:
            console.print(Text(_hanging(reason, console.width)))
        return False
    console.print(Text.assemble(("Best: ", "bold green"), Text(result.best.name, style="bold")))
    if result.runner_up is not None:
        console.print(Text.assemble(("Runner-up: ", "bold"), Text(result.runner_up.name)))
    console.print(Text("Why:", style="bold"))
    for reason in result.reasons:
        console.print(Text(_hanging(reason, console.width)))
    shown = ", ".join(
        f"{m.label} {format_value(m, result.best.mean(m.name))}"
        for m in [memory_axis(get_metric(name), [result.best]) for name in
                  ("test_score", "peak_memory", "train_time", "file_size", "forgetting")]
        if result.best.mean(m.name) is not None
    )
    # what serving it costs, and how it is served; a dash when `peftbench infer` never measured it
    overhead = get_metric("inference_overhead")
    shown += f", {overhead.label} {result.best.shown(overhead.name, format_value(overhead, result.best.mean(overhead.name)))}"
    console.print(Text(_hanging(f"best: {shown}; {result.best.noise_note}", console.width, first="  "), style="dim"))
    if result.excluded:
        console.print(Text(f"{len(result.excluded)} point(s) left out by the constraints", style="dim"))
    return True


def _hanging(text: str, width: int, first: str = "  - ", rest: str = "    ") -> str:
    """`text` wrapped to `width`, its later lines indented under the text rather than under the dash."""
    import textwrap

    return textwrap.fill(text, width=max(width, 40), initial_indent=first, subsequent_indent=rest)


def register(app: typer.Typer) -> None:
    app.command(name="recommend", help=HELP)(recommend)
