"""What a conversion kept and lost: per layer (rank, energy, ΔW error) and for the whole model (logits error)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class LayerReport:
    module: str  # module name in the base model, as written in target_modules
    rank: int  # rank written for this layer
    energy_kept: float  # fraction of ||ΔW||_F^2 in the kept singular directions
    delta_relative_error: float  # ||ΔW - lora_B lora_A||_F / ||ΔW||_F
    delta_norm: float  # ||ΔW||_F, to see which layers the adapter changed most
    bias_changed: bool
    how: str  # "peft formula" | "identity probe" (exact, probe-checked) | "least-squares fit" (approximate)
    nonlinearity: float  # relative residual of the linear model (probe, or calibration fit)


@dataclass
class ConversionReport:
    source_adapter: str
    peft_type: str
    method: str  # peft_type plus the variant, e.g. "LORA (DoRA)", "LORA (pissa init)"
    base_model: str
    rank_spec: str
    vllm: bool
    approximate: bool  # True when any layer was fitted by least squares
    lora_rank: int  # the config's r (per-layer ranks in rank_pattern)
    lora_parameters: int
    layers: list[LayerReport] = field(default_factory=list)
    output_dir: str | None = None
    # converted vs original on a probe batch: max over sequences of ||Δlogits||_F / ||logits||_F
    max_logits_relative_error: float | None = None
    # how much the original adapter moves the logits (same measure, original vs base model), for scale
    adapter_logits_effect: float | None = None
    # conversion's full-rank ΔW view (merged into the base weights) vs the original through plain peft
    weight_change_view_error: float | None = None
    base_model_loaded_as: str | None = None  # the class or task, and where that came from
    notes: list[str] = field(default_factory=list)

    def to_json_dict(self) -> dict:
        return asdict(self)

    def summary_line(self) -> str:
        energies = [layer.energy_kept for layer in self.layers]
        line = (
            f"{self.method} -> LoRA ({self.rank_spec}): {len(self.layers)} layers, "
            f"{self.lora_parameters:,} LoRA parameters, min energy kept {min(energies):.4f}"
        )
        if self.max_logits_relative_error is not None:
            line += f", max relative logits error {self.max_logits_relative_error:.3g}"
            if self.adapter_logits_effect is not None:
                line += f" (the adapter itself moves logits by {self.adapter_logits_effect:.3g})"
            if self.weight_change_view_error is not None:
                line += f", full-rank ΔW vs plain peft {self.weight_change_view_error:.3g}"
        if self.approximate:
            line += " [APPROXIMATE: least-squares fit]"
        return line


def render_table(report: ConversionReport):
    """A rich Table with one row per converted layer."""
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    how = [layer.how.replace("least-squares fit", "fit").replace("identity probe", "probe").replace("peft formula", "peft")
           for layer in report.layers]
    # A column that says the same for every layer moves to the caption: module names and numbers then fit an
    # 80-column terminal whole. Whatever still does not fit folds the names, never the numbers.
    show_how = len(set(how)) > 1
    show_bias = any(layer.bias_changed for layer in report.layers)
    caption = ("energy: kept fraction of ||ΔW||²; ΔW err: ||ΔW - BA|| / ||ΔW||; ΔW from peft's formula (peft) or the "
               "identity probe (probe), exact and both checked on random inputs, or a least-squares fit (fit, "
               "approximate): " + ("column how" if show_how else f"{how[0] if how else '-'} for every layer")
               + ("" if show_bias else "; no bias changed"))
    # names come from untrusted files: never let them be read as rich markup
    table = Table(title=escape(f"{report.source_adapter} -> LoRA ({report.rank_spec})"), caption=caption)
    table.add_column("module", overflow="fold")
    for header in ("rank", "energy", "ΔW err", "‖ΔW‖"):
        table.add_column(header, justify="right", no_wrap=True)
    if show_bias:
        table.add_column("bias", justify="center", no_wrap=True)
    if show_how:
        table.add_column("how", justify="center", no_wrap=True)
    for layer, layer_how in zip(report.layers, how):
        cells = [Text(layer.module), str(layer.rank), f"{layer.energy_kept:.4f}", f"{layer.delta_relative_error:.2e}",
                 f"{layer.delta_norm:.3g}"]
        cells += ["changed" if layer.bias_changed else "-"] if show_bias else []
        cells += [layer_how] if show_how else []
        table.add_row(*cells)
    return table
