"""Writing result files: atomically (temp file in the same folder, fsync, rename), so a reader never sees a
partial file and an interrupted write leaves the previous file (or none)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def result_path(results_dir: str | Path, stem: str) -> Path:
    """RESULTS_DIR/<stem>.json, where stem is `<method>--<name>` plus any `--seed<N>` / `--lr<x>` suffix."""
    if not stem or "/" in stem or "\\" in stem or stem.startswith("."):
        raise ValueError(f"invalid result name {stem!r}: no path separators, not empty, not starting with '.'")
    return Path(results_dir) / f"{stem}.json"


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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(_json_safe(data), handle, indent=2, allow_nan=False, default=str)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
    return path
