"""The Ray backend: each trial a Ray task that calls the same single-trial executor as the local pool.

The task itself starts the trial's child process on whichever node Ray picks, so isolation is the
same as locally. Results are written by the trials straight into `results_dir`: on a multi-node
cluster that folder must be on a filesystem every node sees at the same path (NFS, a shared volume).

Resources: with `address=None` a local Ray instance is started with this machine's cores, and each
task asks for `cores // workers` CPUs (so `workers` trials run at once, as with the local pool). On a
cluster the CPUs per task are the cluster's CPUs divided by `workers`. A task asks for one GPU when
the driver sees CUDA, so Ray never puts two trials on one GPU.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from typing import Iterator, Optional

from peftbench.runners.trial import OutcomeCallback, TrialExecutor, TrialOutcome, available_cores, guarded
from peftbench.run.request import RunRequest


CANCEL_GRACE_S = 60


@contextmanager
def ray_session(address: Optional[str]) -> Iterator[None]:
    """Connect to `address` or start a local Ray instance, and shut it down on leaving. Inside an
    existing session (e.g. a sweep's two phases, or a test's Ray) this does nothing, so Ray starts once."""
    import ray

    if ray.is_initialized():
        yield
        return
    if address:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(num_cpus=available_cores(), include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _run_one(execute: TrialExecutor, trial: RunRequest) -> dict:
    # runs on a Ray worker; a plain dict travels back more robustly than a dataclass instance
    return guarded(execute, trial).to_dict()


def run_on_ray(
    trials: list[RunRequest],
    *,
    workers: int,
    address: Optional[str],
    execute: TrialExecutor,
    on_done: OutcomeCallback,
    gpus_per_trial: Optional[float] = None,
) -> None:
    """Run `trials` as Ray tasks, calling `on_done` as each finishes; Ctrl-C cancels the rest and re-raises."""
    import ray

    with ray_session(address):
        cluster_cpus = int(ray.cluster_resources().get("CPU", 1))
        # as the local pool: shared among the workers that can be busy at once, the same for every trial
        cpus_per_trial = max(1, cluster_cpus // max(1, min(workers, len(trials))))
        if gpus_per_trial is None:
            gpus_per_trial = 1 if _cuda_available() else 0
        task = ray.remote(_run_one).options(num_cpus=cpus_per_trial, num_gpus=gpus_per_trial, max_retries=0)
        ids = {
            task.remote(execute, replace(trial, num_threads=trial.num_threads or cpus_per_trial)): trial
            for trial in trials
        }
        pending = list(ids)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for object_ref in done:
                    trial = ids[object_ref]
                    try:
                        outcome = TrialOutcome(**ray.get(object_ref))
                    except Exception as error:  # noqa: BLE001 - a lost worker or node fails this trial only
                        last_line = next((line for line in reversed(str(error).splitlines()) if line.strip()), "")
                        outcome = TrialOutcome(trial.result_stem, "failed", None, f"Ray task failed: {last_line}")
                    on_done(outcome)
        except KeyboardInterrupt:
            # force=False raises KeyboardInterrupt inside running tasks: the engine then stops its child,
            # which writes a `cancelled` result; give them a moment to do so before Ray shuts down.
            for object_ref in pending:
                ray.cancel(object_ref, force=False)
            ray.wait(pending, num_returns=len(pending), timeout=CANCEL_GRACE_S)
            raise
