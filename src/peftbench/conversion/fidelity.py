"""Probe batches and logits comparisons: how close a converted adapter is to the original, model-wide, and when
that comparison means the conversion failed."""

from __future__ import annotations

import torch
from torch import nn

# Relative logits change below which the original adapter does nothing measurable: float32 round-off is ~1e-7.
NO_EFFECT_TOLERANCE = 1e-6
# Conversion's full-rank view of an exact conversion must reproduce peft's forward pass to this relative logits
# error (float32 round-off gives ~1e-7), and to a tenth of what the adapter changes at most.
VIEW_TOLERANCE = 1e-4
VIEW_SHARE_OF_EFFECT = 0.1


class ConversionFailed(ValueError):
    """The measured logits show that the conversion did not capture the adapter; nothing is written."""


def check_fidelity(report) -> None:
    """Fail a conversion whose measures show it wrong: an original adapter that does nothing on the probe (untrained
    or not loaded), or, for an exact conversion, a full-rank ΔW view that disagrees with peft's own forward pass."""
    effect, view_error = report.adapter_logits_effect, report.weight_change_view_error
    if effect <= NO_EFFECT_TOLERANCE:
        raise ConversionFailed(
            f"{report.source_adapter}: the original adapter, loaded by plain peft, moves the logits by {effect:.3g} "
            f"(at most {NO_EFFECT_TOLERANCE:g}): it is untrained or its weights did not load; nothing to convert"
        )
    if not report.approximate and view_error > min(VIEW_TOLERANCE, VIEW_SHARE_OF_EFFECT * effect):
        raise ConversionFailed(
            f"{report.source_adapter}: conversion's view of the adapter (its ΔW at full rank) differs from plain "
            f"peft's forward pass by {view_error:.3g} relative logits error (the adapter itself moves them by "
            f"{effect:.3g}; allowed: {min(VIEW_TOLERANCE, VIEW_SHARE_OF_EFFECT * effect):.3g}); the conversion "
            "did not capture this adapter"
        )


def probe_input_ids(model: nn.Module, seed: int, batch_size: int, length: int) -> torch.Tensor:
    """Random token ids over the model's vocabulary (seeded, so every run compares the same inputs)."""
    vocab_size = model.config.vocab_size
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (batch_size, length), generator=generator)


@torch.no_grad()
def model_outputs(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Logits (or the last hidden state for models without a head), in float64 for the comparison."""
    outputs = model(input_ids=input_ids)
    logits = getattr(outputs, "logits", None)
    if logits is None:
        logits = outputs.last_hidden_state
    return logits.to(torch.float64)


def logits_relative_error(candidate: torch.Tensor, reference: torch.Tensor) -> float:
    """max over sequences of ||candidate - reference||_F / ||reference||_F."""
    flat_difference = (candidate - reference).flatten(1).norm(dim=1)
    flat_reference = reference.flatten(1).norm(dim=1).clamp_min(torch.finfo(torch.float64).tiny)
    return float((flat_difference / flat_reference).max())


@torch.no_grad()
def collect_layer_inputs(
    model: nn.Module, layers: dict[str, nn.Module], input_ids: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The inputs each of `layers` sees when the model runs on `input_ids` (calibration for a fit)."""
    inputs: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    handles = [
        layer.register_forward_pre_hook(
            lambda _module, args, name=name: inputs[name].append(args[0].detach().reshape(-1, args[0].shape[-1]))
        )
        for name, layer in layers.items()
    ]
    try:
        model(input_ids=input_ids)
    finally:
        for handle in handles:
            handle.remove()
    return {name: torch.cat(chunks) for name, chunks in inputs.items()}
