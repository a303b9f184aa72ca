"""Greedy generation: for prompt-learning methods the cached decoding must equal decoding without a cache
(peft 0.21's own generate re-injects the virtual tokens at every step under transformers 5)."""

import pytest
import torch

from peftbench.evaluation.generation import generate_completions


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
    completions = generate_completions(
        model, tokenizer, prompts, batch_size=2, max_prompt_length=64,
        generation_kwargs={"max_new_tokens": steps, "min_new_tokens": steps} if method == "lora" else {"max_new_tokens": steps},
    ).texts
    reference = _greedy_without_cache(model, tokenizer, prompts, steps)
    expected = tokenizer.batch_decode(reference, skip_special_tokens=True)
    # rows that hit EOS stop early in generate_completions; compare up to the first EOS
    eos = tokenizer.eos_token_id
    for row, text in enumerate(completions):
        ids = reference[row].tolist()
        cut = ids.index(eos) + 1 if eos in ids else len(ids)
        assert text == tokenizer.decode(ids[:cut], skip_special_tokens=True), (method, row, expected[row])


def test_cpu_generation_fills_one_cache_in_place_with_the_same_completions(tiny_model_dir, monkeypatch):
    """The default CPU cache (filled in place, attention over the written positions only) decodes exactly as
    transformers' dynamic and static caches do, on prompts of different lengths (left padding)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from peftbench.evaluation import generation

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=4, init_lora_weights=False)
    ).eval()
    prompts = ["Ava has 4 apples.", "A much longer prompt: Ben buys 26 more apples and then sells 3.", "Cy"]
    built, real = [], generation.filled_in_place_cache

    def recording(*args):
        built.append(real(*args))
        return built[-1]

    monkeypatch.setattr(generation, "filled_in_place_cache", recording)

    def complete(**kwargs):
        return generate_completions(model, tokenizer, prompts, batch_size=3, max_prompt_length=64,
                                    generation_kwargs={"max_new_tokens": 12, "min_new_tokens": 12, **kwargs}).texts

    default = complete()
    assert len(built) == 1 and built[0] is not None  # the default took the in-place cache
    layer = built[0].layers[0]
    assert layer.keys.shape[2] == layer.capacity - 1  # the prompt and every new token but the last, fed back
    assert default == complete(cache_implementation="dynamic") == complete(cache_implementation="static")
    assert len(built) == 1  # a cache named in generation_kwargs is transformers' own


def test_in_place_cache_only_where_every_layer_attends_to_all_positions():
    from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, T5Config,
                              T5ForConditionalGeneration)

    from peftbench.evaluation.generation import filled_in_place_cache

    small = {"vocab_size": 32, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
             "num_attention_heads": 2, "num_key_value_heads": 2}
    assert filled_in_place_cache(LlamaForCausalLM(LlamaConfig(**small)), 8) is not None
    # sliding-window layers and encoder-decoders keep transformers' own cache
    assert filled_in_place_cache(MistralForCausalLM(MistralConfig(**small, sliding_window=4)), 8) is None
    t5 = T5Config(vocab_size=32, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2)
    assert filled_in_place_cache(T5ForConditionalGeneration(t5), 8) is None
