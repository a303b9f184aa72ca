"""Any peft adapter -> a plain LoRA adapter (ΔW extraction + truncated SVD), with measured fidelity."""

from peftbench.conversion.convert import ConvertedAdapter, convert_adapter_dir, convert_peft_model, save_converted
from peftbench.conversion.fidelity import ConversionFailed
from peftbench.conversion.lowrank import RankSpec, parse_rank_spec
from peftbench.conversion.refusals import ConversionRefused
from peftbench.conversion.report import ConversionReport, LayerReport
from peftbench.conversion.source import AdapterFolderError

__all__ = [
    "AdapterFolderError",
    "ConversionFailed",
    "ConversionRefused",
    "ConversionReport",
    "ConvertedAdapter",
    "LayerReport",
    "RankSpec",
    "convert_adapter_dir",
    "convert_peft_model",
    "parse_rank_spec",
    "save_converted",
]
