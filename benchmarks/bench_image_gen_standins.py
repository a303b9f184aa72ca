"""Cost of the image-gen path on the tests' tiny random stand-ins (numbers go to benchmarks/image-gen.md).

    .venv/bin/python benchmarks/bench_image_gen_standins.py lora/flux2-klein-default oft/flux2-klein-default

Builds the stand-ins (tests/image_standins.py) in a temporary folder, runs each named copy of PEFT's image-gen
experiment folders (tests/fixtures/peft-image-gen-configs) with every hub id set to a stand-in, and prints the
run's own times from its result file. Offline.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiments", nargs="+", help="<method>/<name> of PEFT's image-gen folders")
    args = parser.parse_args()
    from image_standins import build_standins

    from peftbench.run.engine import execute
    from peftbench.run.request import RunRequest

    with tempfile.TemporaryDirectory(prefix="peftbench-image-bench-") as folder:
        root = Path(folder)
        (root / "standins").mkdir()
        params = build_standins(root / "standins")
        print("| experiment | train_time_s | eval_time_s | total_time_s | cpu_time_s |\n|---|---|---|---|---|")
        for name in args.experiments:
            experiment = root / "experiments" / name
            shutil.copytree(REPO / "tests" / "fixtures" / "peft-image-gen-configs" / "experiments" / name, experiment)
            path, status = execute(RunRequest(task="image-gen", results_dir=str(root / "results"),
                                              experiment_dir=str(experiment), overrides=params, show_progress=False))
            own = json.loads(Path(path).read_text())["peftbench"]
            if status != "success":
                raise SystemExit(f"{name}: {status}: {own['error_msg']}")
            print(f"| {name} | {own['train_time_s']:.2f} | {own['eval_time_s']:.2f} | {own['total_time_s']:.1f} | "
                  f"{own['cpu_time_s']:.1f} |")


if __name__ == "__main__":
    main()
