"""Any peft adapter -> a plain LoRA adapter: ΔW per adapted linear layer, truncated SVD, a standard LoRA folder.

`convert_peft_model` works on a loaded model (the original base weights given separately); `convert_adapter_dir`
is the whole command: read and check the folder, load, convert, write atomically, and measure how far the
converted adapter's logits are from the original's when plain peft loads it on a fresh base model.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from peftbench.conversion.delta import LINEARITY_TOLERANCE, WeightChange, fit_weight_change, read_weight_change
from peftbench.conversion.fidelity import (
    check_fidelity,
    collect_layer_inputs,
    logits_relative_error,
    model_outputs,
    probe_input_ids,
)
from peftbench.conversion.lowrank import RankSpec, choose_rank, factorize, round_up_to_vllm_rank, svd
from peftbench.conversion.refusals import (
    ConversionRefused,
    check_vllm_loadable,
    refuse_by_config_keys,
    refuse_by_peft_type,
    refuse_changed_non_adapter_parameter,
    refuse_non_linear_adapter,
    refuse_non_linear_target,
)
from peftbench.conversion.report import ConversionReport, LayerReport
from peftbench.conversion.source import (
    ADAPTER_CONFIG_FILE,
    ADAPTER_WEIGHTS_FILE,
    BaseModelLoader,
    base_model_loader,
    load_adapter,
    read_adapter_config,
    resolve_base_model,
    snapshot_parameters,
)

PEFT_PREFIX = "base_model.model."
FIT_METHODS = ("least-squares",)
CONVERSION_REPORT_FILE = "conversion_report.json"
# Everything `save_converted` writes: --overwrite replaces only a folder holding these and nothing else.
OUTPUT_FILES = (ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, CONVERSION_REPORT_FILE)


class OutputFolderError(ValueError):
    """--out cannot take the converted adapter (it is the source, holds it, or is not a folder conversion wrote);
    the message names the path."""


def check_output_dir(adapter_dir: str | Path, out_dir: str | Path, overwrite: bool = False) -> None:
    """Refuse, before any model loads, an output folder that writing (or replacing) would break: the source
    adapter itself, a folder around it (replacing it would delete the source, or a whole results folder) or
    inside it, a file, or an existing folder that a conversion did not write."""
    source, out = Path(adapter_dir).resolve(), Path(out_dir).resolve()
    if out == source or out in source.parents:
        raise OutputFolderError(f"--out {out_dir} is the source adapter {adapter_dir} or a folder that holds it: "
                                "writing there would replace the source; choose a new folder")
    if source in out.parents:
        raise OutputFolderError(f"--out {out_dir} is inside the source adapter {adapter_dir}: the converted "
                                "adapter would mix with the source's files; choose a folder outside it")
    _check_replaceable(Path(out_dir), overwrite)
    _check_creatable(Path(out_dir).absolute())


def _check_creatable(out_dir: Path) -> None:
    """The nearest existing folder above `out_dir` must be a folder that takes a new entry (the converted
    adapter is staged beside `out_dir`): a write test, since root ignores permission bits."""
    existing = out_dir.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputFolderError(f"--out {out_dir}: {existing} is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".peftbench-write-check-", dir=existing))
    except OSError as error:
        raise OutputFolderError(f"--out {out_dir}: cannot create a folder in {existing}: "
                                f"{error.strerror or error}") from None


def _check_replaceable(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputFolderError(f"--out {out_dir} exists and is not a folder; choose a folder name")
    existing = sorted(entry.name for entry in out_dir.iterdir()) if out_dir.is_dir() else []
    if not existing:
        return
    if not overwrite:
        raise OutputFolderError(f"{out_dir}: exists and is not empty; pass --overwrite to replace a previous "
                                "conversion's output")
    others = [name for name in existing if name not in OUTPUT_FILES]
    if others or CONVERSION_REPORT_FILE not in existing:
        found = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise OutputFolderError(
            f"--overwrite refused: {out_dir} is not a previous conversion's output (that holds only "
            f"{', '.join(OUTPUT_FILES)}; " + (f"this also holds {found}" if others else f"this has no "
            f"{CONVERSION_REPORT_FILE}") + "); choose a new folder or empty this one yourself"
        )


@dataclass
class ConvertedAdapter:
    """A LoRA adapter in memory: what `save_converted` writes, and the report of how it was made."""

    lora_config: object  # peft.LoraConfig
    state_dict: dict[str, torch.Tensor]
    report: ConversionReport
    # the full-rank ΔW (and Δb) per layer that the factors were cut from: conversion's own view of the adapter,
    # checked against peft's forward pass before any result is reported
    weight_changes: dict[str, WeightChange]


def _strip_prefix(name: str) -> str:
    return name[len(PEFT_PREFIX) :] if name.startswith(PEFT_PREFIX) else name


def _adapted_layers(model: nn.Module) -> tuple[dict[str, nn.Module], dict[str, nn.Module]]:
    """(adapted linear layers, modules_to_save wrappers) by base-model module name; refuses anything else."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import ModulesToSaveWrapper, TrainableTokensWrapper

    adapted, saved = {}, {}
    for name, module in model.named_modules():
        if isinstance(module, TrainableTokensWrapper):
            raise ConversionRefused(
                f"module '{_strip_prefix(name)}' has trainable tokens (embedding rows), which a LoRA on linear "
                "layers cannot express."
            )
        if isinstance(module, ModulesToSaveWrapper):
            saved[_strip_prefix(name)] = module
        elif isinstance(module, BaseTunerLayer) and not any(name.startswith(f"{other}.") for other in adapted):
            base_layer = module.get_base_layer()
            if not isinstance(base_layer, nn.Linear):
                refuse_non_linear_target(_strip_prefix(name), type(base_layer).__name__)
            adapted[_strip_prefix(name)] = module
    if not adapted:
        raise ConversionRefused("the model has no adapted linear layer: nothing to convert")
    return adapted, saved


def _check_untouched_parameters(
    model: nn.Module, original: dict[str, torch.Tensor], adapted: dict, saved: dict
) -> None:
    """Loading the adapter may change nothing but the adapted layers and modules_to_save."""
    base = model.get_base_model()
    owned = tuple(f"{name}." for name in [*adapted, *saved])
    for parameter_name, original_value in original.items():
        if parameter_name.startswith(owned):
            continue
        if not torch.equal(base.get_parameter(parameter_name).detach(), original_value):
            refuse_changed_non_adapter_parameter(parameter_name)


def _weight_changes(
    model, adapted, original, fit, calibration_input_ids, progress
) -> dict[str, WeightChange]:
    generator = torch.Generator().manual_seed(0)
    changes, non_linear = {}, []
    for name in progress(list(adapted), "reading ΔW"):
        change = read_weight_change(
            adapted[name], original[f"{name}.weight"], original.get(f"{name}.bias"), generator, model.active_adapter
        )
        changes[name] = change
        if change.nonlinearity > LINEARITY_TOLERANCE:
            non_linear.append(name)
    if non_linear and fit is None:
        refuse_non_linear_adapter(non_linear[0], changes[non_linear[0]].nonlinearity)
    if non_linear:
        inputs = collect_layer_inputs(model, {name: adapted[name] for name in non_linear}, calibration_input_ids)
        for name in non_linear:
            changes[name] = fit_weight_change(
                adapted[name], inputs[name], original[f"{name}.weight"], original.get(f"{name}.bias")
            )
    return changes


# A layer whose ||ΔW|| is below this fraction of ||W|| is unchanged (reading ΔW in float64 leaves ~1e-16).
UNCHANGED_LAYER_TOLERANCE = 1e-12


def _refuse_no_op(changes: dict[str, WeightChange], saved: dict, original: dict[str, torch.Tensor]) -> None:
    """An adapter that changes no weight is untrained or was not loaded: never a result to report."""
    if saved or any(change.delta_bias is not None for change in changes.values()):
        return
    if all(
        float(change.delta_weight.norm()) <= UNCHANGED_LAYER_TOLERANCE * float(original[f"{name}.weight"].norm())
        for name, change in changes.items()
    ):
        raise ConversionRefused(
            f"the adapter changes none of its {len(changes)} layers' weights: it is at its initialisation (a no-op, "
            "e.g. untrained) or its weights did not load; there is nothing to convert"
        )


def method_label(peft_config) -> str:
    """The peft type plus the variant that matters for conversion (DoRA, a base-rewriting init, ...)."""
    peft_type = str(getattr(peft_config.peft_type, "value", peft_config.peft_type))
    variants = []
    if getattr(peft_config, "use_dora", False):
        variants.append("DoRA")
    init = getattr(peft_config, "init_lora_weights", True)
    if isinstance(init, str):
        variants.append(f"{init} init")
    if getattr(peft_config, "use_bdlora", None):
        variants.append("BD-LoRA")
    if getattr(peft_config, "lora_bias", False):
        variants.append("lora_bias")
    return f"{peft_type} ({', '.join(variants)})" if variants else peft_type


def _no_progress(items, _description):
    return items


def convert_peft_model(
    model: nn.Module,
    original_parameters: dict[str, torch.Tensor],
    rank_spec: RankSpec,
    *,
    vllm: bool = False,
    fit: str | None = None,
    calibration_input_ids: torch.Tensor | None = None,
    base_model_name_or_path: str | None = None,
    source_adapter: str = "<in memory>",
    progress=_no_progress,
) -> ConvertedAdapter:
    """Convert the active adapter of a loaded PeftModel to LoRA factors.

    `original_parameters` are the base model's parameters before the adapter was applied (see
    `source.snapshot_parameters`), so ΔW is relative to the weights the user will load the LoRA onto.
    """
    from peft import LoraConfig

    model.eval()
    adapter_name = model.active_adapter
    peft_config = model.peft_config[adapter_name]
    peft_type = str(getattr(peft_config.peft_type, "value", peft_config.peft_type))
    refuse_by_peft_type(peft_type, "adapter config")
    refuse_by_config_keys(peft_config.to_dict(), "adapter config")

    if fit is not None and fit not in FIT_METHODS:
        raise ValueError(f"--fit {fit!r} is not valid; choose one of {', '.join(FIT_METHODS)}")
    adapted, saved = _adapted_layers(model)
    _check_untouched_parameters(model, original_parameters, adapted, saved)
    if fit is not None and calibration_input_ids is None:
        calibration_input_ids = probe_input_ids(model, seed=1, batch_size=16, length=64)
    changes = _weight_changes(model, adapted, original_parameters, fit, calibration_input_ids, progress)
    _refuse_no_op(changes, saved, original_parameters)

    decompositions = {name: svd(changes[name].delta_weight) for name in progress(list(changes), "SVD of ΔW")}
    ranks = {name: choose_rank(decompositions[name][1], rank_spec) for name in changes}
    has_bias_change = any(change.delta_bias is not None for change in changes.values())
    if vllm:
        # one rank for every layer (zero-padded, which changes nothing) within vLLM's allowed set
        uniform_rank = round_up_to_vllm_rank(max(ranks.values()))
        check_vllm_loadable(modules_to_save=list(saved), has_bias_change=has_bias_change, max_rank=uniform_rank)
        ranks = dict.fromkeys(ranks, uniform_rank)

    common_rank = Counter(ranks.values()).most_common(1)[0][0]
    rank_pattern = {name: rank for name, rank in ranks.items() if rank != common_rank}
    state_dict, layer_reports = {}, []
    for name, change in changes.items():
        factors = factorize(change.delta_weight, ranks[name], decompositions[name])
        dtype = original_parameters[f"{name}.weight"].dtype
        state_dict[f"{PEFT_PREFIX}{name}.lora_A.weight"] = factors.lora_A.to(dtype).contiguous()
        state_dict[f"{PEFT_PREFIX}{name}.lora_B.weight"] = factors.lora_B.to(dtype).contiguous()
        if has_bias_change:
            delta_bias = change.delta_bias if change.delta_bias is not None else torch.zeros(factors.lora_B.shape[0])
            state_dict[f"{PEFT_PREFIX}{name}.lora_B.bias"] = delta_bias.to(dtype).contiguous()
        layer_reports.append(
            LayerReport(
                module=name,
                rank=ranks[name],
                energy_kept=factors.energy_kept,
                delta_relative_error=factors.relative_error,
                delta_norm=float(change.delta_weight.norm()),
                bias_changed=change.delta_bias is not None,
                how=change.how,
                nonlinearity=change.nonlinearity,
            )
        )
    for name, wrapper in saved.items():
        for parameter_name, parameter in wrapper.modules_to_save[adapter_name].named_parameters():
            state_dict[f"{PEFT_PREFIX}{name}.{parameter_name}"] = parameter.detach().clone().contiguous()

    task_type = getattr(peft_config, "task_type", None)
    lora_config = LoraConfig(
        r=common_rank,
        lora_alpha=common_rank,
        target_modules=sorted(changes),
        rank_pattern=rank_pattern,
        alpha_pattern=dict(rank_pattern),  # alpha == rank: LoRA's scaling is 1, it is baked into the factors
        lora_dropout=0.0,
        lora_bias=has_bias_change,
        modules_to_save=sorted(saved) or None,
        base_model_name_or_path=base_model_name_or_path or peft_config.base_model_name_or_path,
        task_type=getattr(task_type, "value", task_type),
    )
    lora_parameters = sum(
        tensor.numel() for key, tensor in state_dict.items() if ".lora_A." in key or ".lora_B." in key
    )
    report = ConversionReport(
        source_adapter=source_adapter,
        peft_type=peft_type,
        method=method_label(peft_config),
        base_model=str(lora_config.base_model_name_or_path),
        rank_spec=rank_spec.describe() + (" (vLLM)" if vllm else ""),
        vllm=vllm,
        approximate=any(not change.exact for change in changes.values()),
        lora_rank=common_rank,
        lora_parameters=lora_parameters,
        layers=layer_reports,
    )
    capped = [f"{name} (rank {ranks[name]}: its ΔW is {' x '.join(map(str, changes[name].delta_weight.shape))})"
              for name in changes if rank_spec.fixed_rank is not None and ranks[name] < rank_spec.fixed_rank]
    if capped:
        listed = "; ".join(capped[:5]) + (f"; and {len(capped) - 5} more (the table shows every rank)"
                                          if len(capped) > 5 else "")
        report.notes.append(f"--rank {rank_spec.fixed_rank} is more than {len(capped)} layer(s) can hold: they keep "
                            f"their full rank, which is exact: {listed}")
    if report.approximate:
        report.notes.append(
            "Some layers are not linear in their input; their weight change was fitted by least squares on "
            "calibration inputs (random token ids). The converted adapter is an approximation."
        )
    return ConvertedAdapter(lora_config=lora_config, state_dict=state_dict, report=report, weight_changes=changes)


def save_converted(converted: ConvertedAdapter, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Write adapter_config.json + adapter_model.safetensors; the folder appears complete or not at all."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    _check_replaceable(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        save_file(converted.state_dict, str(staging / ADAPTER_WEIGHTS_FILE), metadata={"format": "pt"})
        converted.lora_config.save_pretrained(str(staging))
        report_json = json.dumps(converted.report.to_json_dict(), indent=2)
        (staging / CONVERSION_REPORT_FILE).write_text(report_json + "\n", encoding="utf-8")
        for written in staging.iterdir():
            with open(written, "rb") as handle:
                os.fsync(handle.fileno())
        if out_dir.exists():
            previous = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, previous)
            os.replace(staging, out_dir)
            shutil.rmtree(previous)
        else:
            os.replace(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out_dir


@torch.no_grad()
def apply_weight_changes(base_model: nn.Module, converted: ConvertedAdapter) -> nn.Module:
    """`base_model` with conversion's full-rank view of the adapter merged into its weights (and the
    modules_to_save copied in): what the converted LoRA is cut from, before any rank truncation."""
    for name, change in converted.weight_changes.items():
        layer = base_model.get_submodule(name)
        layer.weight += change.delta_weight.to(layer.weight.dtype)
        if change.delta_bias is not None:
            delta_bias = change.delta_bias.to(layer.weight.dtype)
            if layer.bias is None:
                layer.bias = nn.Parameter(delta_bias, requires_grad=False)
            else:
                layer.bias += delta_bias
    for key, value in converted.state_dict.items():
        if ".lora_A." not in key and ".lora_B." not in key:  # modules_to_save, stored under their module's name
            base_model.get_parameter(_strip_prefix(key)).copy_(value)
    return base_model


@torch.no_grad()
def measure_fidelity(
    loader: BaseModelLoader, adapter_dir: str | Path, lora_dir: str | Path, converted: ConvertedAdapter
) -> None:
    """Fill the report's logits measures and fail (ConversionFailed) where they show a wrong conversion.

    Every model is loaded fresh as a user would: the original adapter and the converted LoRA through plain
    `PeftModel.from_pretrained` (strictly: every checkpoint weight must load), and conversion's own view (the
    full-rank ΔW merged into the base weights). All run on the same probe batch.
    """
    report = converted.report
    base = loader.load()
    input_ids = probe_input_ids(base, seed=2, batch_size=4, length=32)
    base_logits = model_outputs(base, input_ids)
    original_logits = model_outputs(load_adapter(base, adapter_dir), input_ids)
    del base
    view_logits = model_outputs(apply_weight_changes(loader.load(), converted), input_ids)
    converted_logits = model_outputs(load_adapter(loader.load(), lora_dir), input_ids)
    report.adapter_logits_effect = logits_relative_error(base_logits, original_logits)
    report.weight_change_view_error = logits_relative_error(view_logits, original_logits)
    report.max_logits_relative_error = logits_relative_error(converted_logits, original_logits)
    check_fidelity(report)


def convert_adapter_dir(
    adapter_dir: str | Path,
    out_dir: str | Path,
    rank_spec: RankSpec,
    *,
    base_model: str | None = None,
    fallback_base_model: str | None = None,
    vllm: bool = False,
    fit: str | None = None,
    overwrite: bool = False,
    measure: bool = True,
    trust_remote_code: bool = False,
    progress=_no_progress,
) -> ConversionReport:
    """The `peftbench convert` command without its terminal output."""
    check_output_dir(adapter_dir, out_dir, overwrite)
    config = read_adapter_config(adapter_dir)
    config_file = str(Path(adapter_dir) / ADAPTER_CONFIG_FILE)
    base_model_path = resolve_base_model(config, base_model, config_file, fallback_base_model)
    loader = base_model_loader(adapter_dir, config, base_model_path, trust_remote_code)
    model = loader.load()
    original_parameters = snapshot_parameters(model)
    model = load_adapter(model, adapter_dir)
    converted = convert_peft_model(
        model,
        original_parameters,
        rank_spec,
        vllm=vllm,
        fit=fit,
        base_model_name_or_path=base_model_path,
        source_adapter=str(adapter_dir),
        progress=progress,
    )
    del model, original_parameters
    report = converted.report
    report.base_model_loaded_as = f"{loader.describe()} ({loader.source})"
    report.output_dir = str(out_dir)
    if measure:
        # measured on a staged copy first: nothing is written unless the check passes, and the report holds the numbers
        with tempfile.TemporaryDirectory() as staged:
            save_converted(converted, Path(staged) / "lora")
            measure_fidelity(loader, adapter_dir, Path(staged) / "lora", converted)
    save_converted(converted, out_dir, overwrite=overwrite)
    return report
