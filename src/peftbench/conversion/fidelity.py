"""Probe batches and logits comparisons: how close a converted adapter is to the original, model-wide."""

from __future__ import annotations

import torch
from torch import nn


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
