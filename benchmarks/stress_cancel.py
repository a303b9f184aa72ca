"""Cancel whole runs at random moments and count how each ended: every one must end `cancelled` (or `success`
when the signal came after it finished), with its result written; `LOST` counts runs that the signal reached
and that still went on to `success`.

Each run is math-tiny's LoRA r16 from the quick suite, shortened, in this process. A SIGALRM, handled as the
child handles SIGTERM (peftbench.cancel), fires at a random moment of it: while loading, training (with the memory
tracker on its sampled steps), evaluating or writing. A Cancelled raised outside `execute`'s try (loading the
request, writing the result) is counted as `escaped`: the child reports it as cancelled (runners.child).

    .venv/bin/python benchmarks/stress_cancel.py --runs 150 [--seed 1] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import signal
import tempfile
from pathlib import Path
from time import perf_counter

from peftbench.config import parse_set_options
from peftbench.cancel import cancel_on_signals
from peftbench.run.engine import execute
from peftbench.run.request import RunRequest

EXPERIMENT = Path(__file__).resolve().parents[1] / "src/peftbench/suites/quick/lora/rank16"
SHORT = {"max_steps": 20, "eval_steps": 10, "valid_size": 8, "test_size": 16, "forgetting_size": 8,
         "num_threads": 1, "use_amp": False, "cpu_matmul": "onednn"}


def one_run(results: Path, overrides: dict) -> tuple[str, str]:
    path, status = execute(RunRequest(task="math-tiny", results_dir=str(results), experiment_dir=str(EXPERIMENT),
                                      overrides=overrides, show_progress=False))
    message = json.loads(Path(path).read_text())["peftbench"]["error_msg"] or ""
    return status, "" if status in ("success", "cancelled") else message.splitlines()[0][:100]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=150)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--set", dest="assignments", action="append", default=[])
    args = parser.parse_args()
    overrides = {**SHORT, **parse_set_options(args.assignments)}
    work = Path(tempfile.mkdtemp(prefix="stress-cancel-"))
    one_run(work / "warm-up", overrides)
    tic = perf_counter()
    one_run(work / "timed", overrides)
    run_s = perf_counter() - tic
    print(f"one run: {run_s:.2f} s; signals land uniformly in [0, {run_s:.2f}] s", flush=True)
    rng = random.Random(args.seed)
    ended = collections.Counter()
    for run in range(args.runs):
        cancel_on_signals((signal.SIGALRM,))  # re-armed: the handler ignores its signal once it has fired
        signal.setitimer(signal.ITIMER_REAL, rng.uniform(0.001, run_s))
        try:
            ending = one_run(work / f"run{run}", overrides)
            if ending[0] == "success" and signal.getitimer(signal.ITIMER_REAL)[0] == 0:
                ending = ("LOST", "the signal came during the run, which went on to the end")
        except KeyboardInterrupt:
            ending = ("escaped", "")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        ended[ending] += 1
        if ending[0] not in ("success", "cancelled", "escaped"):  # the surprises, as they come
            print(f"run {run}: {ending}", flush=True)
    print("; ".join(f"{status}{' (' + why + ')' if why else ''}: {count}" for (status, why), count in ended.items()))


if __name__ == "__main__":
    main()
