"""The text tasks' parameters (math, math-tiny, task files): prompts, tokenization, generation, data files.

Keys of the PEFT suite's MetaMathQA `default_training_params.json` plus peftbench's own; see docs/engine.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Optional

from peftbench.config import TrainConfig, param

# What the training loss covers: "sequence" (the PEFT suite's: prompt, response and the first EOS, summed and
# divided by the batch's non-padding tokens) or "completion" (the response and its EOS only, mean over them).
LOSS_ON = ("sequence", "completion")
# Training batch order: "peft" (the suite's: file order, one pass, sorted within buckets, the remainder bucket
# seen twice; and, as in the suite, the seed changes neither the order nor the adapter's initialisation) or
# "shuffled" (every epoch reshuffled with the seed, as many epochs as max_steps needs).
BATCH_ORDERS = ("peft", "shuffled")
# The padding token: "eos" (the PEFT suite's get_tokenizer: always EOS, right-padded, whatever the tokenizer
# declares) or "tokenizer" (its own pad token where it declares one, EOS otherwise). With "eos", code that builds
# an attention mask from `input_ids != pad_token_id` hides every real EOS; "tokenizer" keeps them visible. Either
# way loss_on "sequence" labels the stop position with EOS, so the model learns to stop.
PAD_TOKENS = ("eos", "tokenizer")
# Test generation: "greedy" (peftbench's: greedy decoding that stops at the tokenizer's EOS) or "model" (the PEFT
# suite's run.py: generation_kwargs plus pad_token_id = EOS, and every field they leave unset taken from the
# model's generation_config.json, which may ask for sampling and name other stop tokens).
DECODINGS = ("greedy", "model")
# dtype "float32": "float32" casts the weights to float32; "checkpoint" loads them as the checkpoint stores them (the
# PEFT suite's get_base_model passes no dtype for float32, and transformers >= 5 then loads the checkpoint's own,
# bfloat16 for Llama-3.2; the result then records the precision the weights had).
FLOAT32_LOADINGS = ("float32", "checkpoint")


@dataclass
class TextTrainConfig(TrainConfig):
    # Nested dicts merge key by key over the task's defaults.
    nested_keys: ClassVar[tuple[str, ...]] = ("optimizer_kwargs", "generation_kwargs")

    # --- keys of the PEFT suite (method_comparison/MetaMathQA/default_training_params.json) ---
    max_seq_length: int = param(768, help="training rows and prompts are cut at this many tokens")
    query_template: str = param("Question: {query} Think step by step.\nAnswer:", help="the prompt; must contain {query}")
    generation_kwargs: dict[str, Any] = param({"max_length": 800, "max_new_tokens": 300},
                                              help="transformers generate() arguments for the test generation")
    attn_implementation: Optional[str] = param(None, help="transformers attn_implementation (null: its default)")
    init_kv_cache_prefix: Optional[str] = param(None, help="prefix tuning starts from the base model's KV cache of this text")

    # --- peftbench's own ---
    train_data: Optional[str] = param(None, help="a hub dataset id or a local .json/.jsonl/.parquet/.csv file")
    valid_data: Optional[str] = param(None, help="as train_data")
    test_data: Optional[str] = param(None, help="as train_data")
    forgetting_data: Optional[str] = param(None, help="texts for the forgetting measure, as train_data")
    train_size: Optional[int] = param(None, help="training rows used (null: all)")
    valid_size: int = param(50, help="validation rows")
    test_size: Optional[int] = param(None, help="test rows (null: the whole test split)")
    forgetting_size: int = param(100, help="forgetting texts")
    forgetting_max_length: int = param(768, help="forgetting texts are cut at this many tokens")
    loss_on: str = param("sequence", help="'sequence' (the PEFT suite's loss) or 'completion' (the response only)")
    batch_order: str = param("peft", help="'peft' (the suite's one pass in file order) or 'shuffled'")
    pad_token: str = param("tokenizer", help="'eos' (the suite's: always pad with EOS) or 'tokenizer' (its own pad token)")
    decoding: str = param("greedy", help="'greedy' or 'model' (the suite's: the model's generation_config fills the rest)")
    float32_loading: str = param("float32", help="dtype float32: 'float32' (cast) or 'checkpoint' (the suite's: the checkpoint's dtype)")
    scorer_timeout_s: float = param(60.0, help="seconds a task file's scorer may take on one item before the run fails")

    def seed_fixed_by(self) -> Optional[str]:
        if self.batch_order == "peft":  # tasks.text.TextTask.load_model re-seeds torch as the suite does
            return ("batch_order 'peft' (the PEFT suite's: the training file in its order, and torch re-seeded with 0 "
                    "before the model is built, so the adapter starts the same; --set batch_order=shuffled lets the "
                    "seed shuffle the batches and start the adapter)")
        return None

    def validate(self) -> None:
        super().validate()
        bad = self.bad
        for key in ("max_seq_length", "forgetting_max_length"):
            if getattr(self, key) <= 0:
                raise bad(key, "must be a positive integer")
        if not 0 < self.scorer_timeout_s < float("inf"):
            raise bad("scorer_timeout_s", "must be a positive number of seconds")
        for key in ("train_size", "test_size"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise bad(key, "must be a positive integer or null")
        for key in ("valid_size", "forgetting_size"):
            if getattr(self, key) < 0:
                raise bad(key, "must be an integer >= 0")
        if "{query}" not in self.query_template:
            raise bad("query_template", "must contain '{query}'")
        if self.loss_on not in LOSS_ON:
            raise bad("loss_on", f"valid: {', '.join(LOSS_ON)}")
        if self.batch_order not in BATCH_ORDERS:
            raise bad("batch_order", f"valid: {', '.join(BATCH_ORDERS)}")
        if self.pad_token not in PAD_TOKENS:
            raise bad("pad_token", f"valid: {', '.join(PAD_TOKENS)}")
        if self.decoding not in DECODINGS:
            raise bad("decoding", f"valid: {', '.join(DECODINGS)}")
        if self.float32_loading not in FLOAT32_LOADINGS:
            raise bad("float32_loading", f"valid: {', '.join(FLOAT32_LOADINGS)}")
