"""The phases of one run, each a function with one job, in the order the engine (run/engine.py) calls them:

    load_data -> load_model -> reference -> cache -> train (then `trained`: what it leaves to measure) -> evaluate
    -> forget -> harness -> output -> save

Each phase reads the run's live objects (`LiveRun`: its plan, clock, device, rows, processor and model) and
returns what it measured, named as RunResult's fields (run/assemble.py `fill` copies them in by name). A phase
that takes wall time runs inside its named phase of the run's clock (peftbench.timing), which every time figure of
the result is computed from.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from peftbench.experiments import build_peft_config
from peftbench.hardware import describe_device, precision_name, resolve_device
from peftbench.results.writer import CHECKPOINTS_DIR
from peftbench.run.assemble import item_predictions, memory_log_summary, peft_config_dict
from peftbench.run.plan import RunPlan
from peftbench.timing import DATA, HARNESS, OUTPUT, PREPARE, REFERENCE, TRAIN, VALID, RunClock

ARTIFACTS_DIR = "artifacts"  # files a task saves with a run (images), RESULTS/artifacts/<result stem>/


@dataclass
class LiveRun:
    """What the phases of one run share: the plan and its clock, then what `load` builds."""

    plan: RunPlan
    clock: RunClock
    progress: Any  # runners.progress.ProgressFile: where the parent reads the run's phase and step
    device: Any = None
    data: Any = None  # tasks.base.TaskData
    processor: Any = None
    meter: Any = None  # training.memory.PeakMemoryMeter
    model: Any = None
    peft_config: Any = None  # None: full fine-tuning

    @property
    def full_finetuning(self) -> bool:
        return self.peft_config is None

    def adapter_disabled(self) -> Optional[Callable]:
        """The model's context without its adapter (the base model's answers); None for full fine-tuning."""
        return None if self.full_finetuning else self.model.disable_adapter

    def tracked(self, function: Callable) -> Callable:
        """`function` under the tensor tracker with track_memory "run" (docs/engine.md "Memory"), else itself."""
        if self.plan.config.track_memory != "run":
            return function
        return self.meter.tracked(self.model, function)


@dataclass
class References:
    """The base model's measures taken before full fine-tuning changes it (an adapter is switched off instead)."""

    forgetting: Any = None
    harness: Any = None


def load_data(run: LiveRun) -> dict[str, Any]:
    """Seed, threads and device, then the task's rows and processor."""
    import torch

    from peftbench.training.train import seed_everything

    plan, config, task = run.plan, run.plan.config, run.plan.task
    task.artifacts_dir = plan.result_file.parent / ARTIFACTS_DIR / plan.result_file.stem
    run.progress.update("loading")
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    seed_everything(config.seed)
    run.device = resolve_device(config)
    with run.clock.phase(DATA):
        run.data = task.load_data(config)
    run.processor = task.load_processor(config)
    # dataset_info: the same dict, so that what before_training notes in it (rows left out) is recorded too
    return {"device": describe_device(run.device), "dataset_info": run.data.info}


def load_model(run: LiveRun) -> dict[str, Any]:
    """The model to train (the base model wrapped by peft) or to evaluate (a saved adapter on it), on its device;
    the memory meter's baseline is taken before it is built."""
    from peftbench.training.memory import PeakMemoryMeter
    from peftbench.training.methods import wrap_model

    plan, config, task = run.plan, run.plan.config, run.plan.task
    measured: dict[str, Any] = {"extra": {}}
    run.meter = PeakMemoryMeter(run.device)
    run.meter.start_run()  # baseline: before the model is built
    base_model = task.load_model(config, run.device)
    if getattr(config, "float32_loading", "float32") == "checkpoint" and config.dtype == "float32":
        # the checkpoint's own dtype, whatever `dtype` says: record the precision the weights had
        weights_dtype = str(next(base_model.parameters()).dtype).removeprefix("torch.")
        measured["precision"] = precision_name(weights_dtype, config.use_amp)
        measured["extra"]["weights_dtype"] = weights_dtype
    if plan.request.mode == "train":
        run.peft_config = build_peft_config(plan.spec)
        run.model = wrap_model(base_model, run.peft_config, run.processor, config,
                               source=str(plan.spec.path / "adapter_config.json"))
    else:
        from peftbench.adapter_loading import load_adapter_strictly

        # is_trainable=True so that the trainable-parameter count is the adapter's, as after training; strictly, so
        # that a partly loaded adapter (AdapterLoadError, a ConfigError) is recorded as failed, never measured
        run.model = load_adapter_strictly(base_model, plan.request.adapter_dir, is_trainable=True)
        run.peft_config = run.model.peft_config[run.model.active_adapter]
    run.model.to(run.device)
    measured["peft_config"] = peft_config_dict(run.peft_config)
    return measured


def reference(run: LiveRun) -> References:
    """Full fine-tuning has no adapter to disable afterwards: the base model's forgetting loss (and harness
    scores, in train mode) are measured now."""
    references = References()
    if not run.full_finetuning:
        return references
    plan, config = run.plan, run.plan.config
    if len(run.data.forgetting):
        with run.clock.phase(REFERENCE):
            references.forgetting = run.tracked(plan.task.forgetting_reference)(
                run.model, run.processor, run.data.forgetting, config)
    if plan.harness and plan.request.mode == "train":
        from peftbench.evaluation.harness import harness_scores

        with run.clock.phase(HARNESS):
            references.harness = harness_scores(run.model, run.processor, plan.harness["tasks"], **_harness_options(plan))
    return references


def cache(run: LiveRun) -> None:
    """The task's work before the first step (image generation: its prompt and latent caches)."""
    with run.clock.phase(PREPARE):
        run.plan.task.before_training(run.model, run.processor, run.data, run.plan.config)


def train(run: LiveRun):
    """The training loop (training/train.py), under the memory meter; an empty outcome in evaluate mode. Returns
    the TrainOutcome; its time goes to the clock's TRAIN and VALID."""
    from peftbench.training.methods import method_support, peft_type_name
    from peftbench.training.pruning import rung_check
    from peftbench.training.train import TrainOutcome, train as train_loop

    plan, config, meter = run.plan, run.plan.config, run.meter
    meter.start_training()
    if plan.request.mode == "train":
        outcome = train_loop(
            model=run.model, task=plan.task, data=run.data, processor=run.processor, config=config, device=run.device,
            support=method_support(peft_type_name(run.peft_config)), memory_now=meter.current,
            memory_allocated_now=meter.allocated_now, memory_excluded=meter.excluded,
            show_progress=plan.request.show_progress, on_progress=run.progress.update,
            suite_elapsed_before_s=run.clock.total(plan.task.suite_train_phases),
            # compiled code runs its own kernels, out of a dispatch mode's sight: no tensor-level figure then
            tensor_memory=None if config.compile else meter.tensors,
            # a trial of a halving sweep reports each validation to its study and stops where the rule says
            stop_after_validation=rung_check(plan.request.sweep.halving if plan.request.sweep else None,
                                             config.max_steps),
        )
    else:
        outcome = TrainOutcome()
    meter.end_training()
    run.clock.add(TRAIN, outcome.train_seconds)
    run.clock.add(VALID, outcome.valid_seconds)
    return outcome


def trained(run: LiveRun, outcome) -> dict[str, Any]:
    """What training leaves to measure besides the loop's own figures: the adapter config as it ended, the
    parameter counts, the suite's memory summary, the optimizer's settings, throughput, the last losses."""
    from peftbench.training.train import trainable_and_total_params

    config, model = run.plan.config, run.model
    trainable, total = trainable_and_total_params(model)
    throughput = outcome.train_units / outcome.train_seconds if outcome.train_seconds > 0 else None
    measured: dict[str, Any] = {
        # again after training, as the suite logs it: AdaLoRA writes its final rank_pattern into the model's config
        "peft_config": peft_config_dict(None if run.full_finetuning else model.peft_config[model.active_adapter]),
        "trainable_params": trainable, "total_params": total,
        "train_tokens": outcome.train_units,  # the result file's name for the units the throughput counts
        "throughput": throughput,
        "tokens_per_second": throughput if run.plan.task.throughput_unit == "tokens" else None,
        **memory_log_summary(outcome.memory_log),
    }
    if outcome.optimizer_settings:
        measured["extra"] = {"optimizer": {"type": config.optimizer_type, "settings": outcome.optimizer_settings}}
    if outcome.losses:
        window = outcome.losses[-config.eval_steps :]
        measured["final_train_loss"] = sum(window) / len(window)
    if outcome.valid_curve:
        measured["valid_score"] = outcome.valid_curve[-1]["score"]
    return measured


def evaluate(run: LiveRun) -> dict[str, Any]:
    """The test score, each item's correctness and prediction (on a merged copy with merge_for_eval)."""
    config = run.plan.config
    run.progress.update("test")
    eval_model = merged_copy(run.model, run.peft_config) if config.merge_for_eval else run.model
    test = run.tracked(run.plan.task.evaluate)(eval_model, run.processor, run.data.test, config, desc="test")
    return {"test_score": test.score, "per_item_correct": test.per_item_correct, "predictions": item_predictions(test),
            "completions_at_length_limit": test.completions_at_length_limit,
            "extra": {"evaluated_merged": eval_model is not run.model}}  # what merge_for_eval did for this adapter


def forget(run: LiveRun, references: References) -> dict[str, Any]:
    """Forgetting: the change in the task's held-out measure against the base model (the adapter switched off, or
    the reference taken before full fine-tuning). Nothing where the task has no forgetting rows."""
    if not len(run.data.forgetting):
        return {}
    run.progress.update("forgetting")
    forgetting = run.tracked(run.plan.task.measure_forgetting)(
        run.model, run.processor, run.data.forgetting, run.plan.config, reference=references.forgetting,
        adapter_disabled=run.adapter_disabled(),
    )
    return {"forgetting": forgetting.value, "forgetting_loss_before": forgetting.before,
            "forgetting_loss_after": forgetting.after}


def harness(run: LiveRun, references: References) -> dict[str, Any]:
    """lm-evaluation-harness scores with the adapter on and off; its failure is recorded, not the run's."""
    from peftbench.evaluation.harness import measure_harness

    try:
        with run.clock.phase(HARNESS):
            scores = measure_harness(run.model, run.processor, run.plan.harness["tasks"], **_harness_options(run.plan),
                                     reference=references.harness, adapter_disabled=run.adapter_disabled())
    except Exception as error:  # the run itself succeeded: keep its measurements, say what the harness did
        scores = {"error": f"{type(error).__name__}: {error}"[:2000]}
    return {"extra": {"harness": scores}}


def output(run: LiveRun) -> dict[str, Any]:
    """The task's own output after the measured run (image generation: sample images)."""
    with run.clock.phase(OUTPUT):
        return {"extra": run.plan.task.after_run(run.model, run.processor, run.plan.config)}


def save(run: LiveRun) -> dict[str, Any]:
    """The trained weights under RESULTS/checkpoints/<stem>/, or only their size (a temp folder; a full model's is
    its parameters' bytes). Evaluate mode: the evaluated adapter folder's."""
    plan, model = run.plan, run.model
    if plan.request.mode == "evaluate":
        folder = Path(plan.request.adapter_dir)
        return {"checkpoint_dir": str(folder.resolve()), "checkpoint_size_bytes": weights_size_bytes(folder)}
    if plan.request.save_checkpoint:
        final = plan.result_file.parent / CHECKPOINTS_DIR / plan.result_file.stem
        staging = final.with_name(f"{final.name}.tmp-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            model.save_pretrained(staging)
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging, final)  # a checkpoint folder is complete or absent, never half-written
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return {"checkpoint_dir": str(final), "checkpoint_size_bytes": weights_size_bytes(final),
                "extra": {"checkpoint_folder_bytes": sum(p.stat().st_size for p in final.rglob("*") if p.is_file())}}
    if run.full_finetuning:  # saving a whole model only to measure it is wasteful: its size is its parameters' bytes
        return {"checkpoint_size_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
                "extra": {"checkpoint_size_estimated": True}}
    with tempfile.TemporaryDirectory(prefix="peftbench-size-") as folder:
        model.save_pretrained(folder)
        return {"checkpoint_size_bytes": weights_size_bytes(Path(folder))}


def weights_size_bytes(folder: Path) -> int:
    """Bytes of the weight files (*.safetensors) in a save_pretrained folder, as the PEFT suite's file_size."""
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def merged_copy(model, peft_config):
    """A copy of `model` with the adapter merged into its weights (`model` itself is left as it is), or `model`
    where there is nothing peft can merge: full fine-tuning, prompt learning, a tuner without merging."""
    if peft_config is None or peft_config.is_prompt_learning:
        return model
    import copy

    try:
        return copy.deepcopy(model).merge_and_unload()
    except (AttributeError, NotImplementedError, ValueError, TypeError) as error:  # peft: this tuner cannot merge
        warnings.warn(f"merge_for_eval: evaluating unmerged, peft cannot merge this adapter ({error})", stacklevel=2)
        return model


def _harness_options(plan: RunPlan) -> dict[str, Any]:
    return {"include_path": plan.harness.get("include_path"), "limit": plan.harness.get("limit"),
            "batch_size": plan.config.batch_size_eval, "max_length": plan.config.max_seq_length}
