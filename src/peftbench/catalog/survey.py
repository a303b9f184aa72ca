"""Probing every method, each in a child process that a crash cannot take the others down with, and caching the
findings per peft, torch and transformers version (and per version of the probe's own code).

The cache lives in the user's cache folder (platformdirs), or in `PEFTBENCH_CACHE_DIR` when set.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

from peftbench.catalog.capabilities import CAPABILITY_NAMES, NOT_TRIED, Finding

CACHE_DIR_ENV = "PEFTBENCH_CACHE_DIR"
CHILD_COMMAND = [sys.executable, "-m", "peftbench.catalog.child"]
SCHEMA_VERSION = 1
# Each child is one process of torch; more than a few only compete for the same cores and memory.
MAX_WORKERS = 4


def cache_dir() -> Path:
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        return Path(configured)
    import platformdirs

    return Path(platformdirs.user_cache_dir("peftbench"))


def probe_versions() -> dict[str, str]:
    """What the findings depend on: the libraries' versions (from their installed metadata: importing torch only to
    read a version would cost a cached catalog seconds) and the probe's own code."""
    from importlib.metadata import version

    from importlib.metadata import PackageNotFoundError

    from peftbench.catalog.capabilities import QUANTIZATION_BACKENDS

    here = Path(__file__).parent
    code = hashlib.sha256(b"".join((here / name).read_bytes() for name in ("probe.py", "capabilities.py")))
    versions = {package: version(package) for package in ("peft", "torch", "transformers")}
    # a quantization backend installed or removed changes its findings ("not installed" or tried)
    for package in sorted(set(QUANTIZATION_BACKENDS.values())):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            pass
    return {**versions, "probe": code.hexdigest()[:12]}


def registered_peft_types() -> list[str]:
    """Every method the installed peft registers, by its PeftType value."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    return [str(getattr(peft_type, "value", peft_type)) for peft_type in PEFT_TYPE_TO_CONFIG_MAPPING]


def cache_file(versions: dict[str, str]) -> Path:
    key = "-".join(f"{name}{value}" for name, value in versions.items())
    return cache_dir() / f"method-capabilities-{key}.json"


def _read_cache(path: Path, versions: dict[str, str]) -> tuple[dict[str, dict], list[str] | None]:
    """The cached probe of each method and the peft types this peft registers, or nothing when the file is missing,
    unreadable or of other versions."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}, None
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION or data.get("versions") != versions:
        return {}, None
    methods, registered = data.get("methods"), data.get("registered")
    if not isinstance(registered, list) or not all(isinstance(name, str) for name in registered):
        registered = None
    if not isinstance(methods, list):
        return {}, registered
    return {m["peft_type"]: m for m in methods if isinstance(m, dict) and "peft_type" in m}, registered


def _write_cache(path: Path, versions: dict[str, str], methods: dict[str, dict], seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"schema_version": SCHEMA_VERSION, "versions": versions,
                "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "probe_seconds": round(seconds, 2), "registered": registered_peft_types(),
                "methods": list(methods.values())}
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        json.dump(document, out, indent=1)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


def _failed_method(peft_type: str, error: str) -> dict:
    """A method whose probe crashed: listed with the error, every capability not tried."""
    try:
        from peftbench.catalog.probe import method_info

        info = method_info(peft_type)
    except Exception:  # noqa: BLE001 - not even peft's description could be read
        info = {"peft_type": peft_type, "config_class": "", "category": "", "description": "", "paper": None}
    unknown = Finding(NOT_TRIED, "the probe crashed before this method's findings were recorded", "")
    return {**info, "error": error, "findings": dict.fromkeys(CAPABILITY_NAMES, unknown.to_json()), "seconds": None}


def probe_in_children(peft_types: Sequence[str], on_done: Callable[[str], None] = lambda _: None,
                      workers: int | None = None) -> dict[str, dict]:
    """Probe the peft types in child processes, `workers` at once (default: one per CPU core, at most
    MAX_WORKERS), each child taking every `workers`-th method."""
    from concurrent.futures import ThreadPoolExecutor

    workers = max(1, min(workers or os.cpu_count() or 1, MAX_WORKERS, len(peft_types)))
    shares = [list(peft_types[start::workers]) for start in range(workers)]
    with ThreadPoolExecutor(workers) as pool:
        probed = [result for share in pool.map(lambda share: _probe_in_child(share, on_done), shares)
                  for result in share.items()]
    results = dict(probed)
    return {peft_type: results[peft_type] for peft_type in peft_types}


def _probe_in_child(peft_types: Sequence[str], on_done: Callable[[str], None]) -> dict[str, dict]:
    """Probe each peft type in a child process; a child that dies is listed with its last error line and a new
    child probes the rest."""
    results: dict[str, dict] = {}
    remaining = list(peft_types)
    while remaining:
        with tempfile.TemporaryFile(mode="w+", encoding="utf-8") as stderr:
            child = subprocess.Popen(CHILD_COMMAND, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                                     text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
            child.stdin.write(json.dumps(remaining))
            child.stdin.close()
            running = None
            for line in child.stdout:
                event = json.loads(line)
                if "started" in event:
                    running = event["started"]
                    continue
                done = event["finished"] if "finished" in event else _failed_method(event["failed"], event["error"])
                results[done["peft_type"]] = done
                remaining.remove(done["peft_type"])
                running = None
                on_done(done["peft_type"])
            code = child.wait()
            if not remaining:
                break
            stderr.seek(0)
            last_lines = [line.strip() for line in stderr.read().splitlines() if line.strip()]
            crashed = running or remaining[0]
            why = f"the probe's process died (exit code {code})" + (f": {last_lines[-1]}" if last_lines else "")
            results[crashed] = _failed_method(crashed, why)
            remaining.remove(crashed)
            on_done(crashed)
    return results


def _progress_bar(total: int):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("probing methods"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                    TimeElapsedColumn(), console=Console(stderr=True), transient=True)


def method_capabilities(peft_types: Sequence[str] | None = None, *, refresh: bool = False,
                        progress: bool = False) -> tuple[dict[str, str], list[dict], float | None]:
    """(versions, one probe per method, seconds spent probing now or None when all came from the cache).

    The methods default to every one the installed peft registers; those the cache lacks for these versions are
    probed (all of them with `refresh`) and the cache updated.
    """
    versions = probe_versions()
    path = cache_file(versions)
    cached, registered = ({}, None) if refresh else _read_cache(path, versions)
    peft_types = list(peft_types or registered or registered_peft_types())
    missing = [peft_type for peft_type in peft_types if peft_type not in cached]
    seconds = None
    if missing:
        started = time.perf_counter()
        if progress:
            with _progress_bar(len(missing)) as bar:
                task = bar.add_task("", total=len(missing))
                probed = probe_in_children(missing, lambda name: bar.update(task, advance=1, description=name))
        else:
            probed = probe_in_children(missing)
        seconds = time.perf_counter() - started
        cached.update(probed)
        try:
            _write_cache(path, versions, cached, seconds)
        except OSError as error:  # the findings are still good for this command: only the next one probes again
            warnings.warn(f"could not cache the method catalog's findings in {path}: {error.strerror or error}; "
                          f"set {CACHE_DIR_ENV} to a writable folder", stacklevel=2)
    return versions, [_checked(cached[peft_type]) for peft_type in peft_types], seconds


def _checked(method: dict) -> dict:
    """A cached probe as the catalog reads it: every capability present (a newer probe may add some)."""
    findings = method.get("findings") or {}
    missing = Finding(NOT_TRIED, "not in the cached probe", "").to_json()
    return {**method, "findings": {name: findings.get(name, missing) for name in CAPABILITY_NAMES}}

