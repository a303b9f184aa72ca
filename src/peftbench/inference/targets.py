"""What `peftbench infer` measures: the folders given on the command line, each resolved to one or more targets.

- an experiment folder (`<method>/<name>/` with adapter_config.json, or training_params.json alone for full
  fine-tuning): an untrained adapter built from its config, as PEFT's benchmark does;
- a folder of experiment folders (a suite): each of them;
- a saved checkpoint (adapter_config.json with adapter weights beside it): the trained adapter;
- a results folder with checkpoints/ (`suite --save-checkpoint`): each RESULTS/checkpoints/<stem>/;
- a `peftbench convert` output (conversion_report.json beside a LoRA): the converted adapter.
A folder that is none of these is reported by name; the others are still measured.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from peftbench.experiments import ADAPTER_CONFIG_FILE, FULL_FINETUNING_METHOD, TRAINING_PARAMS_FILE, discover_experiments
from peftbench.results.writer import CHECKPOINTS_DIR
from peftbench.run.request import result_stem, split_result_stem

CONVERSION_REPORT_FILE = "conversion_report.json"  # what `peftbench convert` writes beside the LoRA
STATES = ("untrained", "trained", "converted", "full")


@dataclass(frozen=True)
class InferenceTarget:
    folder: str  # absolute
    method: str
    name: str
    state: str  # one of STATES

    @property
    def stem(self) -> str:
        """The training result's stem (run.request.result_stem): the join key to RESULTS/<stem>.json."""
        return result_stem(self.method, self.name)

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _has_weights(folder: Path) -> bool:
    return any(folder.glob("*.safetensors"))


def _target(folder: Path, method: str, name: str) -> InferenceTarget:
    folder = folder.resolve()
    if (folder / CONVERSION_REPORT_FILE).is_file():
        state = "converted"
    elif not (folder / ADAPTER_CONFIG_FILE).is_file():
        state = "full"  # full fine-tuning: an experiment folder without adapter config, or a saved whole model
    else:
        state = "trained" if _has_weights(folder) else "untrained"
    return InferenceTarget(str(folder), method or FULL_FINETUNING_METHOD, name, state)


def resolve_targets(paths: list[Path]) -> tuple[list[InferenceTarget], list[str]]:
    """The targets of the given folders, in order, each once, and one problem line per folder that is none."""
    targets: dict[str, InferenceTarget] = {}
    problems: list[str] = []
    for path in paths:
        found = _targets_in(Path(path))
        if isinstance(found, str):
            problems.append(found)
        for target in found if not isinstance(found, str) else []:
            targets.setdefault(target.stem, target)
    return list(targets.values()), problems


def default_results_dir(paths: list[Path], suite: Optional[str], task: Optional[str]) -> Path:
    """Where the inference results go unless --results says: beside the training results they join, i.e. the
    results folder the checkpoints came from, or the suite's own default folder; else results/."""
    from peftbench.builtin_suites import default_results_dir as suite_results_dir

    for path in paths:
        path = Path(path).resolve()
        if (path / CHECKPOINTS_DIR).is_dir():
            return path
        if path.parent.name == CHECKPOINTS_DIR:
            return path.parent.parent
    return suite_results_dir(suite, task) if suite else Path("results")


def _targets_in(path: Path) -> list[InferenceTarget] | str:
    if not path.is_dir():
        return f"{path}: no such folder"
    checkpoints = path / CHECKPOINTS_DIR
    if checkpoints.is_dir():
        found = []
        for folder in sorted(p for p in checkpoints.iterdir() if p.is_dir() and not p.name.startswith(".")):
            names = split_result_stem(folder.name)
            if names and ".tmp-" not in folder.name:
                found.append(_target(folder, *names))
        return found or f"{checkpoints}: no saved checkpoint (<method>--<name>/) in it"
    if (path / ADAPTER_CONFIG_FILE).is_file() or (path / TRAINING_PARAMS_FILE).is_file() or (
            path.parent.name == CHECKPOINTS_DIR and _has_weights(path)):
        names = split_result_stem(path.name) if path.resolve().parent.name == CHECKPOINTS_DIR else None
        return [_target(path, *(names or (path.resolve().parent.name, path.resolve().name)))]
    experiments = discover_experiments(path)
    if experiments:
        return [_target(folder, folder.parent.name, folder.name) for folder in experiments]
    return (f"{path}: neither an experiment folder ({ADAPTER_CONFIG_FILE} or {TRAINING_PARAMS_FILE}), a saved "
            f"adapter, a converted LoRA, a folder of experiments nor a results folder with {CHECKPOINTS_DIR}/")
