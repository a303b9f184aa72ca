"""What one run is: `RunRequest`, the one description that travels from every command to the engine.

`peftbench run`, `suite`, `sweep` and `convert --evaluate` each build RunRequests and hand them to
`runners.batch.run_trials`; a backend (the local worker pool, or a Ray task) hands each one to
`runners.isolated.run_request`, which resolves it into a plan (run/plan.py) and passes the plan as JSON to the
child process (`runners.child`), where the engine (`run.engine`) runs it. Nothing on the way adds a field of its
own but the batch's progress file, and nothing is pickled into the child.

The result file's name is derived here, in `result_stem`, and nowhere else. This module imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from peftbench.config import format_lr
from peftbench.experiments import FULL_FINETUNING_METHOD


def result_stem(method: str, name: str, *, lr: Optional[float] = None, seed: Optional[int] = None) -> str:
    """The result file's stem: `<method>--<name>`, plus `--lr<lr>` for a sweep's trial and `--seed<N>` when the
    run was given its seed (so that a second seed or rate never "skips" onto the first one's result)."""
    stem = f"{method}--{name}"
    if lr is not None:
        stem += f"--lr{format_lr(lr)}"
    if seed is not None:
        stem += f"--seed{seed}"
    return stem


def split_result_stem(stem: str) -> Optional[tuple[str, str]]:
    """(method, name) from a stem `<method>--<name>` (a checkpoint folder's name), or None if it is not one."""
    method, separator, name = stem.partition("--")
    return (method, name) if separator and method and name else None


@dataclass(frozen=True)
class SweepRole:
    """A run's place in a learning-rate sweep (peftbench.sweep); written to the result's `peftbench.sweep`."""

    sweep_id: str
    role: str  # "trial" (a search point), "seed" (the chosen rate, a fresh seed), "default" (configured rate)
    lr: float
    seed: int
    default_lr: float
    # a halving sweep's trial: where its Optuna study is and the rule (training.pruning.HalvingRule's fields)
    halving: Optional[dict[str, Any]] = None

    def to_dict(self) -> dict[str, Any]:
        # a grid trial has no halving rule: its file has no `halving` key
        return {**{key: value for key, value in asdict(self).items() if value is not None},
                "lr_factor": self.lr / self.default_lr}


@dataclass
class RunRequest:
    """One run: train an experiment folder (or evaluate a saved adapter) on a task, write one result file.

    Plain data, JSON both ways (`to_dict` / `from_dict`), so that it crosses process and machine boundaries.
    """

    task: str  # a task name ("math-tiny") or a task file
    results_dir: str
    mode: str = "train"  # "train" | "evaluate"
    experiment_dir: Optional[str] = None  # train mode: <method>/<name>/
    adapter_dir: Optional[str] = None  # evaluate mode: a save_pretrained folder (peft adapter)
    method: Optional[str] = None  # the result's names; default: the folder's parent's name and its own
    name: Optional[str] = None
    overrides: dict[str, Any] = field(default_factory=dict)  # training parameters (--set), TrainConfig keys
    seed: Optional[int] = None  # given: it is in the result name
    sweep: Optional[SweepRole] = None  # a sweep's trial: its rate is in the result name
    conversion: Optional[dict[str, Any]] = None  # a converted adapter's provenance (conversion.evaluate)
    num_threads: Optional[int] = None  # torch CPU threads; None: the backend's fair share of the cores
    save_checkpoint: bool = True
    force: bool = False  # run even when a final result exists
    keep_killed: bool = False  # an existing oom/killed result counts as final
    show_progress: bool = True  # the child's own progress bars (off in batches: they draw one display)
    # lm-evaluation-harness after training: {tasks: [...], include_path, limit}; empty: the task's own, if any
    harness: dict[str, Any] = field(default_factory=dict)
    # set on the way, by the batch: where the child writes its step progress (runners.progress)
    progress_file: Optional[str] = None

    @property
    def source(self) -> Path:
        """The experiment folder (train) or the adapter folder (evaluate), absolute."""
        folder = self.experiment_dir if self.mode == "train" else self.adapter_dir
        return Path(folder or ".").resolve()

    @property
    def names(self) -> tuple[str, str]:
        """(method, name) of the result: given, or the folder's parent's name and the folder's own."""
        source = self.source
        return self.method or source.parent.name or FULL_FINETUNING_METHOD, self.name or source.name

    @property
    def result_stem(self) -> str:
        """Unique within a batch (one result file per run): what progress lines and outcomes name a trial by."""
        return result_stem(*self.names, lr=self.sweep.lr if self.sweep else None, seed=self.seed)

    def result_file(self) -> Path:
        """RESULTS_DIR/<stem>.json; a ConfigError for a name the file system cannot hold."""
        from peftbench.results.writer import result_path

        return result_path(self.results_dir, self.result_stem)

    def result_fields(self) -> dict[str, Any]:
        """What this request adds to the result's `peftbench` section."""
        fields: dict[str, Any] = {}
        if self.sweep is not None:
            fields["sweep"] = self.sweep.to_dict()
        if self.conversion is not None:
            fields["conversion"] = self.conversion
        return fields

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> "RunRequest":
        fields = dict(fields)
        if fields.get("sweep") is not None:
            sweep = {key: value for key, value in fields["sweep"].items() if key != "lr_factor"}
            fields["sweep"] = SweepRole(**sweep)
        return cls(**fields)
