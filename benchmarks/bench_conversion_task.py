"""Task-level cost of conversion: LoHa, OFT and DoRA adapters trained on math-tiny, converted to LoRA at
ranks 8/16/32 and energy 0.5/0.7/0.9, each scored on the test set (like peft's lora_conversion docs table).

Trains the three quick-suite experiments (or reuses their results), converts each checkpoint, evaluates every
converted adapter through the engine (one child process per evaluation, an ordinary result file each; finished
ones are not redone), then builds the table from the result files and writes it into benchmarks/conversion.md
between the TASK markers (`--table-only` rebuilds it from whatever has finished).

    .venv/bin/python benchmarks/bench_conversion_task.py [--results results-conversion] [--set test_size=300]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from importlib.resources import files
from pathlib import Path

from bench_conversion import write_marked_section  # this folder is on sys.path when run as a script

EXPERIMENTS = ["loha/rank16", "oft/block32", "lora/rank16-dora"]
RANK_SPECS = ["8", "16", "32", "0.5", "0.7", "0.9"]
TASK = "math-tiny"


def _result_fields(result_file: Path) -> dict | None:
    try:
        return json.loads(Path(result_file).read_text(encoding="utf-8"))["peftbench"]
    except (OSError, ValueError, KeyError):
        return None


def train_convert_evaluate(results_dir: Path, overrides: dict, experiments: list[str], rank_specs: list[str]) -> None:
    """Produce the result files: one per trained experiment and one per converted adapter (resumable)."""
    from rich.progress import Progress

    from peftbench.conversion import convert_adapter_dir, parse_rank_spec
    from peftbench.conversion.evaluate import converted_result_names, evaluate_converted
    from peftbench.runners.isolated import run_request
    from peftbench.run.request import RunRequest, result_stem, split_result_stem
    from peftbench.tasks import get_task

    suite = Path(str(files("peftbench") / "suites" / "quick"))
    model_id = get_task(TASK).default_params()["model_id"]
    with Progress() as progress:
        bar = progress.add_task("train + convert + evaluate", total=len(experiments) * (1 + len(rank_specs)))
        for experiment in experiments:
            result_file, status, _ = run_request(RunRequest(task=TASK, results_dir=str(results_dir),
                                                            experiment_dir=str(suite / experiment), overrides=overrides))
            progress.advance(bar)
            original = _result_fields(result_file)
            if status != "success" or original is None:
                progress.advance(bar, len(rank_specs))
                continue
            checkpoint = Path(original["checkpoint_dir"])
            for spec in rank_specs:
                method, name = split_result_stem(checkpoint.name)
                converted_method, converted_name = converted_result_names(
                    method, name, parse_rank_spec(spec).describe(), vllm=False
                )
                converted_file = results_dir / f"{result_stem(converted_method, converted_name)}.json"
                if (_result_fields(converted_file) or {}).get("status") != "success":
                    out_dir = results_dir / "converted" / f"{checkpoint.name}-{spec}"
                    report = convert_adapter_dir(
                        checkpoint, out_dir, parse_rank_spec(spec), base_model=model_id, overwrite=True
                    )
                    evaluate_converted(
                        report, checkpoint, out_dir, TASK, results_dir, model_id, overrides=overrides,
                        show_progress=False,
                    )
                progress.advance(bar)


def table_from_results(results_dir: Path, overrides: dict, experiments: list[str], rank_specs: list[str]) -> str:
    """The rank-vs-accuracy table, read back from the result files (whatever has finished)."""
    from peftbench.conversion import parse_rank_spec
    from peftbench.conversion.evaluate import converted_result_names
    from peftbench.run.request import result_stem

    rows, test_items = [], "?"
    for experiment in experiments:
        method, name = experiment.split("/", 1)
        original = _result_fields(results_dir / f"{result_stem(method, name)}.json")
        if original and original.get("per_item_correct"):
            test_items = len(original["per_item_correct"])
        if original is None or original.get("status") != "success":
            rows.append(f"| {experiment} | original | {original.get('status') if original else 'not run'} | - | - | - |")
            continue
        rows.append(
            f"| {experiment} | original | {original['test_score']:.3f} | {original['trainable_params']:,} "
            f"| {original['checkpoint_size_bytes']:,} | - |"
        )
        for spec in rank_specs:
            rank_spec = parse_rank_spec(spec).describe()
            converted_method, converted_name = converted_result_names(method, name, rank_spec, vllm=False)
            converted = _result_fields(results_dir / f"{result_stem(converted_method, converted_name)}.json")
            if converted is None:
                rows.append(f"| {experiment} | LoRA {rank_spec} | not run | - | - | - |")
                continue
            conversion = converted["conversion"]
            ranks = sorted(set(conversion["layer_ranks"].values()))
            rank_text = str(ranks[0]) if len(ranks) == 1 else f"{ranks[0]}-{ranks[-1]}"
            score = f"{converted['test_score']:.3f}" if converted["status"] == "success" else converted["status"]
            rows.append(
                f"| {experiment} | LoRA {rank_spec} (rank {rank_text}) | {score} | {conversion['lora_parameters']:,} "
                f"| {converted['checkpoint_size_bytes']:,} | {conversion['max_logits_relative_error']:.3g} |"
            )
    from peftbench.results.reader import read_result_file

    first = next(results_dir.glob("*.json"), None)  # the hardware and precision the runs recorded
    recorded = read_result_file(first).result if first else None
    machine = (f"{os.cpu_count()}-core {recorded.hardware.get('name', 'CPU')}, {recorded.precision}"
               if recorded and recorded.hardware else f"{os.cpu_count()}-core CPU")
    header = [
        "Command: `.venv/bin/python benchmarks/bench_conversion_task.py "
        + " ".join(f"--set {key}={json.dumps(value)}" for key, value in overrides.items())
        + f"` · machine: {machine} · date: {datetime.date.today().isoformat()}.",
        "",
        f"Adapters trained on {TASK} with the quick suite's settings (one seed; overrides above), converted with "
        f"`peftbench convert`, each converted adapter scored by the engine on the same {test_items} test items. "
        "Accuracy is exact match; parameters are the adapter's; logits error is converted vs original on a probe "
        "batch (max over sequences of relative Frobenius error).",
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
    parser.add_argument("--table-only", action="store_true", help="rebuild the table from existing result files")
    arguments = parser.parse_args(argv)
    overrides = parse_set_options(arguments.set_values)
    if not arguments.table_only:
        train_convert_evaluate(arguments.results, overrides, arguments.experiments, arguments.ranks)
    table = table_from_results(arguments.results, overrides, arguments.experiments, arguments.ranks)
    print(table)
    if arguments.no_write:
        return 0
    write_marked_section("TASK", "Rank against accuracy on math-tiny (LoHa, OFT, DoRA)", table)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
