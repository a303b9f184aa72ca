#!/usr/bin/env bash
# BENCHMARKS.md is assembled from the per-area files that the benchmark scripts write
# (benchmarks/<area>.md), so each number has one source next to the script that measured it.
set -euo pipefail
cd "$(dirname "$0")/.."
{
  cat <<'HEAD'
# Benchmarks

Measured numbers, each with the command that produced it. Every section names its machine and date.
All of them were measured on 2026-11-29 on a 2-core x86_64 CPU VM (torch 2.13.0+cpu, peft 0.21.2).
The first numbers were measured while five engineers shared the machine, so their wall times are
pessimistic unless a section says the machine was idle; those re-measured after the math-tiny fix
(math-tiny, conversion on math-tiny, default-vs-tuned sweep) were taken on the idle machine. No GPU was available: the CUDA paths (memory
figures, bf16) are not measured yet.

Regenerate this file with `bash scripts/assemble_benchmarks.sh` after running a benchmark script.

HEAD
  for area in engine math-tiny math-faithful report sweep conversion custom-task memory image-gen image-tiny validity inference catalog test-suite; do
    cat "benchmarks/$area.md"
    printf '\n'
  done
} > BENCHMARKS.md.tmp
mv BENCHMARKS.md.tmp BENCHMARKS.md
