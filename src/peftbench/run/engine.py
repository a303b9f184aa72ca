"""Run one planned run in this process: its phases (run/phases.py) in order, its result written whatever happens.

This is what the child process (runners/child.py) does with the plan its parent made (run/plan.py); the parent
(runners/isolated.py) only starts it and waits. Two modes share the same phases:
- train:    experiment folder -> (peft) model -> training loop -> test score, forgetting, checkpoint;
- evaluate: base model + a saved adapter folder -> test score, forgetting (no training), e.g. after conversion.
A result file is always written (status success, failed, oom, diverged, cancelled or pruned), or ResultWriteError says
why it could not be.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

from peftbench.results.record import RunResult
from peftbench.results.writer import result_document, write_json_atomic
from peftbench.run import phases
from peftbench.run.assemble import fill, new_result, now_utc
from peftbench.run.plan import RunPlan, decide_hardware, plan_run
from peftbench.run.request import RunRequest
from peftbench.stop_status import stop_status
from peftbench.timing import CHECKS, TEST, RunClock


def run_planned(fields: dict[str, Any]) -> tuple[Path, str]:
    """The child's job: the plan its parent sent (RunPlan.to_dict), rebuilt and run."""
    clock, created_at = RunClock(), now_utc()
    with clock.phase(CHECKS):
        plan = RunPlan.from_dict(fields)  # ConfigError here: nothing ran, the caller reports it
    return execute(plan, clock, created_at)


def execute(plan: RunPlan | RunRequest, clock: Optional[RunClock] = None,
            created_at: Optional[str] = None) -> tuple[Path, str]:
    """Run `plan` end to end in this process and write its result; returns (result file, status). A request is
    planned here first (ConfigError: nothing ran), and a plan no parent decided the hardware of is decided here:
    a run in this process has no parent to do either."""
    clock = clock or RunClock()
    created_at = created_at or now_utc()
    if isinstance(plan, RunRequest):
        with clock.phase(CHECKS):
            plan = plan_run(plan)
    if plan.hardware is None:
        plan = decide_hardware(plan)
    result = new_result(plan, status="failed", created_at=created_at)
    run = phases.LiveRun(plan, clock, progress=_progress_file(plan))
    try:
        from peftbench.training.onednn_linear import onednn_linears

        with onednn_linears(plan.config.cpu_matmul == "onednn"):
            _run_phases(run, result)
    except (KeyboardInterrupt, Exception) as error:  # recorded in the result; the other runs of a batch go on
        result.status, result.error_msg = stop_status(error)
    clock.stop()
    fill(result, clock.result_times())
    # CPU seconds of this child since it started (imports included): unlike wall times, barely moved by other
    # processes on the machine, and at one torch thread equal to the wall time on an idle core
    result.extra["cpu_time_s"] = time.process_time()
    write_json_atomic(plan.result_file, result_document(result), allow_nan=True)
    return plan.result_file, result.status


def _run_phases(run: phases.LiveRun, result: RunResult) -> None:
    from peftbench.evaluation.validity import run_warnings

    fill(result, phases.load_data(run))
    fill(result, phases.load_model(run))
    references = phases.reference(run)
    phases.cache(run)
    outcome = phases.train(run)
    fill(result, outcome)
    fill(result, phases.trained(run, outcome))
    succeeded = outcome.status == "success"
    try:
        if succeeded:
            with run.clock.phase(TEST):
                fill(result, phases.evaluate(run))
                result.run_warnings = run_warnings(result, len(run.data.test))
                fill(result, phases.forget(run, references))
            result.suite_train_time_s = run.clock.total(run.plan.task.suite_train_phases)
        result.eval_time_s = run.clock.eval_time()
        fill(result, run.meter.report())
        if succeeded and run.plan.harness:  # after the memory report: the harness is not the run's
            fill(result, phases.harness(run, references))
        if succeeded:
            fill(result, phases.output(run))
    except Exception:
        if succeeded:  # training finished: its adapter is kept though scoring or measuring failed
            fill(result, phases.save(run))
        raise
    # saved after the measurements, which it would otherwise add to; an unfinished adapter is not worth keeping
    # (nor may it replace a good one)
    if succeeded:
        fill(result, phases.save(run))


def _progress_file(plan: RunPlan):
    from peftbench.runners.progress import ProgressFile

    return ProgressFile(plan.request.progress_file)
