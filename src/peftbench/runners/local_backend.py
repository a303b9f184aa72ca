"""The local backend: up to `workers` trials at once on this machine, each in its own child process.

Each trial's executor starts and waits for one child process, so a thread per worker is all the
parallelism the parent needs: the threads only wait, the children do the work. The machine's CPU
cores are split evenly between the workers (`num_threads` of each trial, at most OMP_NUM_THREADS), so two
workers on a 16-core machine train with 8 torch threads each instead of 16 threads fighting over 16 cores.

One worker runs its trials in the calling thread: with no other thread running, the child process can be
forked from this warm process; with more, children come from a fork server (runners.isolated.FORK_WARM_CHILD).
Either way a child does not import torch again.
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import replace

from peftbench.runners.trial import OutcomeCallback, TrialExecutor, guarded, threads_per_worker
from peftbench.cancel import cancel_signal
from peftbench.runners.isolated import interrupt_running_children
from peftbench.run.request import RunRequest


def run_local_pool(
    trials: list[RunRequest], *, workers: int, execute: TrialExecutor, on_done: OutcomeCallback,
    cores: int | None = None, share_cores: bool = True,
) -> None:
    """Run `trials`, at most `workers` at once, calling `on_done` (in this thread) as each one finishes.

    On Ctrl-C (or SIGTERM, SIGHUP), trials not yet started are cancelled, running children are asked to stop
    (the same signal: they write a `cancelled` result, atomically) and KeyboardInterrupt propagates once they
    have. With `share_cores` off, a trial without `num_threads` keeps torch's own default. The cores are shared
    among the workers that can be busy at once: a batch of fewer trials than workers (a sweep's one seed run)
    gives each trial more threads; every trial of one batch gets the same number.
    """
    if share_cores:
        num_threads = threads_per_worker(max(1, min(workers, len(trials))), cores)
        trials = [replace(trial, num_threads=trial.num_threads or num_threads) for trial in trials]
    if workers == 1:
        try:
            for trial in trials:
                on_done(guarded(execute, trial))
        except KeyboardInterrupt as interrupt:  # the running trial has stopped its own child; any other goes too
            interrupt_running_children(cancel_signal(interrupt))
            raise
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="peftbench-trial")
    try:
        pending: set[Future] = {pool.submit(guarded, execute, trial) for trial in trials}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                on_done(future.result())
    except KeyboardInterrupt as interrupt:  # Ctrl-C, SIGTERM or SIGHUP (peftbench.cancel)
        pool.shutdown(wait=False, cancel_futures=True)
        # the terminal's Ctrl-C reached them too, unless the signal went to this process only
        interrupt_running_children(cancel_signal(interrupt))
        pool.shutdown(wait=True)
        raise
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)

