"""`peftbench infer`: what each adapter costs at inference, per serving mode, against the base model."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

HELP = """Measure text generation with each adapter against the base model: PEFT's text_generation_benchmark (prompt categories short / medium / long, exactly max_new_tokens 20 / 50 / 100, greedy, repeated runs) for each serving mode: unmerged, merged (merge_and_unload, where the method can), converted to a LoRA (peftbench convert, in memory) and a mixed-adapter batch (peft's adapter_names). Time to first token and decode time per token are kept apart; batch sizes 1 and 8.

FOLDERS: experiment folders or a folder of them (untrained adapters built from adapter_config.json, as PEFT's benchmark does), saved checkpoints or a results folder with checkpoints/ (`suite --save-checkpoint`: the trained adapters), or `peftbench convert` outputs. The base model is measured once, then each adapter, each in its own child process. Results: RESULTS/inference/<method>--<name>.json beside the training results, which `report` and `recommend` join by that name (metric inference_overhead).

Settings (--set KEY=VALUE): prompts, prompts_per_category, max_new_tokens, runs, warmup_runs, batch_sizes, modes, converted_rank, seed, clock; PEFT's are the defaults, math-tiny's are smaller (docs/inference.md).

Example: peftbench infer --suite quick --results results/quick --threads 1
"""


def infer(
    folders: list[Path] = typer.Argument(None, help="Experiment, checkpoint, results or converted-LoRA folders.",
                                         show_default=False),
    suite: Optional[str] = typer.Option(None, "--suite", help="Measure a built-in suite's experiments (untrained), e.g. quick."),
    task: Optional[str] = typer.Option(None, "--task", "-t", help="Task name or task file (default: the suite's, else math-tiny)."),
    results: Optional[Path] = typer.Option(
        None, "--results", "-r", help="Results folder; inference results go to RESULTS/inference/. Default: the results "
        "folder the checkpoints came from, else the suite's (results/<suite>), else results/."),
    set_values: list[str] = typer.Option([], "--set", "-s", metavar="KEY=VALUE", help="An inference setting, e.g. --set runs=5. Repeatable."),
    task_values: list[str] = typer.Option([], "--task-set", metavar="KEY=VALUE",
                                          help="A task parameter, e.g. --task-set device=cuda --task-set dtype=float16. Repeatable."),
    num_threads: Optional[int] = typer.Option(None, "--threads", help="Torch CPU threads (default: the task's, else torch's)."),
    force: bool = typer.Option(False, "--force", help="Measure again even when a successful result exists."),
) -> None:
    from rich.console import Console
    from rich.markup import escape

    from peftbench.builtin_suites import SUITE_TASKS, available_suites, suite_experiments
    from peftbench.config import ConfigError
    from peftbench.inference.run import check_inference, measure_all
    from peftbench.inference.targets import default_results_dir, resolve_targets
    from peftbench.printable import printable
    from peftbench.tasks import DEFAULT_TASK, resolve_task_name

    console = Console(stderr=True)
    try:
        if suite is not None and suite not in available_suites():
            raise ConfigError(f"unknown suite {suite!r}. Built-in suites: {', '.join(available_suites())}")
        paths = [*(suite_experiments(suite) if suite else []), *(folders or [])]
        if not paths:
            raise ConfigError("nothing to measure: give folders or --suite")
        task_name = resolve_task_name(task or (SUITE_TASKS[suite] if suite else DEFAULT_TASK))
        results = results or default_results_dir(paths, suite, task)
        settings_overrides = _parse(set_values, "--set")
        overrides = _parse(task_values, "--task-set")
        check_inference(task_name, overrides, settings_overrides, results.resolve())
    except ConfigError as error:
        console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
        raise typer.Exit(2)
    targets, problems = resolve_targets(paths)
    for problem in problems:
        console.print(f"[bold red]error:[/] {escape(printable(problem))}", highlight=False)

    announce, done = _printers(console)
    try:
        outcomes = measure_all(targets, task_name=task_name, results_dir=results.resolve(), overrides=overrides,
                               settings_overrides=settings_overrides, num_threads=num_threads, force=force,
                               on_start=announce, on_done=done)
    except KeyboardInterrupt:
        console.print("[yellow]cancelled[/]: finished results are kept; rerun to continue")
        raise typer.Exit(130)
    from peftbench.reporting.inference import inference_tables

    terminal = Console()
    for table in inference_tables([o.result for o in outcomes if o.result is not None and o.result.adapter_state != "base"]):
        terminal.print(table)
    if problems or any(o.status != "success" for o in outcomes):
        raise typer.Exit(1)


def _printers(console):
    """(a header line before each measurement, a line after one that was skipped or failed)."""
    from rich.markup import escape

    from peftbench.printable import printable

    def announce(label: str) -> None:
        console.rule(escape(printable(f"inference: {label}")))

    def done(outcome) -> None:
        if outcome.skipped:
            console.print(printable(f"skip {outcome.label}: {outcome.path} exists; --force measures again"), markup=False)
        elif outcome.status != "success":
            error = outcome.result.error_msg.strip() if outcome.result else ""
            console.print(f"[bold red]{escape(outcome.status)}:[/] {escape(printable(outcome.label))}: "
                          f"{escape(printable(error.splitlines()[0] if error else ''))}", highlight=False)

    return announce, done


def _parse(values: list[str], option: str) -> dict:
    """--task-set: task parameters (checked by the task's config); --set: inference settings (checked by
    InferenceSettings)."""
    from peftbench.config import ConfigError, parse_set_options

    try:
        return parse_set_options(values)
    except ConfigError as error:
        raise ConfigError(str(error).replace("--set", option)) from None


def register(app: typer.Typer) -> None:
    app.command(name="infer", help=HELP)(infer)
