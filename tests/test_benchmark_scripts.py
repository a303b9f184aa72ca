"""The benchmark scripts that drive the engine's parts directly (task, config, training loop; not the CLI) still
run: they call package functions that may change under them, and a script that no longer runs cannot repeat the
numbers BENCHMARKS.md quotes. Each runs in its smallest setting in a process of its own, all at once."""

import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

# script and arguments -> a line its report must print
SMALLEST = {
    ("bench_throughput.py", "--steps", "2", "--rounds", "1", "--threads", "1"): "engine/bare",
    ("bench_phases.py", "--steps", "2", "--test-items", "4", "--forgetting-texts", "2"): "generated tokens/item",
    ("bench_memory.py", "overhead", "--reps", "1"): "| full fine-tuning |",
    ("bench_math_tiny.py", "--threads", "1", "base", "--rows", "4", "--count", "1"): "base model test accuracy",
}


def test_the_engine_level_benchmark_scripts_run_against_the_package(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    running = {command: subprocess.Popen([sys.executable, str(BENCHMARKS / command[0]), *command[1:]], cwd=tmp_path,
                                         env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for command in SMALLEST}
    failed = []
    for command, process in running.items():
        output, _ = process.communicate()
        if process.returncode != 0 or SMALLEST[command] not in output:
            failed.append(f"{' '.join(command)} (exit {process.returncode}):\n{output[-2000:]}")
    assert not failed, "\n\n".join(failed)
