"""From a weight change ΔW to LoRA factors by truncated SVD (the best rank-r approximation in Frobenius norm).

With ΔW = U S V^T, lora_B = U_r sqrt(S_r) and lora_A = sqrt(S_r) V_r^T, so lora_B @ lora_A is the truncated SVD
and both factors have the same scale. The adapter's lora_alpha equals its rank, so LoRA's scaling is 1.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import torch

from peftbench.conversion.refusals import VLLM_ALLOWED_RANKS


@dataclass(frozen=True)
class RankSpec:
    """How many singular directions to keep per layer: a fixed rank, an energy fraction, or all of them."""

    fixed_rank: int | None = None
    energy_fraction: float | None = None  # smallest r with sum(S_r^2) / sum(S^2) >= fraction

    @property
    def is_full(self) -> bool:
        return self.fixed_rank is None and self.energy_fraction is None

    def describe(self) -> str:
        if self.fixed_rank is not None:
            return str(self.fixed_rank)
        if self.energy_fraction is not None:
            return f"energy {self.energy_fraction:g}"
        return "full"


def parse_rank_spec(text: str) -> RankSpec:
    """'8' -> rank 8; '0.9' -> 90% of ΔW's energy per layer; 'full' -> every non-zero singular direction."""
    cleaned = str(text).strip().lower()
    if cleaned == "full":
        return RankSpec()
    if cleaned.isdigit():
        rank = int(cleaned)
        if rank < 1:
            raise ValueError(f"--rank {text!r}: a fixed rank must be a positive integer")
        return RankSpec(fixed_rank=rank)
    try:
        fraction = float(cleaned)
    except ValueError:
        raise ValueError(
            f"--rank {text!r} is not valid: give a positive integer (fixed rank), a float in (0, 1] "
            "(fraction of ΔW's energy kept per layer) or 'full'"
        ) from None
    if not 0 < fraction <= 1:
        raise ValueError(f"--rank {text!r}: an energy fraction must lie in (0, 1]")
    return RankSpec(energy_fraction=fraction)


def round_up_to_vllm_rank(rank: int) -> int:
    """The smallest rank in vLLM's allowed set that is >= `rank` (`rank` itself beyond the set)."""
    index = bisect.bisect_left(VLLM_ALLOWED_RANKS, rank)
    return VLLM_ALLOWED_RANKS[index] if index < len(VLLM_ALLOWED_RANKS) else rank


@dataclass
class LowRankFactors:
    lora_A: torch.Tensor  # rank x in
    lora_B: torch.Tensor  # out x rank
    rank: int
    energy_kept: float  # sum(S_r^2) / sum(S^2); 1.0 for a zero ΔW
    relative_error: float  # ||ΔW - B A||_F / ||ΔW||_F; 0.0 for a zero ΔW
    singular_values: torch.Tensor


def svd(delta_weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.linalg.svd(delta_weight.to(torch.float64), full_matrices=False)


def choose_rank(singular_values: torch.Tensor, spec: RankSpec) -> int:
    """The rank `spec` asks for on a layer with these singular values (at least 1, at most their number)."""
    full = len(singular_values)
    if spec.fixed_rank is not None:
        return min(spec.fixed_rank, full)
    energy = singular_values.to(torch.float64) ** 2
    total = float(energy.sum())
    if total == 0:
        return 1
    if spec.energy_fraction is None:
        # full: every direction above float64 round-off of the largest singular value
        cutoff = float(singular_values[0]) * full * torch.finfo(torch.float64).eps
        return max(1, int((singular_values > cutoff).sum()))
    cumulative = torch.cumsum(energy, 0) / total
    # a tiny tolerance so that fraction 1.0 does not demand directions that are round-off
    return min(full, int(torch.searchsorted(cumulative, spec.energy_fraction - 1e-12)) + 1)


def factorize(delta_weight: torch.Tensor, rank: int, decomposition=None) -> LowRankFactors:
    """LoRA factors of exactly `rank` (zero-padded beyond ΔW's size, which changes nothing)."""
    U, S, Vh = decomposition if decomposition is not None else svd(delta_weight)
    kept = min(rank, len(S))
    root = S[:kept].sqrt()
    lora_B = torch.zeros(U.shape[0], rank, dtype=torch.float64)
    lora_A = torch.zeros(rank, Vh.shape[1], dtype=torch.float64)
    lora_B[:, :kept] = U[:, :kept] * root
    lora_A[:kept] = root[:, None] * Vh[:kept]
    energy = S**2
    total = float(energy.sum())
    if total == 0:
        energy_kept, relative_error = 1.0, 0.0
    else:
        energy_kept = float(energy[:kept].sum()) / total
        # measured, not derived from the dropped singular values, so a wrong factorisation would show
        delta = delta_weight.to(torch.float64)
        relative_error = float((delta - lora_B @ lora_A).norm() / delta.norm())
    return LowRankFactors(lora_A, lora_B, rank, energy_kept, relative_error, S)
