"""Batched greedy generation with a KV cache, for any causal LM or PeftModel (prompt-learning methods too)."""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm


def generation_config_for(prompt_length: int, generation_kwargs: dict[str, Any], tokenizer, decoding: str = "greedy"):
    """The GenerationConfig of one batch (decoding: text_config.DECODINGS). "greedy" fixes greedy decoding and
    the tokenizer's EOS, and when both max_length and max_new_tokens are given the smaller limit wins (what the
    PEFT suite's comment intends). "model" is what the suite's run.py does: generation_kwargs as they are (its
    GenerationConfig gets both limits, and transformers then applies max_new_tokens) and pad_token_id = EOS, so
    generate() takes every other field from the model's generation_config (sampling and its stop tokens
    included, where the model's files ask for them)."""
    from transformers import GenerationConfig

    kwargs = {k: v for k, v in generation_kwargs.items() if v is not None}
    kwargs.setdefault("use_cache", True)
    if decoding == "model":
        return GenerationConfig(**kwargs, pad_token_id=tokenizer.eos_token_id)
    if "max_length" in kwargs and "max_new_tokens" in kwargs:
        max_new = min(kwargs.pop("max_new_tokens"), kwargs.pop("max_length") - prompt_length)
        kwargs["max_new_tokens"] = max(max_new, 1)
    kwargs.setdefault("do_sample", False)
    return GenerationConfig(**kwargs, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


def with_model_defaults(model, config):
    """`config` with the fields it leaves unset taken from the model's generation_config, as generate() fills
    them: for decoding loops that do not go through generate()."""
    import copy

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    merged = copy.deepcopy(config)
    merged.update(**base.generation_config.to_dict(), defaults_only=True)
    return merged


@dataclass
class Completions:
    """Decoded completions (prompt removed), and how many ran to the length limit without a stop token: all
    of them means the model never learned to stop (a pad token taught in EOS's place, a missing template)."""

    texts: list[str]
    at_length_limit: int


@functools.cache
def _filled_in_place_layer():
    from transformers.cache_utils import DynamicLayer  # imported when first needed: transformers is slow to import

    class FilledInPlaceLayer(DynamicLayer):
        """A layer of KV cache allocated once, for the prompt and every token to come, and filled in place;
        attention reads the positions written so far, as a view.

        transformers' dynamic cache concatenates each layer's keys and values at every token (a copy of the
        whole cache per token); its static cache writes in place but attends over its full length at every
        token, written or not. Decoding a batch on a CPU is bound by reading the cache, so this one reads only
        what exists (benchmarks/math-faithful.md, "Speed": the same completions). For greedy decoding: beam
        search reorders a cache by replacing its tensors, which this layer does not follow."""

        def __init__(self, capacity: int):
            super().__init__()
            self.capacity, self.length = capacity, 0

        def lazy_initialization(self, key_states, value_states) -> None:
            batch, heads, _, _ = key_states.shape
            self.device = key_states.device
            self.key_buffer = key_states.new_empty(batch, heads, self.capacity, key_states.shape[-1])
            self.value_buffer = value_states.new_empty(batch, heads, self.capacity, value_states.shape[-1])
            self.keys, self.values = self.key_buffer[:, :, :0], self.value_buffer[:, :, :0]
            self.is_initialized = True

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            end = self.length + key_states.shape[-2]
            if end > self.capacity:
                raise RuntimeError(f"KV cache of {self.capacity} positions asked to hold {end}")
            self.key_buffer[:, :, self.length : end].copy_(key_states)
            self.value_buffer[:, :, self.length : end].copy_(value_states)
            self.length = end
            self.keys, self.values = self.key_buffer[:, :, :end], self.value_buffer[:, :, :end]
            return self.keys, self.values

    return FilledInPlaceLayer


def filled_in_place_cache(model, capacity: int):
    """A KV cache of FilledInPlaceLayers holding `capacity` positions per row, or None where the model's own
    cache is not plain full-attention layers (sliding windows, linear attention, encoder-decoders, models that
    bring their own): transformers' default cache is used there."""
    from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    supports = getattr(base, "_supports_default_dynamic_cache", None)
    if supports is None or not supports() or base.config.is_encoder_decoder:
        return None
    layers = DynamicCache(config=base.config.get_text_config(decoder=True)).layers
    if not layers or any(type(layer) is not DynamicLayer for layer in layers):
        return None
    layer_class = _filled_in_place_layer()
    return Cache(layers=[layer_class(capacity) for _ in layers])


@torch.inference_mode()
def generate_completions(
    model, tokenizer, prompts: list[str], *, batch_size: int, generation_kwargs: dict[str, Any], max_prompt_length: int,
    decoding: str = "greedy", desc: str = "generate",
) -> Completions:
    """Complete each prompt (decoding: see generation_config_for). Each sequence stops at a stop token, the batch
    when all sequences are done (transformers' generate does both); prompts are left-padded so that every
    completion starts at the same position."""
    device = next(model.parameters()).device
    texts: list[str] = []
    at_limit = 0
    was_training = model.training
    model.eval()
    batches = range(0, len(prompts), batch_size)
    for start in tqdm(batches, desc=desc, unit="batch", disable=len(batches) < 2, leave=False):
        # cut as the PEFT suite's data.py cuts a prompt: its first max_prompt_length tokens (truncation=True would
        # keep a special token that the tokenizer appends, such as EOS, and cut the text before it instead)
        ids = tokenizer(prompts[start : start + batch_size], verbose=False)["input_ids"]
        encoded = tokenizer.pad(
            {"input_ids": [row[:max_prompt_length] for row in ids]}, return_tensors="pt", padding_side="left",
            verbose=False,
        ).to(device)
        prompt_length = encoded["input_ids"].shape[1]
        config = with_model_defaults(model, generation_config_for(prompt_length, generation_kwargs, tokenizer, decoding))
        if _is_prompt_learning(model):
            new_tokens = _decode_with_virtual_tokens(model, encoded["input_ids"], encoded["attention_mask"], config)
        else:
            output = model.generate(
                input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"], generation_config=config,
                **_cpu_cache(model, config, prompt_length, device),
            )
            new_tokens = output[:, prompt_length:]
        stopped = torch.isin(new_tokens, _stop_ids(config, new_tokens.device)).any(dim=1)
        limit = config.max_new_tokens if config.max_new_tokens is not None else config.max_length - prompt_length
        at_limit += int((~stopped & (new_tokens.shape[1] >= limit)).sum())
        texts += tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    model.train(was_training)
    return Completions(texts=texts, at_length_limit=at_limit)


def _stop_ids(config, device) -> torch.Tensor:
    """The config's stop tokens (none: a model whose generation_config names none generates to the limit)."""
    eos = config.eos_token_id
    ids = [] if eos is None else list(eos) if isinstance(eos, (list, tuple)) else [eos]
    return torch.tensor(ids, dtype=torch.long, device=device)


def _cpu_cache(model, config, prompt_length: int, device) -> dict:
    """generate's `cache` argument: on a CPU, for greedy decoding whose generation_kwargs name no cache, one filled
    in place. GPUs keep transformers' default (not measured there)."""
    greedy = (config.num_beams or 1) == 1
    if device.type != "cpu" or not config.use_cache or config.cache_implementation is not None or not greedy:
        return {}
    capacity = prompt_length + config.max_new_tokens if config.max_new_tokens else config.max_length
    if not capacity:  # no length limit given: transformers' own default applies, and its own cache
        return {}
    cache = filled_in_place_cache(model, capacity)
    return {} if cache is None else {"cache": cache}


def _is_prompt_learning(model) -> bool:
    config = getattr(model, "active_peft_config", None)
    return bool(config is not None and config.is_prompt_learning)


def _cache_of(output):
    # transformers 5 names it `cache`; reading the older `past_key_values` attribute warns there
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def _decode_with_virtual_tokens(model, input_ids, attention_mask, config):
    """Decoding for prompt-learning methods (prompt tuning, p-tuning, prefix tuning, ...), greedy or sampled as
    `config` (already holding the model's defaults) says.

    peft 0.21's generate for these methods looks for the KV cache under `past_key_values`, which
    transformers 5 passes as `cache`: it then re-injects the virtual tokens at every step and drops
    the cache, so each new token is predicted from the virtual tokens and the last token only (wrong, and
    about 15x slower: measured 457 s against 30 s for LoRA on math-tiny's 600 eval items). Here the
    PeftModel's own forward injects the virtual tokens (or the prefix) once, on the prompt, and the base
    model decodes from the cache it returns. tests/test_generation.py checks this against decoding
    without a cache.
    """
    from transformers.generation.logits_process import (
        LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper,
    )

    warpers = LogitsProcessorList()
    if config.do_sample:  # the order of generate()'s own warpers
        if config.temperature is not None and config.temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(config.temperature))
        if config.top_k:
            warpers.append(TopKLogitsWarper(config.top_k))
        if config.top_p is not None and config.top_p < 1.0:
            warpers.append(TopPLogitsWarper(config.top_p))
    stop_ids = _stop_ids(config, input_ids.device)
    batch = input_ids.shape[0]
    virtual = model.active_peft_config.num_virtual_tokens
    base = model.get_base_model()
    cache_key = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
    output = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=True)
    cache = _cache_of(output)
    mask = torch.cat([attention_mask.new_ones(batch, virtual), attention_mask], dim=1)
    done = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)
    tokens = []
    for step in range(config.max_new_tokens):
        logits = output.logits[:, -1]
        if config.do_sample:
            probs = torch.softmax(warpers(input_ids, logits.float()), dim=-1)
            next_token = torch.multinomial(probs, num_samples=1).squeeze(1)
        else:
            next_token = logits.argmax(dim=-1)
        next_token = torch.where(done, torch.full_like(next_token, config.pad_token_id), next_token)
        tokens.append(next_token)
        done |= torch.isin(next_token, stop_ids)
        if bool(done.all()) or step == config.max_new_tokens - 1:
            break
        mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=1)
        output = base(input_ids=next_token[:, None], attention_mask=mask, use_cache=True, **{cache_key: cache})
        cache = _cache_of(output)
    return torch.stack(tokens, dim=1)
