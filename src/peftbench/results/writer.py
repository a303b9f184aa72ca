"""Writing result files: atomically (temp file in the same folder, fsync, rename), so a reader never sees a
partial file and an interrupted write leaves the previous file (or none).

Also the checks made before any training, so that a run is never lost to its own result file: the results
folder takes a real file write, and a result name is short enough for every file derived from it.
"""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from peftbench.config import ConfigError

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


def _json_safe(value: Any) -> Any:
    """NaN/inf are not JSON; they become null (e.g. the loss of a diverged run)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_json_safe(v) for v in value]
    return value


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Write `data` as JSON to `path` atomically; raises ResultWriteError (naming the file) when it cannot."""
    path = Path(path)
    temporary = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(_json_safe(data), handle, indent=2, allow_nan=False, default=str)
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
