"""The Task interface: everything that knows about a dataset, a modality or a base model.

The engine (training loop, evaluation driver, runner, result writer) only talks to a Task through the methods
below, so a text task and an image task run through the same code: the loss, the scoring and the
forgetting measure are the task's, never the loop's.

Call order in one run (see peftbench.run.engine):
    defaults = task.default_params()                  # merged with training_params.json and --set
    task.check_inputs(config)                         # cheap: local data files exist, ...
    data = task.load_data(config)                     # rows of train/valid/test/forgetting, before the model
    processor = task.load_processor(config)           # the frozen companions: tokenizer, or VAE + text encoder + ...
    model = task.load_model(config, device)           # the module that peft wraps (LM, diffusion transformer)
    task.before_training(model, processor, data, config)   # e.g. caches of text embeddings and latents
    batches = task.train_batches(data.train, processor, config, seed)   # endless, length-bucketed
    loss = task.compute_loss(model, task.to_device(batch, device))
    result = task.evaluate(model, processor, data.valid, config, desc="valid")
    loss = task.validation_loss(model, processor, data.valid, config)   # only with valid_loss_steps (optional)
    reference = task.forgetting_reference(...)        # full fine-tuning only, before training
    forgetting = task.measure_forgetting(model, processor, data.forgetting, config, adapter_disabled=...)
    fields = task.after_run(model, processor, config)  # e.g. sample images; fields for the result file

A task declares its parameters (`config_class`, a TrainConfig subclass), its outputs (score name and
direction, forgetting name and direction, throughput unit) and owns its frozen companion models.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Optional, Sequence

from peftbench.config import ConfigError, TrainConfig, build_train_config
from peftbench.timing import DATA, PREPARE, REFERENCE, TEST, TRAIN

# File types that a data source given as a local path may have, with the `datasets` builder that reads them.
LOCAL_DATA_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}

Rows = Sequence[dict[str, Any]]  # a list of dicts or a datasets.Dataset: len() and rows[i] -> dict


@dataclass
class TaskData:
    """The rows of one run. Rows are plain dicts in the task's schema."""

    train: Rows
    valid: Rows
    test: Rows
    forgetting: Rows  # rows with a "text" field (text tasks) or the task's own schema
    info: dict[str, Any] = field(default_factory=dict)  # provenance for meta_info.dataset_info


@dataclass
class TrainBatch:
    """One training batch: model inputs (tensors) plus how many of the task's throughput units it holds (real
    tokens for text, images for image generation), for the throughput figure."""

    inputs: dict[str, Any]
    num_units: int


@dataclass
class ForgettingMeasure:
    """Forgetting and the two losses it is the difference of (None where a task measures otherwise)."""

    value: float
    before: Optional[float] = None  # the base model's (adapter disabled)
    after: Optional[float] = None  # after training


@dataclass
class EvalResult:
    """Outcome of scoring a model on one split."""

    score: float
    per_item_correct: list[int]
    predictions: list[str]
    # Per item, what the model was asked and the reference it is scored against (kept in the result file so
    # that people can read what each method wrote); empty where a task has no text to show.
    targets: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    # generated completions that ran to the length limit without a stop token (None: the task generates none)
    completions_at_length_limit: Optional[int] = None


class Task(ABC):
    """A benchmark task. Subclass it (or the text engine, tasks/text.TextTask) and register it in peftbench.tasks."""

    name: str = ""
    description: str = ""
    # The task's parameters: the engine's shared ones plus its own (typed, with defaults and help lines).
    config_class: type[TrainConfig] = TrainConfig
    # Its outputs, as the result file names them (the reader, analysis and report read them from there):
    score_name: str = "accuracy"  # result field `score_name`; the metrics entry is f"test {score_name}"
    higher_is_better: bool = True
    forgetting_name: str = "forgetting"  # the final metrics entry's key for the forgetting measure
    forgetting_higher_is_better: bool = False
    throughput_unit: str = "tokens"  # what TrainBatch.num_units counts; the throughput is "<unit>/s"
    # lm-evaluation-harness tasks run after training unless the command line names others (evaluation/harness.py)
    harness: dict[str, Any] = {}
    # Which process-level peak the PEFT suite's `accelerator_memory_max` is: "run" (MetaMathQA: the whole run) or
    # "train" (image-gen: training only).
    suite_memory_scope: str = "run"
    # `peftbench infer`'s settings (inference/settings.py) where they differ from PEFT's published ones
    inference_params: dict[str, Any] = {}
    # The phases (peftbench.timing) that the PEFT suite's `train_info.train_time` counts: its MetaMathQA train()
    # clocks everything from loading its data to the forgetting loss after the test, minus the validations.
    suite_train_phases: tuple[str, ...] = (DATA, REFERENCE, PREPARE, TRAIN, TEST)
    # Where the task may save files that belong to the run (images); the runner sets it, None: nothing is saved.
    artifacts_dir: Optional[Path] = None

    @abstractmethod
    def default_params(self) -> dict[str, Any]:
        """The task's defaults for its config_class (must include model_id)."""

    def build_config(self, training_params: Optional[dict[str, Any]] = None,
                     training_params_source: str = "training_params.json", overrides: Optional[dict[str, Any]] = None,
                     overrides_source: str = "--set") -> TrainConfig:
        """This task's config: its defaults, an experiment's training params and overrides, checked."""
        return build_train_config(self.default_params(), training_params, training_params_source, overrides,
                                  overrides_source, config_class=self.config_class)

    def check_inputs(self, config) -> None:
        """Cheap checks before anything loads (e.g. local data files exist). Raise ConfigError."""

    @abstractmethod
    def load_data(self, config) -> TaskData:
        """Load train/valid/test/forgetting rows."""

    @abstractmethod
    def load_processor(self, config) -> Any:
        """The frozen companions of the trained model, handed back to every other method: the tokenizer of a
        text task; an image task's VAE, text encoder and similarity model."""

    @abstractmethod
    def load_model(self, config, device: str) -> Any:
        """The module that peft wraps (or full fine-tuning trains) on `device`, in `config.dtype`."""

    def before_training(self, model: Any, processor: Any, data: TaskData, config) -> None:
        """Work before the first step that the PEFT suite counts in its train_time (e.g. caching text
        embeddings and latents). Runs after the model is wrapped, before the training peak is measured."""

    @abstractmethod
    def train_batches(self, rows: Rows, processor: Any, config, seed: int) -> Iterator[TrainBatch]:
        """An endless iterator of training batches (epochs repeat, reshuffled with `seed`)."""

    @abstractmethod
    def compute_loss(self, model: Any, batch: TrainBatch) -> Any:
        """The scalar training loss of one batch (already on the model's device)."""

    @abstractmethod
    def evaluate(self, model: Any, processor: Any, rows: Rows, config, desc: str) -> EvalResult:
        """Score the model on `rows` (valid or test)."""

    def validation_loss(self, model: Any, processor: Any, rows: Rows, config) -> float:
        """The training loss on `rows` (valid), without generating: cheap, and it moves from the first steps on,
        where a generated score may be 0 for every trial (a halving sweep's rung signal). Deterministic, and it
        leaves the training's random state as it found it. Optional: a task without it cannot run
        valid_loss_steps."""
        raise NotImplementedError(f"task {self.name} has no validation loss")

    @property
    def has_validation_loss(self) -> bool:
        return type(self).validation_loss is not Task.validation_loss

    @abstractmethod
    def forgetting_loss(self, model: Any, processor: Any, rows: Rows, config) -> float:
        """A loss on the forgetting set; forgetting = this after training minus with the adapter disabled."""

    def forgetting_reference(self, model: Any, processor: Any, rows: Rows, config) -> Any:
        """Measured on the untrained model before training, for full fine-tuning only (no adapter to disable
        afterwards). Whatever it returns is handed to measure_forgetting as `reference`."""
        return self.forgetting_loss(model, processor, rows, config)

    def measure_forgetting(
        self, model: Any, processor: Any, rows: Rows, config, *,
        adapter_disabled: Optional[Callable[[], ContextManager]] = None, reference: Any = None,
    ) -> ForgettingMeasure:
        """Forgetting after training. `adapter_disabled()` is a context in which `model` is the base model
        (adapters); `reference` is forgetting_reference's value (full fine-tuning). The default is
        forgetting_loss after training minus the base model's; a task comparing outputs (e.g. image drift
        against the base model's images) overrides this."""
        after = self.forgetting_loss(model, processor, rows, config)
        if reference is None:
            with adapter_disabled():
                reference = self.forgetting_loss(model, processor, rows, config)
        return ForgettingMeasure(value=after - reference, before=reference, after=after)

    def after_run(self, model: Any, processor: Any, config) -> dict[str, Any]:
        """Called once after the measured run (test score, forgetting) of a successful run: extra output (e.g.
        sample images) and the fields it adds to the result's `peftbench` section."""
        return {}

    def provenance(self) -> dict[str, Any]:
        """Fields that identify where the task itself came from, written into the result's `peftbench`
        section (e.g. a task file's name and content hash)."""
        return {}

    @staticmethod
    def to_device(batch: TrainBatch, device: Any) -> TrainBatch:
        inputs = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in batch.inputs.items()}
        return TrainBatch(inputs=inputs, num_units=batch.num_units)


def is_local_source(source: str) -> bool:
    """A data source is a local path if it exists or looks like one; otherwise it is a hub dataset id."""
    path = Path(source).expanduser()
    return path.exists() or path.suffix.lower() in LOCAL_DATA_BUILDERS or source.startswith(("/", ".", "~"))


def check_local_source(source: Optional[str], key: str) -> None:
    """Raise ConfigError if `source` (the value of config key `key`) names a local file that does not exist or
    is empty. A source that is not local is a hub dataset id: say so, and when the hub cannot be reached,
    switch to offline mode so that loading fails in seconds (or uses the local cache) instead of retrying."""
    if source is None:
        raise ConfigError(f"training parameter '{key}' is not set: give a hub dataset id or a local file", key=key)
    if not isinstance(source, str) or not source:
        raise ConfigError(f"invalid value for '{key}': {source!r} (give a hub dataset id or a local file path)", key=key)
    if not is_local_source(source):
        _hub_source(source, key)
        return
    path = Path(source).expanduser()
    if not path.exists():
        raise ConfigError(
            f"data file not found for '{key}': {source} (give an existing local file "
            f"({', '.join(LOCAL_DATA_BUILDERS)}) or a hub dataset id)", key=key,
        )
    if path.is_file() and _is_blank(path):
        raise ConfigError(f"data file for '{key}' is empty: {source}", key=key)


def _is_blank(path: Path) -> bool:
    size = path.stat().st_size
    return size == 0 or (size <= 4096 and not path.read_bytes().strip())


_HUB_SOURCES_TOLD: set[str] = set()


def _hub_source(source: str, key: str) -> None:
    if source in _HUB_SOURCES_TOLD:
        return
    _HUB_SOURCES_TOLD.add(source)
    print(f"'{key}': {source} not found locally, trying the hub", file=sys.stderr)
    if hub_offline():
        return
    reason = hub_unreachable_reason()
    if reason:
        # Children inherit this: datasets and transformers then use the local cache only and fail at once.
        os.environ["HF_HUB_OFFLINE"] = "1"
        print(f"the hub cannot be reached ({reason}): offline mode (HF_HUB_OFFLINE=1), local cache only",
              file=sys.stderr)


def hub_offline() -> bool:
    return any(os.environ.get(name, "").upper() in ("1", "ON", "YES", "TRUE") for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def offline_in_loaded_libraries() -> None:
    """huggingface_hub and datasets read HF_HUB_OFFLINE once, at import: tell them if they are loaded already."""
    for module_name in ("huggingface_hub.constants", "datasets.config"):
        module = sys.modules.get(module_name)
        if module is not None and hasattr(module, "HF_HUB_OFFLINE"):
            module.HF_HUB_OFFLINE = True


_HUB_REACHABILITY: dict[str, str] = {}


def hub_unreachable_reason(timeout_s: float = 3.0) -> str:
    """Why the hub endpoint cannot be reached over TCP within `timeout_s` ("" when it can)."""
    from urllib.parse import urlparse

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if endpoint in _HUB_REACHABILITY:
        return _HUB_REACHABILITY[endpoint]
    url = urlparse(endpoint)
    outcome = [f"no answer from {url.hostname} within {timeout_s:.0f} s"]

    def connect() -> None:  # in a thread: name resolution has no timeout of its own
        try:
            socket.create_connection((url.hostname, url.port or 443), timeout=timeout_s).close()
            outcome[0] = ""
        except OSError as error:
            outcome[0] = f"{url.hostname}: {error.strerror or error}"

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout_s)
    _HUB_REACHABILITY[endpoint] = outcome[0]
    return outcome[0]


def load_rows(source: str, *, split: str = "train", hub_config: Optional[str] = None, key: str = "data") -> list[dict]:
    """The rows of a split, from a hub id or a local file/folder in the same schema.

    A local file is the split itself (`split` only applies to hub datasets). Every row is decoded here, so that
    a file's bad byte is a ConfigError naming the file and line, not an error at the first use of the row.
    """
    import datasets

    check_local_source(source, key)
    if is_local_source(source):
        path = Path(source).expanduser()
        if path.is_dir():
            return datasets.load_dataset(str(path), split="train").to_list()
        builder = LOCAL_DATA_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ConfigError(
                f"unsupported data file type for '{key}': {source} (valid: {', '.join(LOCAL_DATA_BUILDERS)})"
            )
        try:
            return datasets.load_dataset(builder, data_files=str(path), split="train").to_list()
        except UnicodeDecodeError as error:
            raise ConfigError(f"cannot read '{key}' from {source}: {not_utf8_where(path, error)}") from None
        except Exception as error:  # noqa: BLE001 - datasets raises many kinds (StopIteration for an empty file)
            raise ConfigError(f"cannot read '{key}' from {source}: {type(error).__name__}: {error}") from None
    if hub_offline():
        offline_in_loaded_libraries()
    try:
        return datasets.load_dataset(source, hub_config, split=split).to_list()
    except (ConnectionError, FileNotFoundError, ValueError) as error:  # offline, no such dataset or split
        raise ConfigError(
            f"'{key}': {source} is not a local file and cannot be loaded from the hub: {error}"
        ) from None


def not_utf8_where(path: Path, error: UnicodeDecodeError) -> str:
    """Where `path` stops being UTF-8 (its first such line and byte), for a message; the error itself when the
    whole file decodes (the bad bytes were elsewhere, e.g. inside a Parquet file)."""
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as bad:
                return (f"line {number} is not UTF-8 text (byte {line[bad.start]:#04x} at column {bad.start + 1}); "
                        "save the file as UTF-8")
    return f"text that is not UTF-8 ({error.reason}); save the file as UTF-8"


def load_first_rows_streaming(source: str, count: int, *, key: str = "data", split: str = "train") -> list[dict]:
    """The first `count` rows of a source; hub datasets are streamed so that no whole shard is downloaded."""
    if is_local_source(source):
        return load_rows(source, key=key)[:count]
    import datasets

    check_local_source(source, key)  # when the hub cannot be reached: offline mode
    if hub_offline():  # streaming reads no cache: it would retry for half a minute, then end in a traceback
        raise ConfigError(f"'{key}' streams {source} from the hub, which is offline or cannot be reached; give a "
                          "local file (a .txt file, or a data file with a text column) instead")
    try:
        return list(datasets.load_dataset(source, split=split, streaming=True).take(count))
    except (ConnectionError, FileNotFoundError, ValueError) as error:  # no such dataset or split, a lost network
        raise ConfigError(f"'{key}': {source} cannot be streamed from the hub: {error}") from None


def require_columns(rows: Any, columns: Sequence[str], source: str, key: str) -> None:
    """Raise ConfigError naming the source when its rows lack a column the task needs."""
    if len(rows) == 0:
        raise ConfigError(f"no rows in '{key}' ({source})")
    present = set(rows.column_names) if hasattr(rows, "column_names") else set(rows[0])
    missing = [c for c in columns if c not in present]
    if missing:
        raise ConfigError(
            f"'{key}' ({source}) lacks column(s) {', '.join(missing)}; it has: {', '.join(sorted(present))}"
        )
