"""What the child process of `peftbench infer` does: load the task's base model, attach one target's adapter,
time each serving mode, write RESULTS/inference/<stem>.json (results/inference_record.py).

The job arrives as JSON on stdin (runners.child, `"job": "infer"`); inference/run.py builds it. Whatever
happens, a result file is written: `success`, or `failed` with a message that names the folder, or
`cancelled`. A mode the method cannot serve in is recorded as {supported: false, reason}, never left out.
"""

from __future__ import annotations

import copy
import datetime as dt
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Optional

from peftbench.config import ConfigError
from peftbench.inference.settings import InferenceSettings, load_prompts
from peftbench.inference.targets import InferenceTarget
from peftbench.inference.timing import Served, steps_of, time_images, time_text
from peftbench.results.inference_record import MODES, InferenceResult, write_inference

SECOND_ADAPTER = "second"  # the other tenant of a mixed-adapter batch


def _type_name(peft_config) -> str:
    return str(getattr(peft_config.peft_type, "value", peft_config.peft_type))


def unsupported(reason: str) -> dict[str, Any]:
    return {"supported": False, "reason": reason}


def measure_job(job: dict[str, Any]) -> int:
    """Measure one job and write its result; the child's exit code (0 once the result is written)."""
    target = InferenceTarget(**job["target"]) if job.get("target") else None
    result = InferenceResult(
        task=job["task"], method=target.method if target else "", name=target.name if target else "",
        experiment_name=f"{target.method}/{target.name}" if target else "", source=target.folder if target else "",
        adapter_state=target.state if target else "base",
        created_at=dt.datetime.now(tz=dt.timezone.utc).replace(microsecond=0).isoformat(),
    )
    try:
        _measure(job, target, result)
        result.status = "success"
    except KeyboardInterrupt as interrupt:
        from peftbench.cancel import cancel_reason

        result.status, result.error_msg = "cancelled", cancel_reason(interrupt)
    except (ConfigError, ValueError, OSError) as error:  # bad input: the message names the folder or key
        result.status, result.error_msg = "failed", str(error)
    except Exception as error:  # recorded; the other experiments are still measured
        result.status = "failed"
        result.error_msg = f"{type(error).__name__}: {error}\n{traceback.format_exc(limit=8)}"
    write_inference(Path(job["result_file"]), result)
    return 0


def _measure(job: dict[str, Any], target: Optional[InferenceTarget], result: InferenceResult) -> None:
    import torch
    from tqdm.auto import tqdm

    from peftbench.hardware import precision_name, resolve_use_amp
    from peftbench.results.writer import package_info
    from peftbench.hardware import describe_device, resolve_device
    from peftbench.tasks import get_task

    task = get_task(job["task"])
    config = task.build_config({}, "the task's defaults", job.get("overrides", {}), "--task-set")
    settings = InferenceSettings.build(task.inference_params, job.get("settings", {}))
    threads = job.get("num_threads") or config.num_threads
    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(config)
    use_amp, hardware = resolve_use_amp(config.use_amp, config.device)
    clock = settings.clock if settings.clock != "auto" else (
        "cpu" if device.type == "cpu" and torch.get_num_threads() == 1 else "wall")
    result.num_threads, result.device, result.clock = torch.get_num_threads(), describe_device(device), clock
    result.hardware, result.precision = hardware.to_dict(), precision_name(config.dtype, use_amp)
    result.settings, result.model_id, result.package_info = settings.to_dict(), config.model_id, package_info()

    from peftbench.tasks.image_gen.task import ImageGenTask

    images = isinstance(task, ImageGenTask)
    processor = task.load_processor(config)  # a tokenizer, or an image pipeline's parts
    if images:
        prompts = (config.drift_image_prompts or config.instance_prompts)[: settings.prompts_per_category or 5]
    else:
        processor.padding_side = "left"  # generation continues each row from its last token
        prompts = load_prompts(settings)
    torch.manual_seed(settings.seed)
    base = task.load_model(config, device).eval()

    # each adapter's modes are timed beside a pristine copy of the base model (inference/timing.py)
    reference = None if target is None else task.load_model(config, device).eval()
    if target is None:
        served, blocks = {"base": Served(base, sorted(settings.batch_sizes), parameters=_parameters(base))}, {}
    else:
        served, blocks = _serving_modes(target, task, config, device, base, processor, settings, result,
                                        text=not images)
    if images:  # one prompt a call: image generation is measured at batch size 1
        for entry in served.values():
            entry.batch_sizes = [1]
    bar = tqdm(total=steps_of(served, settings, 1 if images else len(prompts)), desc="measuring", unit="step",
               disable=not job.get("show_progress", True), leave=False)
    if images:
        measured = time_images(served, processor, prompts, config, settings, clock=clock, reference=reference,
                               on_step=bar.update)
    else:
        measured = time_text(served, processor, prompts, settings, device, clock=clock, autocast=use_amp,
                             reference=reference, on_step=bar.update)
    bar.close()
    blocks.update(measured)
    if target is None:
        result.base = blocks["base"]
        return
    result.modes = {mode: blocks[mode] for mode in MODES if mode in blocks}
    result.choose_headline()


def _parameters(model) -> int:
    """What the served model holds (a merged adapter leaves exactly the base model's)."""
    return sum(p.numel() for p in model.parameters())


def _serving_modes(target: InferenceTarget, task, config, device, base, processor, settings: InferenceSettings,
                   result: InferenceResult, text: bool) -> tuple[dict[str, Served], dict[str, Any]]:
    """(the modes to time, each a Served; the blocks of the modes the method cannot serve in); the adapter's parameter counts go into `result`. Every mode
    is built before any is timed, because they are timed side by side: the merged one from a copy."""
    from peftbench.training.train import trainable_and_total_params

    if target.state == "full":
        model = base if not (Path(target.folder) / "config.json").is_file() else \
            task.load_model(replace(config, model_id=target.folder), device).eval()
        # no adapter: nothing to merge, convert or mix; the model is served as it is
        return {"full": Served(model, settings.batch_sizes_of("unmerged"), parameters=_parameters(model))}, {}
    original = None
    if "converted" in settings.modes and target.state != "converted":
        from peftbench.conversion.source import snapshot_parameters

        original = snapshot_parameters(base)  # conversion's ΔW is against the weights before the adapter
    model, peft_config = _attach_adapter(target, task, config, base, processor, device)
    result.peft_type = _type_name(peft_config)
    result.trainable_params, result.total_params = trainable_and_total_params(model)
    adapter_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    result.adapter_size_mb = adapter_bytes / 2**20  # PEFT's estimate (not a file size)
    served = {"unmerged": Served(model, settings.batch_sizes_of("unmerged"), parameters=_parameters(model))}
    blocks: dict[str, Any] = {}
    for mode, build in (("merged", lambda: _merged(model, peft_config)),
                        ("converted", lambda: _converted(target, task, config, device, model, original, settings)),
                        ("mixed", lambda: _mixed(target, model, peft_config, processor, device, settings) if text
                         else unsupported("mixed-adapter batches are measured for text generation only"))):
        if mode not in settings.modes:
            continue
        built = build()
        if isinstance(built, Served):
            built.batch_sizes = settings.batch_sizes_of(mode)
            served[mode] = built
        else:
            blocks[mode] = built
    return served, blocks


def _attach_adapter(target: InferenceTarget, task, config, base, processor, device):
    """(the peft model in eval mode, its config): built from adapter_config.json (untrained, as PEFT's benchmark
    does), or loaded strictly from the checkpoint; errors name the folder."""
    if target.state == "untrained":
        from peftbench.experiments import build_peft_config, load_experiment
        from peftbench.training.methods import wrap_model

        spec = load_experiment(target.folder)
        peft_config = build_peft_config(spec)
        model = wrap_model(base, peft_config, processor, config, source=str(Path(target.folder) / "adapter_config.json"))
        return model.to(device).eval(), peft_config
    if target.state == "converted":
        _check_converted_base(target, config)
    from peftbench.adapter_loading import AdapterLoadError, load_adapter_strictly

    try:
        model = load_adapter_strictly(base, target.folder, is_trainable=True)
    except AdapterLoadError:
        raise
    except Exception as error:  # peft's own errors: a config it rejects, a weights file it cannot read
        raise ConfigError(f"{target.folder}: peft could not load this adapter: {type(error).__name__}: {error}") from None
    return model.to(device).eval(), model.peft_config[model.active_adapter]


def _check_converted_base(target: InferenceTarget, config) -> None:
    """A converted LoRA names the base model it was cut for: it must exist and be the task's."""
    import json

    recorded = json.loads((Path(target.folder) / "adapter_config.json").read_text(encoding="utf-8")).get(
        "base_model_name_or_path")
    if not recorded:
        return
    local = recorded.startswith(("/", ".")) or Path(recorded).is_absolute()
    if local and not Path(recorded).exists():
        raise ConfigError(f"{target.folder}: the converted adapter's base model {recorded} is missing (named by its "
                          "adapter_config.json base_model_name_or_path); restore it, or measure with --set "
                          "model_id=<the base model> on the task it was converted for")
    if local and Path(recorded).resolve() != Path(config.model_id).resolve():
        raise ConfigError(f"{target.folder}: converted for base model {recorded}, but the task's model is "
                          f"{config.model_id}; pass --task or --set model_id={recorded}")


def _mixed(target: InferenceTarget, model, peft_config, tokenizer, device, settings: InferenceSettings):
    """One batch, two adapters (peft's adapter_names, the rows alternating): the multi-tenant case. A Served,
    or why not: one short generate with the names is tried first, since peft refuses some tuners only there."""
    if not settings.batch_sizes_of("mixed"):
        return unsupported("a mixed-adapter batch needs a batch size above 1 (--set batch_sizes=[1,8])")
    if peft_config.is_prompt_learning:
        return unsupported(f"{_type_name(peft_config)}: peft serves mixed-adapter batches for tuners that adapt layers, "
                           "not for prompt learning")
    if target.state == "untrained":
        model.add_adapter(SECOND_ADAPTER, copy.deepcopy(peft_config))
    else:
        model.load_adapter(target.folder, adapter_name=SECOND_ADAPTER)
    model.set_adapter("default")
    model.eval()

    def names(size: int) -> dict[str, Any]:
        return {"adapter_names": [("default", SECOND_ADAPTER)[i % 2] for i in range(size)]}

    try:
        import torch

        inputs = tokenizer(["a", "b"], return_tensors="pt", padding=True).to(device)
        with torch.inference_mode():
            model.generate(**inputs, max_new_tokens=1, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                           **names(2))
    except (ValueError, TypeError, NotImplementedError, AttributeError) as error:  # peft: not for this tuner
        _remove_adapter_names_hooks(model)
        model.delete_adapter(SECOND_ADAPTER)
        model.set_adapter("default")
        return unsupported(f"peft cannot serve a mixed-adapter batch of {_type_name(peft_config)}: {error}")
    # the un-merged mode serves the same model: only the active adapter ("default") computes there
    return Served(model, [], options=names, parameters=_parameters(model))


def _remove_adapter_names_hooks(model) -> None:
    """Remove the forward pre-hooks that peft registers for `adapter_names` and, when the forward raises (DoRA:
    "Cannot pass `adapter_names` when DoRA is enabled"), leaves behind (its context manager removes them only
    after a clean exit): every later forward of the model would otherwise receive the mixed batch's names."""
    for module in model.modules():
        for key, hook in list(module._forward_pre_hooks.items()):
            if getattr(getattr(hook, "func", None), "__name__", "") == "_adapter_names_pre_forward_hook":
                del module._forward_pre_hooks[key]
                module._forward_pre_hooks_with_kwargs.pop(key, None)


def _converted(target: InferenceTarget, task, config, device, model, original, settings: InferenceSettings):
    """The adapter converted to a LoRA of settings.converted_rank (peftbench.conversion, in memory), loaded
    un-merged on a fresh base model: what a serving engine that takes only LoRA runs."""
    if target.state == "converted":
        return unsupported("this adapter is a converted LoRA already: its 'unmerged' mode is the converted one")
    from peftbench.conversion.convert import convert_peft_model
    from peftbench.conversion.coverage import load_state_dict_as_lora, perturb_adapter
    from peftbench.conversion.lowrank import RankSpec
    from peftbench.conversion.refusals import ConversionRefused

    if target.state == "untrained":
        # An untrained adapter is the identity, which conversion refuses as a no-op; noise in its weights changes
        # what it computes, not how much: the converted LoRA's rank and layers are the same (and the un-merged
        # mode, served by the same model, costs the same).
        perturb_adapter(model, seed=settings.seed)
    try:
        converted = convert_peft_model(model, original, RankSpec(fixed_rank=settings.converted_rank),
                                       source_adapter=target.folder)
    except (ConversionRefused, ValueError, NotImplementedError) as error:
        return unsupported(f"conversion to LoRA refused: {error}")
    lora = load_state_dict_as_lora(task.load_model(config, device), converted.lora_config, converted.state_dict)
    lora = lora.to(device).eval()
    return Served(lora, [], parameters=_parameters(lora),
                  extra={"lora_rank": converted.report.lora_rank, "lora_parameters": converted.report.lora_parameters})


def _merged(model, peft_config):
    """merge_and_unload of a copy of the peft model: the adapter folded into the base weights, served beside
    the un-merged one."""
    if peft_config.is_prompt_learning:
        return unsupported(f"{_type_name(peft_config)} adds virtual tokens to every input: there is nothing to "
                           "merge into the weights, it is always served un-merged")
    try:
        merged = copy.deepcopy(model).merge_and_unload()
    except (AttributeError, NotImplementedError, ValueError, TypeError) as error:  # peft: this tuner cannot merge
        return unsupported(f"peft cannot merge {_type_name(peft_config)}: {error}")
    return Served(merged.eval(), [], parameters=_parameters(merged))
