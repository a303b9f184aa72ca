#!/usr/bin/env bash
# The whole test suite on a throttled CPU: every core kept busy by a competing process for the whole run, and
# torch held to one thread (OMP_NUM_THREADS=1, which torch honours and the local pool's share of the cores
# never lifts). The tests wait on events and states, never on the clock, so they must pass like this too.
#
#   bash scripts/test-under-load.sh              # the whole suite
#   bash scripts/test-under-load.sh -x tests/test_faults.py   # arguments go to pytest
#
# Uses .venv (make setup) unless PYTHON names another interpreter. The competing processes are stopped when
# the suite ends, however it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
cores=$(nproc)

load_pids=()
stop_load() {
  for pid in "${load_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap stop_load EXIT
for _ in $(seq "$cores"); do
  "$PYTHON" -c 'while True: pass' &
  load_pids+=("$!")
done
echo "[load] ${#load_pids[@]} busy processes on $cores cores (pids ${load_pids[*]}); torch: OMP_NUM_THREADS=1" >&2

status=0
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 "$PYTHON" -m pytest -q --durations=15 "$@" || status=$?
exit "$status"
