"""The effective weight change of one adapted linear layer.

For an adapter that keeps its layer linear in the input, y = x W_eff^T + b_eff. Running the adapted layer on
the identity matrix (one row per input feature) gives W_eff^T + b_eff row by row, and on a zero input gives
b_eff. This reads ΔW = W_eff - W_original for any method (LoRA variants, DoRA, OFT, BOFT, HRA, IA3, LoHa, LoKr,
VeRA, FourierFT, ...) without knowing its formula. W_original is the weight of the base model the user loads,
not the layer's current base weight: PiSSA, OLoRA and CorDA rewrite the base weight when they are applied.

Where peft itself knows the layer's ΔW (`supports_lora_conversion` and `get_delta_weight`), that formula is used
instead of the identity pass (cheaper on wide layers), but only once the probe below confirms it: peft's ΔW is
relative to the layer's current base weight and, for some variants, incomplete (DoRA's magnitude).

A random probe then checks that y really is x W_eff^T + b_eff; an adapter that is not linear in its input (Lily's
input router) fails the probe and can only be approximated by a least-squares fit on calibration inputs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

# Rows of the identity fed through a layer at once: bounds memory for wide layers (4096 x 512 x 8 bytes).
IDENTITY_CHUNK_ROWS = 512
# A layer is linear when the probe residual is below this fraction of the adapter's own contribution. Exact
# linear adapters give ~1e-12 in float64; layers that compute internally in float32 give up to ~3e-7. Lily,
# whose router makes it non-linear, gives 4e-5 to 1e-4 after a few training steps of PEFT's configs, so the bound
# sits between.
LINEARITY_TOLERANCE = 1e-5


@dataclass
class WeightChange:
    """ΔW (out x in) and Δb (out) of one layer, in float64, plus how well they reproduce the layer."""

    delta_weight: torch.Tensor
    delta_bias: torch.Tensor | None  # None when the bias did not change
    nonlinearity: float  # relative residual of the linear model on random probes (or on calibration rows)
    how: str  # "peft formula" or "identity probe" (both exact and probe-checked), or "least-squares fit"

    @property
    def exact(self) -> bool:
        return self.how != "least-squares fit"


def _float64_copy(layer: nn.Module) -> nn.Module:
    """A detached float64 copy in eval mode (no dropout), so reading ΔW does not touch the model."""
    layer_copy = copy.deepcopy(layer).to(torch.float64).eval()
    for module in layer_copy.modules():
        # some adapters (AdaMSS) cache their layer's dtype in a plain attribute, which .to() leaves as it was
        if isinstance(vars(module).get("dtype"), torch.dtype):
            module.dtype = torch.float64
    return layer_copy


@torch.no_grad()
def _run(layer: nn.Module, rows: torch.Tensor) -> torch.Tensor:
    # A leading batch axis of 1: some adapters expect (batch, sequence, features).
    return layer(rows.unsqueeze(0)).squeeze(0)


@torch.no_grad()
def effective_affine_map(layer: nn.Module, in_features: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (W_eff, b_eff) read from `layer` by identity and zero inputs, in the layer's dtype."""
    dtype = next(layer.parameters()).dtype
    b_eff = _run(layer, torch.zeros(1, in_features, dtype=dtype))[0]
    columns = []
    for start in range(0, in_features, IDENTITY_CHUNK_ROWS):
        stop = min(start + IDENTITY_CHUNK_ROWS, in_features)
        identity_rows = torch.zeros(stop - start, in_features, dtype=dtype)
        identity_rows[:, start:stop] = torch.eye(stop - start, dtype=dtype)
        columns.append((_run(layer, identity_rows) - b_eff).T)
    return torch.cat(columns, dim=1), b_eff


@torch.no_grad()
def probe_nonlinearity(
    layer: nn.Module,
    w_eff: torch.Tensor,
    b_eff: torch.Tensor,
    w_original: torch.Tensor,
    b_original: torch.Tensor | None,
    generator: torch.Generator,
) -> float:
    """Relative residual ||y - (x W_eff^T + b_eff)|| / ||y - base(x)|| on random batched inputs.

    Measured against the adapter's own contribution (not the whole output) so that a small non-linear adapter
    is not hidden by a large base weight. The probe has a batch and sequence shape different from the identity
    input, which also catches adapters whose output depends on the rest of the batch.
    """
    in_features = w_eff.shape[1]
    probe = torch.randn(3, 7, in_features, generator=generator, dtype=torch.float64).to(w_eff.dtype)
    output = layer(probe)
    predicted = probe @ w_eff.T + b_eff
    base_output = probe @ w_original.T + (0 if b_original is None else b_original)
    adapter_contribution = (output - base_output).norm()
    residual = (output - predicted).norm()
    if adapter_contribution == 0:
        return float(residual)  # the adapter changes nothing; any residual is then absolute
    return float(residual / adapter_contribution)


@torch.no_grad()
def _peft_formula_weight(layer: nn.Module, adapter_name: str | None) -> torch.Tensor | None:
    """W_eff from peft's own get_delta_weight where the layer type declares it exact, else None."""
    if adapter_name is None or not getattr(layer, "supports_lora_conversion", lambda *_: False)(adapter_name):
        return None
    try:
        delta = layer.get_delta_weight(adapter_name)
    except Exception:  # e.g. a variant whose formula needs more arguments: the identity probe covers it
        return None
    base_weight = layer.get_base_layer().weight
    if delta.shape != base_weight.shape:
        return None
    return base_weight + delta.to(base_weight.dtype)


def read_weight_change(
    layer: nn.Module,
    w_original: torch.Tensor,
    b_original: torch.Tensor | None,
    generator: torch.Generator,
    adapter_name: str | None = None,
) -> WeightChange:
    """Exact ΔW (and Δb) of an adapted linear layer relative to the original base weights."""
    probe_layer = _float64_copy(layer)
    w_original = w_original.to(torch.float64)
    b_original = None if b_original is None else b_original.to(torch.float64)
    in_features = w_original.shape[1]
    b_eff = _run(probe_layer, torch.zeros(1, in_features, dtype=torch.float64))[0]
    w_eff, how = _peft_formula_weight(probe_layer, adapter_name), "peft formula"
    nonlinearity = None
    if w_eff is not None:
        nonlinearity = probe_nonlinearity(probe_layer, w_eff, b_eff, w_original, b_original, generator)
    if w_eff is None or nonlinearity > LINEARITY_TOLERANCE:
        w_eff, b_eff = effective_affine_map(probe_layer, in_features)
        nonlinearity = probe_nonlinearity(probe_layer, w_eff, b_eff, w_original, b_original, generator)
        how = "identity probe"
    delta_bias = b_eff - (0 if b_original is None else b_original)
    has_bias_change = bool(delta_bias.abs().max() > 0)
    return WeightChange(
        delta_weight=w_eff - w_original,
        delta_bias=delta_bias if has_bias_change else None,
        nonlinearity=nonlinearity,
        how=how,
    )


@torch.no_grad()
def fit_weight_change(
    layer: nn.Module,
    calibration_inputs: torch.Tensor,
    w_original: torch.Tensor,
    b_original: torch.Tensor | None,
) -> WeightChange:
    """Least-squares ΔW (and Δb where the layer has a bias) reproducing `layer` on calibration inputs.

    Solves min ||X ΔW^T + Δb - (layer(X) - base(X))||. With fewer independent rows than input features the
    minimum-norm solution is taken, which leaves directions the calibration data never excites unchanged.
    """
    probe_layer = _float64_copy(layer)
    inputs = calibration_inputs.reshape(-1, calibration_inputs.shape[-1]).to(torch.float64)
    w_original = w_original.to(torch.float64)
    b_original = None if b_original is None else b_original.to(torch.float64)
    base_output = inputs @ w_original.T + (0 if b_original is None else b_original)
    target = _run(probe_layer, inputs) - base_output
    design = inputs if b_original is None else torch.cat([inputs, torch.ones(len(inputs), 1, dtype=inputs.dtype)], 1)
    solution = torch.linalg.lstsq(design, target, driver="gelsd").solution  # (in [+1]) x out
    delta_weight = solution[: inputs.shape[1]].T
    delta_bias = None if b_original is None else solution[inputs.shape[1]]
    fitted = design @ solution
    residual = (target - fitted).norm() / target.norm().clamp_min(torch.finfo(torch.float64).tiny)
    return WeightChange(
        delta_weight=delta_weight, delta_bias=delta_bias, nonlinearity=float(residual), how="least-squares fit"
    )
