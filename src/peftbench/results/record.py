"""`RunResult`: the one typed record of a result file.

The engine fills it (run/engine.py), the writer serialises it (results/writer.py: `result_document`) and
the reader parses every result file, peftbench's and the PEFT suite's, back into it (results/reader.py). Each
field says where it goes in the file (docs/ARCHITECTURE.md "The result file"):

- by default a field is a key of the file's `peftbench` section, under its own name, and is written and read
  back without any code naming it: adding a field means adding it here, documenting it, and filling it in
  the engine;
- fields marked `suite(...)` go to the PEFT suite's sections (`run_info`, `train_info`, `meta_info`), whose
  layout is fixed by the published results; the writer and the reader name those keys;
- `extra` holds provenance a run adds under its own key (task_file, harness, sweep, conversion, cpu_time_s,
  ...): written into the `peftbench` section, and read back into `extra`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Optional

SCHEMA_VERSION = 1
STATUSES = ("success", "failed", "oom", "killed", "diverged", "cancelled", "pruned")  # docs/reliability.md
PEFTBENCH = "peftbench"  # the name of peftbench's own section, and of a field's place in it


def suite(**metadata: Any) -> dict[str, Any]:
    """Metadata of a field kept in the PEFT suite's sections (not under `peftbench`)."""
    return {"section": "suite", **metadata}


@dataclass
class RunResult:
    """Everything one run produced. Fields a failed run never reached (or a file does not hold) stay None/empty."""

    schema_version: int = SCHEMA_VERSION
    task: str = ""
    method: str = ""
    name: str = ""
    seed: Optional[int] = None
    status: str = "unknown"  # one of STATUSES in a file peftbench wrote
    error_msg: str = ""
    git_commit: Optional[str] = None
    score_name: str = "accuracy"
    higher_is_better: bool = True
    test_score: Optional[float] = None
    valid_score: Optional[float] = None
    per_item_correct: list[float] = field(default_factory=list)  # test items in order, for paired statistics
    # per test item: {input, prediction, target, score} (text tasks), in the order of per_item_correct
    predictions: list[dict[str, Any]] = field(default_factory=list)
    # test completions that ran to the length limit without a stop token (generating tasks)
    completions_at_length_limit: Optional[int] = None
    # what makes the score suspect (evaluation/validity.py): every completion unstopped, a 0 after learning
    run_warnings: list[str] = field(default_factory=list)
    train_curve: list[dict[str, Any]] = field(default_factory=list)  # [{step, loss, lr}, ...]
    valid_curve: list[dict[str, Any]] = field(default_factory=list)  # [{step, score}, ...]
    valid_loss_curve: list[dict[str, Any]] = field(default_factory=list)  # [{step, loss}, ...] (valid_loss_steps)
    forgetting: Optional[float] = None
    forgetting_loss_before: Optional[float] = None  # adapter disabled (or base model before full fine-tuning)
    forgetting_loss_after: Optional[float] = None
    peak_memory_kind: Optional[str] = None  # "cpu_rss" | "cuda": of the two process-level figures below
    peak_memory_train_bytes: Optional[int] = None
    peak_memory_total_bytes: Optional[int] = None  # the PEFT suite's accelerator_memory_max in its files
    # tensor-level (training.tensor_memory), every device: the headline memory figure
    peak_memory_train_allocated_bytes: Optional[int] = None
    peak_memory_total_allocated_bytes: Optional[int] = None
    peak_memory_train_breakdown: dict[str, Any] = field(default_factory=dict)  # category -> bytes at the peak
    peak_memory_tracked_steps: list[int] = field(default_factory=list)
    # CUDA only: torch.cuda.max_memory_allocated of the same run, to check the tracker against
    peak_memory_cuda_train_allocated_bytes: Optional[int] = None
    peak_memory_cuda_total_allocated_bytes: Optional[int] = None
    train_time_s: Optional[float] = None  # the training loop minus validation (peftbench's own definition)
    eval_time_s: Optional[float] = None
    total_time_s: Optional[float] = None
    # wall seconds of each named phase of the run (peftbench.timing), which every time figure above is defined from
    time_by_phase_s: dict[str, float] = field(default_factory=dict)
    tokens_per_second: Optional[float] = None  # text tasks: throughput in tokens/s
    throughput: Optional[float] = None  # training units per second of train_time_s, in throughput_unit
    throughput_unit: Optional[str] = None  # the task's: "tokens/s" (text), "images/s" (image generation)
    forgetting_higher_is_better: bool = False  # the task's; forgetting and drift are lower-is-better
    # which process-level peak is the PEFT suite's train_info.accelerator_memory_max: "run" (MetaMathQA: the whole
    # run) or "train" (image-gen: training only)
    suite_memory_scope: str = "run"
    checkpoint_size_bytes: Optional[int] = None
    checkpoint_dir: Optional[str] = None
    trainable_params: Optional[int] = None
    total_params: Optional[int] = None
    steps: int = 0
    train_tokens: int = 0
    device: Optional[str] = None
    precision: Optional[str] = None  # hardware.precision_name: "fp32", "bf16-autocast", ...
    hardware: Optional[dict[str, Any]] = None  # hardware.Hardware.to_dict(): what decided the precision
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. {"sweep": {...}}, {"conversion": {...}}

    # ---- the PEFT suite's sections ----
    experiment_name: str = field(default="", metadata=suite())  # "<method>/<name>"
    created_at: Optional[str] = field(default=None, metadata=suite())
    train_config: Optional[dict[str, Any]] = field(default=None, metadata=suite())
    peft_config: Optional[dict[str, Any]] = field(default=None, metadata=suite())
    # the suite's train_info.metrics (validation entries); the final entry is written from the fields below
    metrics: list[dict[str, Any]] = field(default_factory=list, metadata=suite())
    final_train_loss: Optional[float] = field(default=None, metadata=suite())
    train_samples: int = field(default=0, metadata=suite())
    forgetting_name: str = field(default="forgetting", metadata=suite())  # the final entry's forgetting key
    # the PEFT suite's train_time and total_time (peftbench.timing defines both); None when not measured
    suite_train_time_s: Optional[float] = field(default=None, metadata=suite())
    suite_total_time_s: Optional[float] = field(default=None, metadata=suite())
    memory_reserved_avg: Optional[int] = field(default=None, metadata=suite())  # over the run's memory log
    memory_reserved_99th: Optional[int] = field(default=None, metadata=suite())
    dataset_info: dict[str, Any] = field(default_factory=dict, metadata=suite())
    model_id: Optional[str] = field(default=None, metadata=suite())
    # not written: the reader's reading of peft_config ("LORA"; "full-finetuning" for an explicit null)
    peft_type: Optional[str] = field(default=None, metadata={"section": None})


def peftbench_fields() -> list:
    """The dataclass fields that are keys of the `peftbench` section, in the file's order."""
    return [f for f in fields(RunResult) if f.metadata.get("section", PEFTBENCH) == PEFTBENCH and f.name != "extra"]
