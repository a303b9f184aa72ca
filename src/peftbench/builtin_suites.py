"""The built-in suites: folders of experiment folders shipped in the package (suites/<suite>/<method>/<name>/),
each run on one task, and the run descriptions that `peftbench suite` runs."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from typing import Optional

from peftbench.config import ConfigError
from peftbench.run.request import RunRequest

# suite name -> the task its experiments run on; quick-image holds unchanged copies of 8 of PEFT's image-gen folders
SUITE_TASKS = {"quick": "math-tiny", "quick-image": "image-tiny"}


def suites_root() -> Path:
    return Path(str(files("peftbench") / "suites"))


def available_suites() -> list[str]:
    root = suites_root()
    return sorted(p.name for p in root.iterdir() if p.is_dir() and p.name in SUITE_TASKS) if root.is_dir() else []


def suite_experiments(suite: str) -> list[Path]:
    """The suite's experiment folders in the order they start: the suite's order.json (longest first, see
    scripts/build_quick_suite.py) where it has one, then the others by name."""
    from peftbench.experiments import discover_experiments

    root = suites_root() / suite
    experiments = discover_experiments(root)
    order_file = root / "order.json"
    if order_file.is_file():
        rank = {name: i for i, name in enumerate(json.loads(order_file.read_text())["longest_first"])}
        experiments.sort(key=lambda path: rank.get(f"{path.parent.name}/{path.name}", len(rank)))  # stable
    return experiments


def default_results_dir(suite: str, task: Optional[str] = None) -> Path:
    """Where a suite's results go unless --results says: results/<suite> (results/<suite>-<task> on another task)."""
    return Path("results") / (suite if task is None else f"{suite}-{Path(task).stem}")


def suite_requests(name: str, task: Optional[str], only: Optional[str], results: Optional[Path],
                   set_params: list[str], force: bool, keep_killed: bool, save_checkpoint: bool = False):
    """The suite's run descriptions and its task's label, checked before any run (ConfigError: an unknown
    suite or task, no experiment matching --only, a results folder that takes no write)."""
    from peftbench.config import check_keys, parse_set_options
    from peftbench.results.writer import check_writable
    from peftbench.tasks import get_task, resolve_task_name

    if name not in available_suites():
        raise ConfigError(f"unknown suite {name!r}. Built-in suites: {', '.join(available_suites())}")
    task_name = resolve_task_name(task) if task else SUITE_TASKS[name]
    suite_task = get_task(task_name)  # a bad task file stops here, before any run
    overrides = parse_set_options(set_params)
    check_keys(overrides, "--set", suite_task.config_class)  # the task's keys, before any run rather than in each
    task_label = suite_task.name
    experiments = [p for p in suite_experiments(name) if only is None or only in f"{p.parent.name}/{p.name}"]
    if not experiments:
        raise ConfigError(f"no experiment of suite {name!r} matches --only {only!r}")
    results = (results or default_results_dir(name, task)).resolve()
    check_writable(results)  # before any training, not after the first run
    requests = [
        RunRequest(task=task_name, results_dir=str(results), experiment_dir=str(path), overrides=overrides,
                   force=force, keep_killed=keep_killed, save_checkpoint=save_checkpoint, show_progress=False)
        for path in experiments
    ]
    return requests, task_label
