"""Writing result files: `result_document` lays a RunResult out in the file's sections (results/record.py), and
`write_json_atomic` writes it atomically (temp file in the same folder, fsync, rename), so a reader never sees
a partial file and an interrupted write leaves the previous file (or none).

Also the checks made before any training, so that a run is never lost to its own result file: the results
folder takes a real file write, and a result name is short enough for every file derived from it.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path
from typing import Any, Optional

from peftbench.config import ConfigError
from peftbench.results.record import STATUSES, RunResult, peftbench_fields

CHECKPOINTS_DIR = "checkpoints"  # RESULTS_DIR/checkpoints/<stem>/: saved adapters (their JSON files are configs)

# The longest suffix a result stem gets in a file name: `<stem>.json.tmp-<pid>` (pids have at most 10
# digits); checkpoint folders (`<stem>.tmp-<pid>`) and lock files (`.<stem>.json.lock`) are shorter.
LONGEST_SUFFIX = len(".json.tmp-") + 10


class ResultWriteError(OSError):
    """A result file could not be written (folder not writable, disk full, ...). The message names the file."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def name_max(folder: str | Path) -> int:
    """The longest file name (bytes) the file system of `folder` (or its nearest existing parent) allows."""
    folder = Path(folder).resolve()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def result_path(results_dir: str | Path, stem: str) -> Path:
    """RESULTS_DIR/<stem>.json, where stem is `<method>--<name>` plus any `--seed<N>` / `--lr<x>` suffix."""
    if not stem or "/" in stem or "\\" in stem or stem.startswith(".") or "\0" in stem:
        raise ConfigError(f"invalid result name {stem!r}: no path separators, not empty, not starting with '.'")
    longest = name_max(results_dir) - LONGEST_SUFFIX
    if len(stem.encode("utf-8")) > longest:
        raise ConfigError(
            f"result name too long: {stem!r} is {len(stem.encode('utf-8'))} bytes, at most {longest} fit "
            f"(the file system allows {name_max(results_dir)}-byte file names, and the result's temp file adds "
            f"up to {LONGEST_SUFFIX}); shorten the experiment folder's name"
        )
    return Path(results_dir) / f"{stem}.json"


def check_writable(folder: str | Path) -> None:
    """Create `folder` if needed and write, fsync and delete a real temp file in it; a ConfigError if that fails.

    A permission bit check is not enough: root ignores them, and a read-only or full file system, an
    immutable folder or a quota refuse writes that `os.access` approves.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=folder, prefix=".peftbench-write-check-")
        try:
            os.write(fd, b"{}\n" * 1024)  # a few KB, about a small result file's size
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(name)
    except OSError as error:
        raise ConfigError(f"results folder {folder} is not writable: {error.strerror or error}") from None


def _json_safe(value: Any, allow_nan: bool = False) -> Any:
    """NaN/inf are not JSON; they become null (e.g. the loss of a diverged run) unless `allow_nan`."""
    if isinstance(value, float) and not math.isfinite(value) and not allow_nan:
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v, allow_nan) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_json_safe(v, allow_nan) for v in value]
    return value


def write_json_atomic(path: str | Path, data: Any, allow_nan: bool = False) -> Path:
    """Write `data` as JSON to `path` atomically; raises ResultWriteError (naming the file) when it cannot.
    `allow_nan`: non-finite floats are written as Python's json module writes them (the bare tokens NaN,
    Infinity), as the PEFT suite's result files hold them; otherwise as null."""
    path = Path(path)
    temporary = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(_json_safe(data, allow_nan), handle, indent=2, allow_nan=allow_nan, default=str)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        reason = error.strerror or str(error)
        if error.errno == errno.ENOSPC:
            reason = "no space left on the device"
        raise ResultWriteError(error.errno, f"cannot write result file {path}: {reason}") from None
    finally:
        try:
            temporary.unlink()
        except OSError:
            pass  # renamed into place, never created, or the folder is gone: nothing to clean up
    return path


def result_document(result: RunResult) -> dict[str, Any]:
    """The result file's JSON: the PEFT suite's `run_info` / `train_info` / `meta_info`, then `peftbench`.

    The suite's sections hold what its scripts write, NaN included (full fine-tuning's drift: written with
    `write_json_atomic(..., allow_nan=True)`); the `peftbench` section is strict JSON, null where a value is not
    finite."""
    if result.status not in STATUSES:
        raise ValueError(f"invalid status {result.status!r}; valid: {', '.join(STATUSES)}")
    metrics = list(result.metrics)
    if result.status == "success":
        metrics.append({
            "step": result.steps,
            f"test {result.score_name}": result.test_score,
            "train loss": result.final_train_loss,
            "train samples": result.train_samples,
            f"train total {(result.throughput_unit or 'tokens/s').removesuffix('/s')}": result.train_tokens,
            result.forgetting_name: result.forgetting,
        })
    return {
        "run_info": {
            "created_at": result.created_at,
            "total_time": result.suite_total_time_s,
            "experiment_name": result.experiment_name,
            "peft_branch": package_checkout("peft")[0],
            "peft_worktree_is_dirty": package_checkout("peft")[1],
            "train_config": result.train_config,
            "peft_config": result.peft_config,
            "error_msg": result.error_msg,
        },
        "train_info": {
            "accelerator_memory_reserved_avg": result.memory_reserved_avg,
            # the suite's figure: the whole run's peak (MetaMathQA never resets the counter) or training's alone
            # (image-gen resets it after caching and after each validation)
            "accelerator_memory_max": result.peak_memory_train_bytes if result.suite_memory_scope == "train"
            else result.peak_memory_total_bytes,
            "accelerator_memory_reserved_99th": result.memory_reserved_99th,
            # the suite's definition (published results are compared on it); peftbench's own split is in
            # peftbench.train_time_s / eval_time_s / total_time_s
            "train_time": result.suite_train_time_s if result.suite_train_time_s is not None else result.train_time_s,
            "file_size": result.checkpoint_size_bytes,
            "num_trainable_params": result.trainable_params,
            "num_total_params": result.total_params,
            "status": result.status,
            "metrics": metrics,
        },
        "meta_info": {
            "model_info": {"model_id": result.model_id, "sha": None, "created_at": None},
            "dataset_info": result.dataset_info,
            "package_info": package_info(),
            "system_info": system_info(result.device),
            "pytorch_info": pytorch_info(),
        },
        "peftbench": _json_safe({**{f.name: getattr(result, f.name) for f in peftbench_fields()}, **result.extra}),
    }


def package_info() -> dict[str, Optional[str]]:
    from importlib.metadata import PackageNotFoundError, version

    info: dict[str, Optional[str]] = {}
    for package in ("transformers", "peft", "datasets", "diffusers", "torch", "peftbench"):
        try:
            info[f"{package}-version"] = version(package)
        except PackageNotFoundError:
            info[f"{package}-version"] = None
        info[f"{package}-commit-hash"] = None
    return info


@cache
def package_checkout(package: str) -> tuple[str, bool]:
    """(branch, worktree is dirty) of the `package` this process runs: the PEFT suite's `peft_branch` and
    `peft_worktree_is_dirty` for peft.

    The suite's scripts ask git in the folder of the peft they import (`git rev-parse --abbrev-ref HEAD`); so
    does this, where that folder is the package's own git checkout (`<repository>/src/<package>`). An installed
    release has no checkout: it is the tree of its release tag, on which that command answers "HEAD" (a
    detached head; the suite files such a run as a test run, not a "main" one), and it is dirty when an
    installed file differs from the hash its wheel recorded.
    """
    spec = importlib.util.find_spec(package)  # without importing it (a parent process need not)
    if spec is None or not spec.submodule_search_locations:
        return "HEAD", True  # not installed: nothing that matches a release
    folder = Path(spec.submodule_search_locations[0]).resolve()
    top = _git(folder, "rev-parse", "--show-toplevel")
    if top is not None and Path(top).resolve() / "src" / package == folder:
        branch = _git(folder, "rev-parse", "--abbrev-ref", "HEAD") or "HEAD"
        return branch, bool(_git(folder, "status", "--porcelain"))
    return "HEAD", not _installed_files_match_their_record(package)


def _git(folder: Path, *args: str) -> Optional[str]:
    try:
        return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, check=True,
                              timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _installed_files_match_their_record(package: str) -> bool:
    """Whether every file an installed distribution's RECORD lists with a sha256 still has that hash."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        files = distribution(package).files or []
    except PackageNotFoundError:
        return False
    for file in files:
        if file.hash is None or file.hash.mode != "sha256":
            continue  # RECORD itself, compiled files
        try:
            digest = hashlib.sha256(Path(file.locate()).read_bytes()).digest()
        except OSError:
            return False
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != file.hash.value:
            return False
    return True


def system_info(device: Optional[str]) -> dict[str, Any]:
    return {
        "system": platform.system(),
        "release": platform.release(),
        "version": platform.version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "accelerator": device,
    }


def pytorch_info() -> Optional[str]:
    torch = sys.modules.get("torch")  # a parent recording a crashed child need not import torch for this
    return torch.__config__.show() if torch is not None else None
