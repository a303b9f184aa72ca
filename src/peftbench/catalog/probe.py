"""Trying what one PEFT method can do, on small models built in memory.

Every capability of catalog/capabilities.py is established by doing it with peft's own API on the installed
version: the method's default config (the peft config class with no arguments, plus the few arguments a
method cannot do without, `REQUIRED_ARGUMENTS`), adapters moved away from their identity init by a few
training steps, outputs compared by relative logits error (conversion/fidelity.py). Nothing is read from
the classes that can be tried instead.

Models: a one-layer cut of the shipped tiny Llama's architecture (assets/tiny-math-llama) for everything
whole-model, and a torch module holding one layer of each type for the targetable layer types.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib.util
import inspect
import re
import tempfile
from pathlib import Path

import torch
from torch import nn

from peftbench.catalog.capabilities import (
    LAYER_TYPES,
    NO,
    NOT_TRIED,
    QUANTIZATION_BACKENDS,
    YES,
    Finding,
)

# Outputs "equal" after merging, reloading or swapping: float32 round-off through the model is ~1e-7.
SAME_OUTPUTS_TOLERANCE = 1e-4
# An adapter must move the logits by this much (relative) for an equality check to tell anything.
MIN_ADAPTER_EFFECT = 1e-3
TRAIN_STEPS = 3
TRAIN_LR = 0.02

# The arguments without which a method's config cannot be built or applied at all; everything else is
# the config class's default. Prompt-learning methods need a task type (they wrap the model for it).
REQUIRED_ARGUMENTS = {
    "ADALORA": {"total_step": 10},
    "PROMPT_TUNING": {"num_virtual_tokens": 4},
    "MULTITASK_PROMPT_TUNING": {"num_virtual_tokens": 4, "num_tasks": 1},
    "P_TUNING": {"num_virtual_tokens": 4, "encoder_hidden_size": 32},
    "PREFIX_TUNING": {"num_virtual_tokens": 4},
    "CPT": {"cpt_token_ids": [0, 1, 2], "cpt_mask": [1, 1, 1], "cpt_tokens_type_mask": [1, 2, 3]},
    "CARTRIDGE": {"num_virtual_tokens": 4},
    "ADAPTION_PROMPT": {"adapter_len": 4, "adapter_layers": 1},
    "POLY": {"n_tasks": 1, "task_type": "CAUSAL_LM"},  # only the task-type models pass task_ids on
    "TRAINABLE_TOKENS": {"token_indices": [0, 1, 2]},
}
# What a method needs besides `target_modules` to adapt one layer of a module peft has no defaults for.
LAYER_ARGUMENTS = {"IA3": {"feedforward_modules": []}}


def first_line(error: BaseException) -> str:
    """The error's type and the first line of its message: how a crashed method is listed."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".strip().rstrip(":")


def _short(error: BaseException, most: int = 160) -> str:
    """The error in a few words: its type and message on one line (some messages span lines), cut."""
    line = f"{type(error).__name__}: {' '.join(str(error).split())}".rstrip(": ")
    return line if len(line) <= most else line[: most - 1] + "…"


# ---------------------------------------------------------------------------------------------- the method


def method_info(peft_type: str) -> dict:
    """What peft itself says about the method: its config class, category, one-line description and paper link,
    from the installed classes' docstrings."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING

    config_class = PEFT_TYPE_TO_CONFIG_MAPPING[peft_type]
    tuner_class = PEFT_TYPE_TO_TUNER_MAPPING.get(peft_type)
    docs = [inspect.getdoc(cls) or "" for cls in (tuner_class, config_class) if cls is not None]
    return {
        "peft_type": peft_type,
        "config_class": config_class.__name__,
        "category": "prompt learning" if _is_prompt_learning(config_class) else "adapter",
        "description": next((_first_sentence(doc) for doc in docs if _describes(doc)), ""),
        "paper": next((link for doc in docs for link in _links(doc)), None),
    }


def _is_prompt_learning(config_class) -> bool:
    from peft.config import PromptLearningConfig

    return issubclass(config_class, PromptLearningConfig)


def _describes(doc: str) -> bool:
    """A docstring whose first sentence says what the method is (not the dataclass's generated signature)."""
    return bool(doc) and not re.match(r"^\w+Config\(", doc)


def _first_sentence(doc: str) -> str:
    paragraph = " ".join(doc.split("\n\n")[0].split())
    paragraph = re.sub(r"\[`~?(?:[\w.]+\.)?(\w+)`\]|:class:`~?(?:[\w.]+\.)?(\w+)`", lambda m: m.group(1) or m.group(2), paragraph)
    match = re.match(r"(.+?\.)(\s|$)", paragraph)
    return (match.group(1) if match else paragraph)[:300]


def _links(doc: str) -> list[str]:
    return [link.rstrip(".,;)'\"`>") for link in re.findall(r"https?://[^\s\]\"'<>]+", doc)
            if "github.com" not in link]


def required_arguments(peft_type: str) -> dict:
    """The arguments the method's config cannot do without (the rest are the class's defaults)."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    arguments = dict(REQUIRED_ARGUMENTS.get(peft_type, {}))
    if _is_prompt_learning(PEFT_TYPE_TO_CONFIG_MAPPING[peft_type]):
        arguments["task_type"] = "CAUSAL_LM"
    return arguments


def default_config(peft_type: str, **overrides):
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    return PEFT_TYPE_TO_CONFIG_MAPPING[peft_type](**{**required_arguments(peft_type), **overrides})


# ------------------------------------------------------------------------------------------------ models


class _TinyLlama:
    """A one-layer cut of the shipped tiny Llama's architecture, built once per process with seeded weights; each
    probe gets a fresh copy. Its hidden width stays the shipped model's (256), which every method's default block
    and vector sizes divide (VB-LoRA's 256, C3A's); one layer, a square MLP and a small vocabulary keep the
    SVD-based methods' setup fast."""

    model: nn.Module | None = None

    @classmethod
    def fresh(cls) -> nn.Module:
        if cls.model is None:
            from transformers import AutoConfig, AutoModelForCausalLM

            from peftbench.tasks.math_tiny import shipped_model_path

            config = AutoConfig.from_pretrained(str(shipped_model_path()))
            # X-LoRA refuses a model that caches keys and values; no probe generates, so none needs the cache
            config.update({"num_hidden_layers": 1, "intermediate_size": 256, "vocab_size": 128, "use_cache": False})
            torch.manual_seed(0)
            cls.model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
        return copy.deepcopy(cls.model)


class LayerZoo(nn.Module):
    """One layer of each targetable type, each on its own branch, so that a method can target exactly one."""

    WIDTH = 64

    def __init__(self) -> None:
        super().__init__()
        width = self.WIDTH
        self.embedding = nn.Embedding(32, width)
        self.linear = nn.Linear(width, width)
        self.conv1d = nn.Conv1d(width, width, 3, padding=1)
        self.conv2d = nn.Conv2d(width, width, 3, padding=1)
        self.conv3d = nn.Conv3d(width, width, 3, padding=1)
        self.attention = nn.MultiheadAttention(width, 4, batch_first=True)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        hidden = self.embedding(input_ids)  # (batch, length, width)
        channels = hidden.transpose(1, 2)
        branches = [
            self.linear(hidden).mean(1),
            self.conv1d(channels).mean(-1),
            # spatial sizes of at least the kernel's: some methods unfold the input by kernel patches
            self.conv2d(channels[..., None].expand(-1, -1, -1, 3)).mean((-1, -2)),
            self.conv3d(channels[..., None, None].expand(-1, -1, -1, 3, 3)).mean((-1, -2, -3)),
            self.attention(hidden, hidden, hidden, need_weights=False)[0].mean(1),
        ]
        return torch.cat(branches, dim=-1)


# The zoo's module per layer type.
ZOO_MODULES = dict(zip(LAYER_TYPES, ("linear", "conv1d", "conv2d", "conv3d", "embedding", "attention")))


def _input_ids(vocab_size: int, seed: int, batch: int = 2, length: int = 8) -> torch.Tensor:
    """Seeded random token ids, each row starting with the tokens that trainable tokens train (REQUIRED_ARGUMENTS),
    so that its adapter sees them."""
    input_ids = torch.randint(0, vocab_size, (batch, length), generator=torch.Generator().manual_seed(seed))
    trained_tokens = torch.tensor(REQUIRED_ARGUMENTS["TRAINABLE_TOKENS"]["token_indices"])
    input_ids[:, : len(trained_tokens)] = trained_tokens
    return input_ids


# Methods whose forward needs the task of each row (Poly's router, multitask prompt tuning's prompts).
TASK_ID_TYPES = {"POLY", "MULTITASK_PROMPT_TUNING"}


def _task_inputs(model: nn.Module, input_ids: torch.Tensor) -> dict:
    """`task_ids` (task 0 for every row) when the model's active adapter needs them, else nothing."""
    configs = getattr(model, "peft_config", None)
    active = getattr(model, "active_adapter", None)
    active = active[0] if isinstance(active, list) else active  # peft's mixed model: a list of active adapters
    config = configs.get(active) if isinstance(configs, dict) else None
    peft_type = str(getattr(getattr(config, "peft_type", None), "value", ""))
    return {"task_ids": torch.zeros(len(input_ids), dtype=torch.long)} if peft_type in TASK_ID_TYPES else {}


def _logits(model: nn.Module, input_ids: torch.Tensor, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        output = model(input_ids=input_ids, **_task_inputs(model, input_ids), **kwargs)
    logits = output if isinstance(output, torch.Tensor) else output.logits
    # prompt learning prepends virtual tokens: compare the positions of the real input
    return logits[:, -input_ids.shape[1]:].to(torch.float64)


def _relative_error(candidate: torch.Tensor, reference: torch.Tensor) -> float:
    from peftbench.conversion.fidelity import logits_relative_error

    return logits_relative_error(candidate, reference)


def _train(model: nn.Module, input_ids: torch.Tensor, steps: int = TRAIN_STEPS) -> bool:
    """A few Adam steps on a next-token loss (the zoo: on its outputs' norm); whether any gradient reached a
    trainable parameter."""
    model.train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=TRAIN_LR)
    reached = False
    for _ in range(steps):
        optimizer.zero_grad()
        output = model(input_ids=input_ids, **_task_inputs(model, input_ids))
        if isinstance(output, torch.Tensor):
            loss = output.pow(2).mean()
        else:
            logits = output.logits[:, -input_ids.shape[1]:]
            loss = nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), input_ids[:, 1:].flatten())
        loss.backward()
        reached = reached or any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in parameters)
        optimizer.step()
    model.eval()
    return reached


# ------------------------------------------------------------------------------------------------- probes


# How each whole-model capability is tried (shown beside every finding).
HOW = {
    "trains": f"{TRAIN_STEPS} Adam steps on the tiny Llama; gradients of the trainable parameters checked",
    "save-reload": "save_pretrained, PeftModel.from_pretrained on a fresh base, logits compared",
    "merge": (f"merge_adapter() on the trained tiny Llama keeps the outputs within {SAME_OUTPUTS_TOLERANCE:g} "
              "relative logits error; unmerge_adapter() then tried"),
    "multi-adapter": "add_adapter('second'), set_adapter between the two; outputs compared",
    "mixed-batch": "one forward with adapter_names=['default', 'second', '__base__'] rows vs each adapter alone",
    "weighted-combination": "add_weighted_adapter(['default', 'second'], [0.5, 0.5]), the combination made active",
    "hot-swap": "peft.utils.hotswap.hotswap_adapter of a saved second adapter into the first; outputs vs the second",
    "convert-lora": "peftbench's conversion at full rank; the LoRA loaded by plain peft, logits vs the original adapter",
    "mix-methods": "get_peft_model(mixed=True) trained, add_adapter('lora', LoraConfig), set_adapter(both); logits vs "
                   "each alone",
    "modules-to-save": "the config with modules_to_save=['lm_head'], trained; the lm_head copy's gradients, then "
                       "save_pretrained and PeftModel.from_pretrained",
}


class _Setup:
    """The method on the tiny Llama with two trained adapters, 'default' and 'second'."""

    def __init__(self, peft_type: str) -> None:
        from peft import get_peft_model

        self.peft_type = peft_type
        self.base = _TinyLlama.fresh()
        self.input_ids = _input_ids(self.base.config.vocab_size, seed=0)
        self.base_logits = _logits(self.base, self.input_ids)
        self.model = get_peft_model(copy.deepcopy(self.base), default_config(peft_type))
        self.trains = _train(self.model, self.input_ids)
        self.logits = _logits(self.model, self.input_ids)
        self.effect = _relative_error(self.logits, self.base_logits)
        self.second_logits = None
        self.second_error: BaseException | None = None

    def add_second(self):
        """A second trained adapter beside 'default' (once); its logits, or the error that prevented it."""
        if self.second_logits is None and self.second_error is None:
            try:
                self.model.add_adapter("second", default_config(self.peft_type))
                self.model.set_adapter("second")
                _train(self.model, _input_ids(self.base.config.vocab_size, seed=1))
                self.second_logits = _logits(self.model, self.input_ids)
            except Exception as error:  # noqa: BLE001 - peft's refusal is the finding
                self.second_error = error
            finally:
                try:
                    self.model.set_adapter("default")
                except Exception:  # noqa: BLE001 - no second adapter: default stays active
                    pass
        if self.second_error is not None:
            raise self.second_error
        return self.second_logits


def _equal(candidate, reference, what: str, how: str) -> Finding:
    error = _relative_error(candidate, reference)
    if error <= SAME_OUTPUTS_TOLERANCE:
        return Finding(YES, f"{what}: relative logits error {error:.1e}", how)
    return Finding(NO, f"{what}: relative logits error {error:.1e} > {SAME_OUTPUTS_TOLERANCE:g}", how)


def _probe_trains(setup: _Setup) -> Finding:
    how = HOW["trains"]
    if not setup.trains:
        return Finding(NO, "no gradient reached a trainable parameter", how)
    return Finding(YES, f"outputs moved {setup.effect:.1e} (relative logits)", how)


def _needs_effect(setup: _Setup) -> Finding | None:
    if setup.effect < MIN_ADAPTER_EFFECT:
        return Finding(NOT_TRIED, f"the trained adapter moves the logits only {setup.effect:.1e}: an equality "
                                  "check would tell nothing", "")
    return None


def _needs_two_distinct(setup: _Setup, second: torch.Tensor) -> Finding | None:
    """Not tried when the two adapters (or an adapter and the base) give the same outputs: a check of which one
    served a row would pass whichever did."""
    # on the first row, the one the mixed batch repeats (the error measures take the max over rows)
    first, second, base = setup.logits[:1], second[:1], setup.base_logits[:1]
    apart = min(_relative_error(second, first), _relative_error(second, base), _relative_error(first, base))
    if apart < MIN_ADAPTER_EFFECT:
        return Finding(NOT_TRIED, f"the two adapters and the base differ by only {apart:.1e} (relative logits): "
                                  "the check could not tell them apart", "")
    return None


def _probe_save_reload(setup: _Setup) -> Finding:
    from peft import PeftModel

    how = HOW["save-reload"]
    with tempfile.TemporaryDirectory(prefix="peftbench-probe-") as folder:
        setup.model.save_pretrained(folder, selected_adapters=["default"])
        reloaded = PeftModel.from_pretrained(copy.deepcopy(setup.base), folder).eval()
        return _equal(_logits(reloaded, setup.input_ids), setup.logits, "reloaded vs trained", how)


def _probe_merge(setup: _Setup) -> Finding:
    how = HOW["merge"]
    skip = _needs_effect(setup)
    if skip:
        return skip
    model = copy.deepcopy(setup.model)
    if not hasattr(model.base_model, "merge_adapter"):
        return Finding(NO, f"{type(model.base_model).__name__} has no merge_adapter", "read from peft's class")
    model.merge_adapter()
    merged = _equal(_logits(model, setup.input_ids), setup.logits, "merged vs unmerged", how)
    if merged.status != YES:
        return merged
    # unmerging is part of the finding's reason, not of the verdict: merge_and_unload never unmerges
    try:
        model.unmerge_adapter()
        restored = _equal(_logits(model, setup.input_ids), setup.logits, "unmerged vs before", how)
        unmerge = restored.why if restored.status == YES else f"but unmerging does not restore: {restored.why}"
    except Exception as error:  # noqa: BLE001 - peft's refusal is part of the finding
        unmerge = f"but unmerge_adapter() fails: {_short(error, 100)}"
    return Finding(YES, f"{merged.why}; {unmerge}", how)


def _probe_multi_adapter(setup: _Setup) -> Finding:
    how = HOW["multi-adapter"]
    second = setup.add_second()
    if _relative_error(second, setup.logits) < MIN_ADAPTER_EFFECT:
        return Finding(NO, "switching to the second adapter did not change the outputs", how)
    setup.model.set_adapter("default")
    return _equal(_logits(setup.model, setup.input_ids), setup.logits, "back to the first adapter", how)


def _probe_mixed_batch(setup: _Setup) -> Finding:
    how = HOW["mixed-batch"]
    second = setup.add_second()
    skip = _needs_two_distinct(setup, second)
    if skip:
        return skip
    input_ids = torch.cat([setup.input_ids[:1]] * 3)
    mixed = _logits(setup.model, input_ids, adapter_names=["default", "second", "__base__"])
    for row, (reference, what) in enumerate(
        [(setup.logits[:1], "the first adapter's row differs from that adapter alone"),
         (second[:1], "the second adapter's row differs from that adapter alone"),
         (setup.base_logits[:1], "the base model's row differs from the base model")]
    ):
        finding = _equal(mixed[row : row + 1], reference, what, how)
        if finding.status != YES:
            return finding
    return Finding(YES, "each row equals its adapter alone", how)


def _probe_weighted_combination(setup: _Setup) -> Finding:
    how = HOW["weighted-combination"]
    setup.add_second()
    combine = getattr(setup.model.base_model, "add_weighted_adapter", None)
    if combine is None:
        return Finding(NO, f"{type(setup.model.base_model).__name__} has no add_weighted_adapter",
                       "read from peft's class")
    arguments = {}
    if "combination_type" in inspect.signature(combine).parameters:
        arguments["combination_type"] = "linear"  # same-rank adapters; the default (svd) also exists
    combine(["default", "second"], [0.5, 0.5], "combined", **arguments)
    setup.model.set_adapter("combined")
    try:
        combined = _logits(setup.model, setup.input_ids)
    finally:
        setup.model.set_adapter("default")
    if not torch.isfinite(combined).all():
        return Finding(NO, "the combined adapter gives non-finite outputs", how)
    if _relative_error(combined, setup.base_logits) < MIN_ADAPTER_EFFECT:
        return Finding(NO, "the combined adapter does not change the outputs", how)
    return Finding(YES, "a combined adapter was built and changes the outputs", how)


def _probe_hot_swap(setup: _Setup) -> Finding:
    """Swaps the second adapter's weights into 'default' in place: the last probe of a setup."""
    from peft.utils.hotswap import hotswap_adapter

    how = HOW["hot-swap"]
    second = setup.add_second()
    skip = _needs_two_distinct(setup, second)
    if skip:
        return skip
    with tempfile.TemporaryDirectory(prefix="peftbench-probe-") as folder:
        setup.model.save_pretrained(folder, selected_adapters=["second"])
        hotswap_adapter(setup.model, str(Path(folder) / "second"), adapter_name="default")
    return _equal(_logits(setup.model, setup.input_ids), second, "swapped-in vs second adapter", how)


def _probe_convert(setup: _Setup) -> Finding:
    from peftbench.conversion.convert import convert_peft_model, save_converted
    from peftbench.conversion.lowrank import RankSpec
    from peftbench.conversion.refusals import ConversionRefused
    from peftbench.conversion.source import load_adapter, snapshot_parameters

    how = HOW["convert-lora"]
    skip = _needs_effect(setup)
    if skip:
        return skip
    model = copy.deepcopy(setup.model)
    try:
        converted = convert_peft_model(model, snapshot_parameters(setup.base), RankSpec())
    except ConversionRefused as refusal:
        return Finding(NO, _short(refusal), how)
    with tempfile.TemporaryDirectory(prefix="peftbench-probe-") as folder:
        save_converted(converted, Path(folder) / "lora")
        lora = load_adapter(copy.deepcopy(setup.base), Path(folder) / "lora")
        error = _relative_error(_logits(lora, setup.input_ids), setup.logits)
    fidelity = f"relative logits error {error:.1e}, LoRA rank {converted.report.lora_rank}"
    if error <= SAME_OUTPUTS_TOLERANCE:
        return Finding(YES, fidelity, how)
    return Finding(NO, f"{fidelity} > {SAME_OUTPUTS_TOLERANCE:g}", how)


def _probe_mix_methods(setup: _Setup) -> Finding:
    """The method and a LoRA in one PeftMixedModel, both active: the stack must differ from each alone."""
    from peft import LoraConfig, get_peft_model

    how = HOW["mix-methods"]
    model = get_peft_model(copy.deepcopy(setup.base), default_config(setup.peft_type), mixed=True)
    _train(model, setup.input_ids)
    alone = _logits(model, setup.input_ids)
    model.add_adapter("lora", LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.set_adapter("lora")
    lora_alone = _logits(model, setup.input_ids)
    model.set_adapter(["default", "lora"])
    both = _logits(model, setup.input_ids)
    apart = min(_relative_error(both, alone), _relative_error(both, lora_alone))
    if not torch.isfinite(both).all() or apart < MIN_ADAPTER_EFFECT:
        return Finding(NO, f"with both active the outputs equal one adapter alone (apart {apart:.1e})", how)
    return Finding(YES, f"both active: outputs differ from either alone by >= {apart:.1e}", how)


def _probe_modules_to_save(setup: _Setup) -> Finding:
    """modules_to_save=['lm_head']: a trainable full copy that reaches the gradients and the saved adapter."""
    from peft import PeftModel, get_peft_model

    how = HOW["modules-to-save"]
    config = default_config(setup.peft_type)
    if not hasattr(config, "modules_to_save"):
        return Finding(NO, f"{type(config).__name__} has no modules_to_save", "read from peft's class")
    config.modules_to_save = ["lm_head"]
    model = get_peft_model(copy.deepcopy(setup.base), config)
    copies = [p for name, p in model.named_parameters() if "modules_to_save" in name and "lm_head" in name]
    if not copies or not all(p.requires_grad for p in copies):
        return Finding(NO, "no trainable lm_head copy was made", how)
    before = [p.detach().clone() for p in copies]
    _train(model, setup.input_ids)
    if all(torch.equal(p, b) for p, b in zip(copies, before)):
        return Finding(NO, "training did not change the lm_head copy", how)
    trained = _logits(model, setup.input_ids)
    with tempfile.TemporaryDirectory(prefix="peftbench-probe-") as folder:
        model.save_pretrained(folder)
        reloaded = PeftModel.from_pretrained(copy.deepcopy(setup.base), folder).eval()
        return _equal(_logits(reloaded, setup.input_ids), trained, "lm_head copy trained, reloaded vs trained", how)


MODEL_PROBES = {
    "trains": _probe_trains,
    "save-reload": _probe_save_reload,
    "merge": _probe_merge,
    "multi-adapter": _probe_multi_adapter,
    "mixed-batch": _probe_mixed_batch,
    "weighted-combination": _probe_weighted_combination,
    "convert-lora": _probe_convert,
    "mix-methods": _probe_mix_methods,
    "modules-to-save": _probe_modules_to_save,
    "hot-swap": _probe_hot_swap,  # last: it changes the setup's 'default' adapter
}


def _probe_layer(peft_type: str, layer_type: str) -> Finding:
    from peft import get_peft_model

    how = f"the default config targeting only a {layer_type} layer of a small torch model; one training step"
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    module = ZOO_MODULES[layer_type]
    config_class = PEFT_TYPE_TO_CONFIG_MAPPING[peft_type]
    if "target_modules" not in {field.name for field in dataclasses.fields(config_class)}:
        return Finding(NO, f"{config_class.__name__} has no target_modules: it adapts no chosen layer",
                       "read from peft's config class")
    if peft_type in TASK_ID_TYPES:
        return Finding(NOT_TRIED, "its forward needs task_ids, which peft passes on only to models of a task type "
                                  "(a plain torch module has none)", how)
    torch.manual_seed(0)
    try:
        config = default_config(peft_type, target_modules=[module], **LAYER_ARGUMENTS.get(peft_type, {}))
        model = get_peft_model(LayerZoo(), config)
    except Exception as error:  # noqa: BLE001 - peft's refusal is the finding
        return Finding(NO, _short(error), how)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    if not any(f".{module}." in f".{name}" for name in trainable):
        return Finding(NO, f"no trainable parameter in the {layer_type} layer", how)
    try:
        reached = _train(model, _input_ids(32, seed=0), steps=1)
    except Exception as error:  # noqa: BLE001
        return Finding(NO, _short(error), how)
    return Finding(YES, "", how) if reached else Finding(NO, "no gradient reached the adapter", how)


def _torchao_int8():
    from torchao.quantization import Int8WeightOnlyConfig
    from transformers import TorchAoConfig

    return TorchAoConfig(Int8WeightOnlyConfig())


# The backends the probe can try on the CPU: their transformers quantization config, and in words. The others'
# kernels need an accelerator.
CPU_QUANTIZERS = {"torchao": (_torchao_int8, "torchao int8 weight-only")}


def quantized_tiny_llama(backend: str) -> nn.Module:
    """The probe's tiny Llama loaded quantized, as a user loads a quantized base: from_pretrained with the backend's
    quantization config (peft reads what it needs to merge from the model's hf_quantizer); loaded once per
    process, each probe gets a fresh copy."""
    return copy.deepcopy(_quantized_tiny_llama(backend))


@functools.cache
def _quantized_tiny_llama(backend: str) -> nn.Module:
    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as folder:
        _TinyLlama.fresh().save_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, quantization_config=CPU_QUANTIZERS[backend][0](),
                                                     device_map="cpu")
    return model.eval()


def _probe_quantized(peft_type: str, backend: str) -> Finding:
    package = QUANTIZATION_BACKENDS[backend]
    if importlib.util.find_spec(package) is None:
        return Finding(NOT_TRIED, f"backend {package} not installed", "")
    if backend not in CPU_QUANTIZERS:
        return Finding(NOT_TRIED, f"{package} is installed, but its kernels need an accelerator and the probe runs on "
                                  "the CPU", "")
    from peft import get_peft_model

    how = (f"the tiny Llama loaded with {CPU_QUANTIZERS[backend][1]} (transformers' quantization config), the "
           f"default config applied, {TRAIN_STEPS} Adam steps; gradients checked")
    try:
        base = quantized_tiny_llama(backend)
    except Exception as error:  # noqa: BLE001 - the backend itself cannot run here
        return Finding(NOT_TRIED, f"{package} could not quantize on this machine: {_short(error)}", "")
    try:
        model = get_peft_model(base, default_config(peft_type))
        reached = _train(model, _input_ids(base.config.vocab_size, seed=0))
    except Exception as error:  # noqa: BLE001 - peft's refusal is the finding
        return Finding(NO, _short(error), how)
    return Finding(YES, "", how) if reached else Finding(NO, "no gradient reached the adapter", how)


def probe_method(peft_type: str) -> dict:
    """Everything the catalog knows about one method: peft's description and a finding per capability.

    A capability that raises is a "no" with the error's first line; a method whose adapter cannot even be built
    on the tiny Llama gets that error, and its whole-model capabilities are "not tried".
    """
    import time

    started, cpu_started = time.perf_counter(), time.process_time()
    info = method_info(peft_type)
    findings: dict[str, Finding] = {}
    try:
        setup = _Setup(peft_type)
    except Exception as error:  # noqa: BLE001 - the method's own failure is what the catalog reports
        info["error"] = _short(error, 300)
        setup = None
    for name, probe in MODEL_PROBES.items():
        if setup is None:
            findings[name] = Finding(NOT_TRIED, "the adapter could not be built on the tiny Llama", "")
            continue
        try:
            findings[name] = probe(setup)
        except Exception as error:  # noqa: BLE001 - peft's refusal is the finding
            findings[name] = Finding(NO, _short(error), HOW[name])
    for layer_type in LAYER_TYPES:
        findings[f"layer:{layer_type}"] = _probe_layer(peft_type, layer_type)
    for backend in QUANTIZATION_BACKENDS:
        findings[f"quantized:{backend}"] = _probe_quantized(peft_type, backend)
    info["findings"] = {name: finding.to_json() for name, finding in findings.items()}
    info["seconds"] = round(time.perf_counter() - started, 3)
    info["cpu_seconds"] = round(time.process_time() - cpu_started, 3)  # robust to a loaded machine
    return info
