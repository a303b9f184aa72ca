"""Greedy generation: for prompt-learning methods the cached decoding must equal decoding without a cache
(peft 0.21's own generate re-injects the virtual tokens at every step under transformers 5)."""

import pytest
import torch

from peftbench.evaluation.generation import generate_greedy


def _greedy_without_cache(model, tokenizer, prompts, steps):
    """The reference: recompute the whole sequence through the PeftModel's forward at every step."""
    encoded = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    new = []
    with torch.inference_mode():
        for _ in range(steps):
            token = model(input_ids=ids, attention_mask=mask).logits[:, -1].argmax(-1, keepdim=True)
            new.append(token)
            ids, mask = torch.cat([ids, token], 1), torch.cat([mask, torch.ones_like(token)], 1)
    return torch.cat(new, 1)


@pytest.mark.parametrize("method", ["prompt_tuning", "prefix_tuning", "lora"])
def test_cached_greedy_generation_matches_decoding_without_cache(tiny_model_dir, method):
    from peft import LoraConfig, PrefixTuningConfig, PromptTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    config = {
        "prompt_tuning": PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=5),
        "prefix_tuning": PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=5),
        "lora": LoraConfig(task_type="CAUSAL_LM", r=4, init_lora_weights=False),
    }[method]
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), config).eval()
    if method == "prompt_tuning":  # random virtual tokens, large enough to change what the model says
        model.prompt_encoder["default"].embedding.weight.data.normal_(0, 1.0)
    prompts = ["Ava has 4 apples.", "A much longer prompt: Ben buys 26 more apples and then sells 3."]
    steps = 6
    # min_new_tokens keeps EOS from ending a row early, so the two decodings compare token for token
    completions = generate_greedy(
        model, tokenizer, prompts, batch_size=2, max_prompt_length=64,
        generation_kwargs={"max_new_tokens": steps, "min_new_tokens": steps} if method == "lora" else {"max_new_tokens": steps},
    )
    reference = _greedy_without_cache(model, tokenizer, prompts, steps)
    expected = tokenizer.batch_decode(reference, skip_special_tokens=True)
    # rows that hit EOS stop early in generate_greedy; compare up to the first EOS
    eos = tokenizer.eos_token_id
    for row, text in enumerate(completions):
        ids = reference[row].tolist()
        cut = ids.index(eos) + 1 if eos in ids else len(ids)
        assert text == tokenizer.decode(ids[:cut], skip_special_tokens=True), (method, row, expected[row])


def test_cpu_generation_uses_a_static_cache_unless_told_otherwise(tiny_model_dir):
    from transformers import AutoTokenizer

    from peftbench.evaluation.generation import generation_config_for

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert generation_config_for(10, {"max_new_tokens": 5}, tokenizer, "cpu").cache_implementation == "static"
    assert generation_config_for(10, {"max_new_tokens": 5}, tokenizer, "cuda").cache_implementation is None
    dynamic = {"max_new_tokens": 5, "cache_implementation": "dynamic"}
    assert generation_config_for(10, dynamic, tokenizer, "cpu").cache_implementation == "dynamic"
