"""What the catalog says about a method: the capabilities it tries, and one finding per capability.

The capability names are the catalog's vocabulary: the probe fills them, the filters (`--can`, `--layer`,
`--quantized`), `recommend --must` and the HTML report read them. A finding is "yes", "no" or "not tried",
with the reason in a few words and how it was established.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

YES, NO, NOT_TRIED = "yes", "no", "not tried"
STATUSES = (YES, NO, NOT_TRIED)


@dataclass(frozen=True)
class Capability:
    name: str  # what filters and JSON use
    label: str  # a column heading
    question: str  # what "yes" means
    short: str = ""  # a narrow terminal column's heading

    @property
    def heading(self) -> str:
        return self.short or self.label


# Tried on the tiny Llama (probe.py), in this order.
MODEL_CAPABILITIES = (
    Capability("trains", "trains", "a training step's gradients reach the adapter's parameters", "train"),
    Capability("save-reload", "save/reload", "save_pretrained then PeftModel.from_pretrained gives the same outputs",
               "save"),
    Capability("merge", "merge", "merging the adapter into the base weights keeps the outputs (unmerging: see why)"),
    Capability("multi-adapter", "several adapters", "a second adapter can be added and switched to", "multi"),
    Capability("mixed-batch", "mixed batch", "one batch serves several adapters at once (adapter_names=...)", "mixed"),
    Capability("weighted-combination", "weighted combination", "add_weighted_adapter builds a combined adapter",
               "weigh"),
    Capability("hot-swap", "hot-swap", "peft.utils.hotswap replaces the loaded adapter's weights in place", "swap"),
    Capability("convert-lora", "convert to LoRA", "peftbench's conversion reproduces it as a plain LoRA", "→LoRA"),
    Capability("mix-methods", "mix with LoRA", "peft's mixed model holds it beside a LoRA, both active at once", "+LoRA"),
    Capability("modules-to-save", "modules_to_save", "a full copy of another module (lm_head) trains and saves with it",
               "aux"),
)
# Tried on a small torch model holding one layer of each type (probe.py): "layer:<type>".
LAYER_TYPES = ("linear", "conv1d", "conv2d", "conv3d", "embedding", "multihead-attention")
# Quantized bases, by the backend's package that must be installed to try them: "quantized:<name>".
QUANTIZATION_BACKENDS = {
    "bnb-8bit": "bitsandbytes",
    "bnb-4bit": "bitsandbytes",
    "hqq": "hqq",
    "torchao": "torchao",
    "gptq": "gptqmodel",
    "awq": "awq",
    "eetq": "eetq",
    "aqlm": "aqlm",
}

LAYER_SHORT = {"linear": "lin", "embedding": "emb", "multihead-attention": "mha"}
LAYER_CAPABILITIES = tuple(
    Capability(f"layer:{layer}", layer, f"the method can target a {layer} layer and train it",
               LAYER_SHORT.get(layer, layer))
    for layer in LAYER_TYPES
)
QUANTIZED_CAPABILITIES = tuple(
    Capability(f"quantized:{name}", name, f"the method loads and trains on a {name} quantized base")
    for name in QUANTIZATION_BACKENDS
)
ALL_CAPABILITIES = MODEL_CAPABILITIES + LAYER_CAPABILITIES + QUANTIZED_CAPABILITIES
CAPABILITY_NAMES = tuple(capability.name for capability in ALL_CAPABILITIES)


@dataclass(frozen=True)
class Finding:
    status: str  # YES, NO or NOT_TRIED
    why: str = ""  # a few words: the measured value, the error's first line, what was missing
    how: str = ""  # how it was established

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Finding:
        return cls(status=data["status"], why=data.get("why", ""), how=data.get("how", ""))

    def __str__(self) -> str:
        return f"{self.status} ({self.why})" if self.why else self.status


def capability_name(text: str) -> str:
    """A user's capability name ('merge', 'mixed-batch', 'conv2d', '4bit') as the catalog's name; ValueError
    naming the valid ones otherwise."""
    cleaned = text.strip().lower().replace("_", "-")
    if cleaned in CAPABILITY_NAMES:
        return cleaned
    group, _, short = cleaned.rpartition(":")  # "quantized:4bit" (from --quantized 4bit), "conv2d"
    matches = [name for name in CAPABILITY_NAMES if (not group or name.startswith(f"{group}:"))
               and (name.split(":")[-1] == short or name.endswith(f"-{short}"))]
    if len(matches) == 1:
        return matches[0]
    valid = ", ".join(name.split(":")[-1] for name in CAPABILITY_NAMES)
    raise ValueError(f"unknown capability {text!r}; valid: {valid}")
