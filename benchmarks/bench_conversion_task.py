"""Task-level cost of conversion: LoHa, OFT and DoRA adapters trained on math-tiny, converted to LoRA at
ranks 8/16/32 and energy 0.5/0.7/0.9, each scored on the test set (like peft's lora_conversion docs table).

Trains the three quick-suite experiments (or reuses their results), converts each checkpoint, evaluates every
converted adapter through the engine (one child process per evaluation, an ordinary result file each), and
writes the table into benchmarks/conversion.md between the TASK markers.

    .venv/bin/python benchmarks/bench_conversion_task.py [--results results-conversion] [--set test_size=300]
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from importlib.resources import files
from pathlib import Path

from bench_conversion import write_marked_section  # this folder is on sys.path when run as a script

EXPERIMENTS = ["loha/rank16", "oft/block32", "lora/rank16-dora"]
RANK_SPECS = ["8", "16", "32", "0.5", "0.7", "0.9"]


def _result_fields(result_file: Path) -> dict:
    data = json.loads(Path(result_file).read_text(encoding="utf-8"))["peftbench"]
    return data


def run(results_dir: Path, overrides: dict, experiments: list[str], rank_specs: list[str]) -> str:
    from rich.progress import Progress

    from peftbench.conversion import convert_adapter_dir, parse_rank_spec
    from peftbench.conversion.evaluate import evaluate_converted
    from peftbench.runners.local import run_experiment
    from peftbench.tasks import get_task

    suite = Path(str(files("peftbench") / "suites" / "quick"))
    task = "math-tiny"
    model_id = get_task(task).default_params()["model_id"]
    rows, started = [], time.perf_counter()
    with Progress() as progress:
        bar = progress.add_task("train + convert + evaluate", total=len(experiments) * (1 + len(rank_specs)))
        for experiment in experiments:
            result_file, status = run_experiment(suite / experiment, task, results_dir, overrides=overrides)
            progress.advance(bar)
            original = _result_fields(result_file)
            if status != "success":
                rows.append(f"| {experiment} | original | {status} | - | - | - |")
                progress.advance(bar, len(rank_specs))
                continue
            rows.append(
                f"| {experiment} | original ({original['method']}) | {original['test_score']:.3f} "
                f"| {original['trainable_params']:,} | {original['checkpoint_size_bytes']:,} | - |"
            )
            checkpoint = Path(original["checkpoint_dir"])
            for spec in rank_specs:
                out_dir = results_dir / "converted" / f"{checkpoint.name}-{spec}"
                report = convert_adapter_dir(
                    checkpoint, out_dir, parse_rank_spec(spec), base_model=model_id, overwrite=True
                )
                converted_file, converted_status = evaluate_converted(
                    report, checkpoint, out_dir, task, results_dir, model_id, overrides=overrides, show_progress=False
                )
                converted = _result_fields(converted_file)
                score = f"{converted['test_score']:.3f}" if converted_status == "success" else converted_status
                ranks = sorted({layer.rank for layer in report.layers})
                rank_text = str(ranks[0]) if len(ranks) == 1 else f"{ranks[0]}-{ranks[-1]}"
                rows.append(
                    f"| {experiment} | LoRA {report.rank_spec} (rank {rank_text}) | {score} "
                    f"| {report.lora_parameters:,} | {converted['checkpoint_size_bytes']:,} "
                    f"| {report.max_logits_relative_error:.3g} |"
                )
                progress.advance(bar)
    elapsed = time.perf_counter() - started
    header = [
        "Command: `.venv/bin/python benchmarks/bench_conversion_task.py "
        + " ".join(f"--set {key}={json.dumps(value)}" for key, value in overrides.items())
        + f"` · machine: 2-core CPU · date: {datetime.date.today().isoformat()} · {elapsed / 60:.0f} min.",
        "",
        "Adapters trained on math-tiny with the quick suite's settings (one seed), converted with "
        "`peftbench convert`, each converted adapter scored on the same test set by the engine. Accuracy is "
        "exact match; logits error is converted vs original on a probe batch (max over sequences of relative "
        "Frobenius error).",
        "",
        "| adapter | version | test accuracy | parameters | checkpoint bytes | logits rel. error |",
        "|---|---|---|---|---|---|",
    ]
    return "\n".join(header + rows)


def main(argv: list[str]) -> int:
    from peftbench.config import parse_set_options

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("results-conversion"))
    parser.add_argument("--set", dest="set_values", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--experiments", nargs="+", default=EXPERIMENTS, help="quick-suite <method>/<name> folders")
    parser.add_argument("--ranks", nargs="+", default=RANK_SPECS, help="rank specs as for peftbench convert --rank")
    parser.add_argument("--no-write", action="store_true", help="print the table only (e.g. for a smoke run)")
    arguments = parser.parse_args(argv)
    table = run(
        arguments.results, parse_set_options(arguments.set_values), arguments.experiments, arguments.ranks
    )
    print(table)
    if arguments.no_write:
        return 0
    write_marked_section("TASK", "Rank against accuracy on math-tiny (LoHa, OFT, DoRA)", table)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
