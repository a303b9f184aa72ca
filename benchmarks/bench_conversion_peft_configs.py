"""Issue 16's conversion check: PEFT's own MetaMathQA configs (OFT, BOFT, LoHa, LoKr, VeRA, IA3, all with
`"task_type": null`, and DoRA with CAUSAL_LM), trained 20 steps on math-tiny with `peftbench run`, converted at
full rank; plain peft in a separate process loads each original and its converted LoRA on the shipped model and
compares their logits. Writes the table into benchmarks/conversion.md between the PEFT_CONFIGS markers.

    .venv/bin/python benchmarks/bench_conversion_peft_configs.py [--experiments ../shared/.../experiments]
        [--results results-conversion-peft-configs] [--set KEY=VALUE ...] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from bench_conversion import write_marked_section  # this folder is on sys.path when run as a script

EXPERIMENTS = [
    "oft/llama-3.2-3B-rank32",
    "boft/llama-3.2-3B-default",
    "loha/llama-3.2-3B-rank32",
    "lokr/llama-3.2-3B-rank32-factor4-lr0.003",
    "vera/llama-3.2-3B-default",
    "ia3/llama-3.2-3B-default",
    "lora/llama-3.2-3B-rank32-dora",
]
DEFAULT_EXPERIMENTS_ROOT = Path(__file__).resolve().parents[2] / "shared/peft-method-comparison/MetaMathQA/experiments"
TASK = "math-tiny"
# Evaluation is not what is measured here: a few items keep the run short; training is the suite's, 20 steps.
DEFAULT_OVERRIDES = {"max_steps": 20, "eval_steps": 20, "valid_size": 10, "test_size": 10, "forgetting_size": 10}

# Plain peft in a fresh interpreter, nothing from peftbench: the user's view of both folders.
PLAIN_PEFT = textwrap.dedent(
    """
    import json, sys, torch
    from transformers import AutoModelForCausalLM
    from peft import PeftModel
    base_dir, pairs = sys.argv[1], json.loads(sys.argv[2])
    def relative(candidate, reference):
        return float(((candidate - reference).flatten(1).norm(dim=1) / reference.flatten(1).norm(dim=1)).max())
    results = {}
    with torch.no_grad():
        base_model = AutoModelForCausalLM.from_pretrained(base_dir).eval()
        ids = torch.randint(0, base_model.config.vocab_size, (4, 32), generator=torch.Generator().manual_seed(7))
        base = base_model(input_ids=ids).logits
        for name, (original_dir, lora_dir) in pairs.items():
            original = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), original_dir).eval()
            converted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), lora_dir).eval()
            reference = original(input_ids=ids).logits
            error = relative(converted(input_ids=ids).logits, reference)
            results[name] = {"effect": relative(base, reference), "error": error}
    print(json.dumps(results))
    """
)


def measure(experiments_root: Path, results_dir: Path, overrides: dict, experiments: list[str]) -> list[dict]:
    from peftbench.conversion import RankSpec, convert_adapter_dir
    from peftbench.runners.isolated import run_request
    from peftbench.run.request import RunRequest
    from peftbench.tasks import get_task

    shipped_model = str(get_task(TASK).default_params()["model_id"])
    rows, pairs = [], {}
    for experiment in experiments:
        folder = experiments_root / experiment
        task_type = json.loads((folder / "adapter_config.json").read_text()).get("task_type")
        result_file, status, _ = run_request(RunRequest(task=TASK, results_dir=str(results_dir), experiment_dir=str(folder),
                                                        overrides=overrides, show_progress=False))
        row = {"experiment": experiment, "task_type": task_type, "status": status}
        rows.append(row)
        if status != "success":
            continue
        checkpoint = Path(json.loads(Path(result_file).read_text())["peftbench"]["checkpoint_dir"])
        out_dir = results_dir / "converted" / checkpoint.name
        tic = time.perf_counter()
        report = convert_adapter_dir(checkpoint, out_dir, RankSpec(), base_model=shipped_model, overwrite=True)
        row.update(
            convert_s=time.perf_counter() - tic, lora_rank=report.lora_rank, lora_parameters=report.lora_parameters,
            loaded_as=report.base_model_loaded_as.split(" (")[0], effect=report.adapter_logits_effect,
            view_error=report.weight_change_view_error, error=report.max_logits_relative_error,
        )
        pairs[experiment] = [str(checkpoint), str(out_dir)]
    completed = subprocess.run(
        [sys.executable, "-c", PLAIN_PEFT, shipped_model, json.dumps(pairs)],
        capture_output=True, text=True, check=True,
    )
    plain = json.loads(completed.stdout.strip().splitlines()[-1])
    for row in rows:
        if row["experiment"] in plain:
            measured = plain[row["experiment"]]
            row["plain_effect"], row["plain_error"] = measured["effect"], measured["error"]
    return rows


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def table(rows: list[dict], command: str, seconds: float, load: float) -> str:
    header = [
        f"Command: `{command}` · CPU: {cpu_model()}, {os.cpu_count()} cores · load average at the start: {load:.1f} "
        f"· date: {datetime.date.today().isoformat()} · {seconds:.0f} s in all.",
        "",
        "PEFT's MetaMathQA configs trained 20 steps on math-tiny by `peftbench run` (the configs' own training "
        "parameters; valid/test/forgetting sizes 10, which nothing here uses), run at nice 19 (the time is not a speed "
        "measure), converted with `--rank full` onto the shipped model. 'peftbench': the numbers `peftbench convert` reports (adapter effect = original vs base "
        "model; ΔW view = its full-rank weight change merged into the base weights vs the original; converted = the "
        "LoRA folder vs the original, both through plain peft). 'plain peft, separate process': "
        "`AutoModelForCausalLM` + `PeftModel.from_pretrained` of the original and of the converted folder in a fresh "
        "interpreter, on another probe batch. Errors are max over 4 sequences of ||Δlogits|| / ||logits||.",
        "",
        "| config | task_type | base model loaded as | LoRA rank | LoRA parameters | adapter effect | ΔW view error "
        "| converted error | plain peft: adapter effect | plain peft: converted error |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines = []
    for row in rows:
        if row["status"] != "success":
            lines.append(f"| {row['experiment']} | {row['task_type']} | {row['status']} | - | - | - | - | - | - | - |")
            continue
        lines.append(
            f"| {row['experiment']} | {row['task_type']} | {row['loaded_as']} | {row['lora_rank']} "
            f"| {row['lora_parameters']:,} | {row['effect']:.3g} | {row['view_error']:.2g} | {row['error']:.2g} "
            f"| {row.get('plain_effect', float('nan')):.3g} | {row.get('plain_error', float('nan')):.2g} |"
        )
    return "\n".join(header + lines)


def main(argv: list[str]) -> int:
    from peftbench.config import parse_set_options

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", type=Path, default=DEFAULT_EXPERIMENTS_ROOT)
    parser.add_argument("--results", type=Path, default=Path("results-conversion-peft-configs"))
    parser.add_argument("--set", dest="set_values", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    arguments = parser.parse_args(argv)
    overrides = {**DEFAULT_OVERRIDES, **parse_set_options(arguments.set_values)}
    load, tic = os.getloadavg()[0], time.perf_counter()
    rows = measure(arguments.experiments, arguments.results, overrides, EXPERIMENTS)
    command = "python benchmarks/bench_conversion_peft_configs.py"
    command += "".join(f" --set {value}" for value in arguments.set_values)
    text = table(rows, command.strip(), time.perf_counter() - tic, load)
    print(text)
    if not arguments.no_write:
        write_marked_section("PEFT_CONFIGS", "PEFT's configs trained on math-tiny, converted at full rank", text)
    failed = [row["experiment"] for row in rows if row.get("plain_error", 1.0) > 1e-4]
    if failed:
        print(f"NOT reproduced within 1e-4 by plain peft: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
