"""image-tiny's seed noise at PEFT's test set (4 prompts x 3 images) and at a larger one (more images per prompt),
from the same runs: with `--set test_repeats=N` the first 3 images of each prompt are those of the default test
(one generator, drawn in order), so one run gives both scores.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_image_tiny_seeds.py RESULT.json [RESULT.json ...] [--spread 0.475]

Prints each run's test similarity over the first 3 and over all images per prompt, then, per config, the mean
and sample sd over seeds, and the sd against `--spread` (the spread between the quick image suite's methods).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

DEFAULT_REPEATS = 3  # PEFT's images per test prompt


def scores(path: Path) -> tuple[str, int, float, float, int, float]:
    """(config, seed, score over the first 3 images per prompt, over all, images per prompt, the generation noise
    of a 3-image score) of one result file. The generation noise is the sd of the score over the run's repeats
    (each repeat: one image per prompt, from the same trained weights) divided by sqrt(3): how much the default
    test score moves with the generator alone."""
    own = json.loads(path.read_text())["peftbench"]
    test = own["images"]["test"]
    per_prompt = [item["similarity"] for item in test]
    repeats = min(len(s) for s in per_prompt)
    first = statistics.mean(statistics.mean(s[:DEFAULT_REPEATS]) for s in per_prompt)
    every = statistics.mean(statistics.mean(s) for s in per_prompt)
    by_repeat = [statistics.mean(s[r] for s in per_prompt) for r in range(repeats)]
    generation_sd = statistics.stdev(by_repeat) / DEFAULT_REPEATS**0.5
    return f"{own['method']}/{own['name']}", own["seed"], first, every, repeats, generation_sd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", type=Path)
    parser.add_argument("--spread", type=float, default=None, help="best minus worst method of the suite")
    args = parser.parse_args()
    rows = sorted(scores(path) for path in args.results)
    print("| config | seed | test similarity, 3 images per prompt | all images per prompt | images per prompt | "
          "generation sd of a 3-image score |")
    print("|---|---|---|---|---|---|")
    for config, seed, first, every, repeats, generation_sd in rows:
        print(f"| {config} | {seed} | {first:.3f} | {every:.3f} | {repeats} | {generation_sd:.3f} |")
    for config in sorted({row[0] for row in rows}):
        mine = [row for row in rows if row[0] == config]
        if len(mine) < 2:
            continue
        for label, column in ((f"{DEFAULT_REPEATS} images", 2), ("all images", 3)):
            values = [row[column] for row in mine]
            sd = statistics.stdev(values)
            ratio = f", sd = spread / {args.spread / sd:.1f}" if args.spread and sd > 0 else ""
            print(f"{config}, {label} per prompt, {len(values)} seeds: mean {statistics.mean(values):.3f}, "
                  f"sd {sd:.3f}{ratio}")


if __name__ == "__main__":
    main()
