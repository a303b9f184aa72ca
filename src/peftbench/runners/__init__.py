"""Running experiments, from a batch of run descriptions down to one child process each.

- request.py        RunRequest: what one run is (every command builds these), and the result file's name
- batch.py          run_trials: a batch of requests on a backend, with one progress display
- local_backend.py  the local backend: up to N requests at once on this machine
- ray_backend.py    the Ray backend: each request a Ray task
- isolated.py       one request in a child process, waiting for its result file (skip, lock, fallback result)
- child.py          the child process's entry point: `python -m peftbench.runners.child -`
- engine.py         what the child runs: build, train, evaluate, measure, write the result
- progress.py, cancel.py, oom.py   progress files, Ctrl-C/SIGTERM handling, telling an OOM kill from others
"""
