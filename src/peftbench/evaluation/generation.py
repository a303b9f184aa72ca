"""Batched greedy generation with a KV cache, for any causal LM or PeftModel (prompt-learning methods too)."""

from __future__ import annotations

from typing import Any

import torch
from tqdm.auto import tqdm


def generation_config_for(prompt_length: int, generation_kwargs: dict[str, Any], tokenizer):
    """A greedy GenerationConfig. Like the PEFT suite: when both max_length and max_new_tokens are given,
    the smaller limit wins (transformers would otherwise ignore one of them)."""
    from transformers import GenerationConfig

    kwargs = {k: v for k, v in generation_kwargs.items() if v is not None}
    if "max_length" in kwargs and "max_new_tokens" in kwargs:
        max_new = min(kwargs.pop("max_new_tokens"), kwargs.pop("max_length") - prompt_length)
        kwargs["max_new_tokens"] = max(max_new, 1)
    kwargs.setdefault("do_sample", False)
    kwargs.setdefault("use_cache", True)
    return GenerationConfig(
        **kwargs, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )


@torch.inference_mode()
def generate_greedy(
    model, tokenizer, prompts: list[str], *, batch_size: int, generation_kwargs: dict[str, Any], max_prompt_length: int,
    desc: str = "generate",
) -> tuple[list[str], int]:
    """Complete each prompt greedily; returns the decoded completions (prompt removed) and the number of
    generated tokens. Each sequence stops at EOS, the batch stops when all sequences are done (transformers'
    generate does both); prompts are left-padded so that every completion starts at the same position."""
    device = next(model.parameters()).device
    completions: list[str] = []
    generated_tokens = 0
    was_training = model.training
    model.eval()
    batches = range(0, len(prompts), batch_size)
    for start in tqdm(batches, desc=desc, unit="batch", disable=len(batches) < 2, leave=False):
        encoded = tokenizer(
            prompts[start : start + batch_size], return_tensors="pt", padding=True, padding_side="left",
            truncation=True, max_length=max_prompt_length,
        ).to(device)
        prompt_length = encoded["input_ids"].shape[1]
        config = generation_config_for(prompt_length, generation_kwargs, tokenizer)
        output = model.generate(
            input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"], generation_config=config
        )
        new_tokens = output[:, prompt_length:]
        # tokens after the first EOS are padding
        not_eos = new_tokens != tokenizer.eos_token_id
        generated_tokens += int(torch.cumprod(not_eos.int(), dim=1).sum()) + int((~not_eos).any(dim=1).sum())
        completions += tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    model.train(was_training)
    return completions, generated_tokens
