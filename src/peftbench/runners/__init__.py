"""Running experiments, from a batch of run descriptions down to one child process each.

- request.py        RunRequest: what one run is (every command builds these), and the result file's name
- batch.py          run_trials: a batch of requests on a backend, with one progress display
- trial.py          a trial's outcome, its executor, the cores shared between trials: what the backends use
- local_backend.py  the local backend: up to N requests at once on this machine
- ray_backend.py    the Ray backend: each request a Ray task
- isolated.py       one request planned (peftbench.run.plan) and run in a child process, waiting for its result
                    file (skip, lock, fallback result)
- child.py          the child process's entry point: `python -m peftbench.runners.child -`, the plan on stdin
- progress.py, oom.py   progress files, telling an OOM kill from others (signals: peftbench.cancel)
"""

# Whether this process may fork a trial's child directly (runners.isolated). A fork copies memory, not threads:
# the child of a process that has computed on several threads inherits OpenMP's pool without its threads, and its
# first parallel region waits for them for ever (or torch fails with "Invalid thread pool!"). The command line's
# `run`, `suite` and `sweep` compute on one thread in their parent (hardware.py's micro-benchmarks), and say so
# (cli.main); any other process that imported peftbench (a test session, a notebook, `convert --evaluate`, which
# converts on every core first) takes its children from the fork server, which never computes.
PARENT_COMPUTES_ON_ONE_THREAD = False
