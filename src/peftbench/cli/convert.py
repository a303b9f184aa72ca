"""`peftbench convert`: any peft adapter -> a plain LoRA adapter that serving engines load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def _progress_over(console):
    """A progress function for the conversion: a rich bar with rate and ETA over the adapted layers."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    class LayersPerSecond(ProgressColumn):
        def render(self, task):
            return Text(f"{task.speed:.1f} layers/s" if task.speed else "- layers/s")

    def progress(items, description):
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            LayersPerSecond(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        ) as bar:
            yield from bar.track(items, description=description)

    return progress


def convert(
    adapter_dir: Path = typer.Argument(..., help="Folder written by peft's save_pretrained (adapter_config.json, "
                                       "adapter_model.safetensors)."),
    out: Path = typer.Option(..., "--out", help="Folder to write the LoRA adapter to (created atomically): "
                                   "a new folder, outside the source adapter's, checked before converting."),
    rank: str = typer.Option(
        ...,
        "--rank",
        help="An integer: fixed rank for every layer. A float in (0, 1]: per layer, the smallest rank keeping that "
        "fraction of ΔW's energy (written as rank_pattern). 'full': exact (every non-zero singular direction).",
    ),
    base_model: Optional[str] = typer.Option(
        None, "--base-model", help="Base model path or id; default: the adapter's base_model_name_or_path."
    ),
    vllm: bool = typer.Option(
        False,
        "--vllm",
        help="Make the output loadable by vLLM: one rank for all layers, rounded up to 1/8/16/32/64/128/256/320/512; "
        "refuses modules_to_save and bias changes, which vLLM does not load.",
    ),
    fit: Optional[str] = typer.Option(
        None,
        "--fit",
        help="'least-squares': for adapters that are not linear in their input (e.g. Lily's router), fit the best "
        "weight change on calibration inputs instead of refusing. The result is reported as approximate.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON (per layer + logits error)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT when it holds a previous conversion's "
                                   "output (only the files convert writes; any other folder is refused)."),
    measure: bool = typer.Option(
        True, "--measure/--no-measure", help="Load the result with plain peft and compare logits on a probe batch."
    ),
    trust_remote_code: bool = typer.Option(
        False, "--trust-remote-code", help="Allow the base model's own code to run (off by default: untrusted)."
    ),
    evaluate: bool = typer.Option(
        False, "--evaluate", help="Score the converted adapter on --task and write an ordinary result file."
    ),
    task: Optional[str] = typer.Option(
        None, "--task", help="Task for --evaluate (e.g. math-tiny); its model is the base model when the adapter "
        "names none."
    ),
    set_values: list[str] = typer.Option(
        [], "--set", "-s", metavar="KEY=VALUE",
        help="With --evaluate: override one evaluation parameter of the task, e.g. --set test_size=200. Repeatable.",
    ),
    results_dir: Path = typer.Option(
        Path("results"), "--results", "-r", help="Where --evaluate writes <method>-as-lora--<name>-<rank>.json."
    ),
) -> None:
    """Convert ADAPTER_DIR (any peft method whose layers stay linear) to a plain LoRA adapter in OUT.

    ΔW = W_adapted - W_base is read from every adapted linear layer, relative to the base model you load, and a
    truncated SVD gives the LoRA factors. Prompt-learning methods, trainable tokens and non-linear adapters are
    refused with the reason. The per-layer table shows rank kept, energy kept and ΔW error; the last line gives the
    relative logits error of the converted adapter (loaded by plain peft) against the original on a probe batch.

    Example: peftbench convert results/checkpoints/oft--block32 --out lora-oft --rank 16 --evaluate --task math-tiny
    """
    from rich.console import Console

    _quiet_libraries()
    console = Console(stderr=True)
    if evaluate and not task:
        console.print("[bold red]error:[/] --evaluate needs --task (e.g. --task math-tiny)")
        raise typer.Exit(2)
    report, overrides = _convert(console, adapter_dir, out, rank, set_values, base_model=base_model, task=task,
                                 vllm=vllm, fit=fit, overwrite=overwrite, measure=measure,
                                 trust_remote_code=trust_remote_code)
    evaluation = None
    if evaluate:
        from peftbench.conversion.evaluate import evaluate_converted

        outcome = evaluate_converted(report, adapter_dir, out, task, results_dir, report.base_model, overrides=overrides)
        evaluation = {"result_file": outcome.result_path, "status": outcome.status,
                      **({"error": outcome.error} if outcome.error else {}), **_scores(outcome.result_path)}
    if as_json:
        typer.echo(json.dumps({**report.to_json_dict(), "evaluation": evaluation}, indent=2))
        return
    _print_report(report, out, task, evaluation)
    if evaluation and evaluation["status"] != "success":
        raise typer.Exit(1)


def _convert(console, adapter_dir: Path, out: Path, rank: str, set_values: list[str], *, task: Optional[str],
             **options):
    """Convert, or say why not and exit (2: refused or bad input, 1: measured wrong, nothing written)."""
    from peftbench.config import parse_set_options
    from peftbench.conversion import (
        AdapterFolderError,
        ConversionFailed,
        ConversionRefused,
        convert_adapter_dir,
        parse_rank_spec,
    )

    try:
        overrides = parse_set_options(set_values)
        report = convert_adapter_dir(adapter_dir, out, parse_rank_spec(rank),
                                     fallback_base_model=_task_model(task) if task else None,
                                     progress=_progress_over(console), **options)
    except ConversionRefused as refusal:
        console.print(f"[bold red]refused:[/] {_escape(str(refusal))}", soft_wrap=True)
        raise typer.Exit(2) from None
    except ConversionFailed as failure:  # measured wrong: nothing was written
        console.print(f"[bold red]conversion failed:[/] {_escape(str(failure))}", soft_wrap=True)
        raise typer.Exit(1) from None
    except (AdapterFolderError, ValueError) as error:  # OutputFolderError is a ValueError
        console.print(f"[bold red]error:[/] {_escape(str(error))}", soft_wrap=True)
        raise typer.Exit(2) from None
    except OSError as error:  # writing the output failed after the checks (a full disk): nothing was replaced
        console.print(f"[bold red]error:[/] cannot write {_escape(str(error.filename or out))}: "
                      f"{_escape(error.strerror or str(error))}; {_escape(str(out))} is unchanged", soft_wrap=True)
        raise typer.Exit(1) from None
    return report, overrides


def _print_report(report, out: Path, task: Optional[str], evaluation: Optional[dict]) -> None:
    from rich.console import Console

    from peftbench.conversion.report import render_table

    out_console = Console()
    out_console.print(render_table(report))
    out_console.print(_escape(report.summary_line()), soft_wrap=True)
    out_console.print(f"base model loaded as {_escape(str(report.base_model_loaded_as))}", soft_wrap=True)
    for note in report.notes:
        out_console.print(f"[yellow]note:[/] {_escape(note)}", soft_wrap=True)
    out_console.print(f"wrote {_escape(str(out))}", soft_wrap=True)
    if evaluation:
        error = f" ({evaluation['error']})" if evaluation.get("error") else ""
        score = ""
        if evaluation.get("test_score") is not None:
            original = evaluation.get("source_test_score")
            score = (f", test {evaluation['score_name']} {evaluation['test_score']:.3f}"
                     + (f" (the original adapter: {original:.3f})" if original is not None else ""))
        out_console.print(f"evaluation on {_escape(task)}: {evaluation['status']}{_escape(score)}, result "
                          f"{_escape(str(evaluation['result_file']))}{_escape(error)}", soft_wrap=True)


def _scores(result_path) -> dict:
    """The converted adapter's test score and, where its result file is at hand, the original's (both files
    are read as untrusted data)."""
    from peftbench.results.reader import read_result_file

    converted = read_result_file(result_path).result if result_path else None
    if converted is None or converted.test_score is None:
        return {}
    scores = {"score_name": converted.score_name, "test_score": converted.test_score}
    conversion = converted.extra.get("conversion")
    source = conversion.get("source_result") if isinstance(conversion, dict) else None
    original = read_result_file(source).result if isinstance(source, str) else None
    if original is not None and original.test_score is not None:
        scores["source_test_score"] = original.test_score
    return scores


def _task_model(task_name: str) -> str:
    from peftbench.tasks import get_task

    return str(get_task(task_name).default_params()["model_id"])


def _quiet_libraries() -> None:
    """Keep the terminal for peftbench's own table: no per-file loading bars or deprecation chatter."""
    import warnings

    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="peft")


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def register(app: typer.Typer) -> None:
    app.command("convert")(convert)
