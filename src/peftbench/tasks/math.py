"""`math`: the PEFT suite's published MetaMathQA benchmark, and the base for other query/response tasks.

- train: MetaMathQA (`query`, `response`), rows with len(f"{query} {response}") > 1300 dropped, as in the suite;
- valid: `valid_size` (50) rows of GSM8K train (`question`, `answer` ending in "#### N"), a fixed seed-0 sample;
- test: GSM8K test (the first `test_size` rows, default all);
- forgetting: the first `forgetting_size` (100) rows of HuggingFaceFW/finewiki (`text`).
Every id can be replaced by a local file in the same schema (training parameters train_data, valid_data,
test_data, forgetting_data, model_id).

Subclasses (e.g. math-tiny) override `default_params` and/or the `load_*_rows` methods (generated rows, other
files); the tokenization, loss, generation, scoring and forgetting stay the same.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from peftbench.config import ConfigError
from peftbench.tasks.base import (
    EvalResult,
    Rows,
    Task,
    TaskData,
    TrainBatch,
    check_local_source,
    is_local_source,
    load_first_rows_streaming,
    load_rows,
    require_columns,
)
from peftbench.tasks.text_config import TextTrainConfig

# The PEFT suite drops MetaMathQA rows longer than this (query + " " + response), 93.8% of the data remain.
CHAR_LIMIT = 1300
# Rows per bucket = BUCKET_FACTOR * batch_size; sorting within a bucket reduces padding without sorting the
# whole epoch (the PEFT suite's value).
BUCKET_FACTOR = 20
VALID_SAMPLE_SEED = 0  # the valid rows are the same for every run, whatever the training seed
DATA_KEYS = ("train_data", "valid_data", "test_data", "forgetting_data")


class MathTask(Task):
    name = "math"
    description = "MetaMathQA -> GSM8K (the PEFT suite's published benchmark; base meta-llama/Llama-3.2-3B)"
    config_class = TextTrainConfig
    score_name = "accuracy"
    higher_is_better = True
    throughput_unit = "tokens"

    # ---- configuration ----
    def default_params(self) -> dict[str, Any]:
        return {
            "model_id": "meta-llama/Llama-3.2-3B",
            "dtype": "bfloat16",
            "max_seq_length": 768,
            "batch_size": 4,
            "batch_size_eval": 50,
            "max_steps": 5000,
            "eval_steps": 250,
            "compile": False,
            "use_gc": False,
            "seed": 0,
            "grad_norm_clip": 1.0,
            "optimizer_type": "AdamW",
            "optimizer_kwargs": {"lr": 1e-4, "weight_decay": 0.1},
            "lr_scheduler": "cosine",
            "use_amp": False,
            "autocast_adapter_dtype": True,
            "attn_implementation": None,
            "generation_kwargs": {"max_length": 800, "max_new_tokens": 300},
            "query_template": "Question: {query} Think step by step.\nAnswer:",
            "init_kv_cache_prefix": None,
            "train_data": "meta-math/MetaMathQA",
            "valid_data": "openai/gsm8k",
            "test_data": "openai/gsm8k",
            "forgetting_data": "HuggingFaceFW/finewiki",
            "valid_size": 50,
            "forgetting_size": 100,
            "loss_on": "sequence",
            "batch_order": "peft",
        }

    def check_inputs(self, config) -> None:
        for key in DATA_KEYS:
            check_local_source(getattr(config, key), key)

    # ---- data: rows with "query" and "response" ----
    def load_data(self, config) -> TaskData:
        train = self.load_train_rows(config)
        if config.train_size is not None and config.train_size < len(train):
            # a fixed random subset, kept in file order (batch_order "peft" reads the file in order)
            keep = np.sort(np.random.default_rng(VALID_SAMPLE_SEED).permutation(len(train))[: config.train_size])
            train = [train[int(i)] for i in keep]
        return TaskData(
            train=train,
            valid=self.load_valid_rows(config),
            test=self.load_test_rows(config),
            forgetting=self.load_forgetting_rows(config),
            info={key: getattr(config, key) for key in DATA_KEYS},
        )

    def load_train_rows(self, config) -> Rows:
        rows = load_rows(config.train_data, split="train", key="train_data")
        require_columns(rows, ["query", "response"], config.train_data, "train_data")
        keep = [i for i, (q, r) in enumerate(zip(rows["query"], rows["response"])) if len(f"{q} {r}") <= CHAR_LIMIT]
        return rows.select(keep)

    def load_valid_rows(self, config) -> Rows:
        rows = self._gsm8k_rows(config.valid_data, "train", "valid_data")
        # exactly the PEFT suite's sample: np.random.seed(0); np.random.shuffle(indices) (without touching the
        # global generator)
        order = np.arange(len(rows))
        np.random.RandomState(VALID_SAMPLE_SEED).shuffle(order)
        return [rows[int(i)] for i in order[: config.valid_size]]

    def load_test_rows(self, config) -> Rows:
        rows = self._gsm8k_rows(config.test_data, "test", "test_data")
        count = len(rows) if config.test_size is None else min(config.test_size, len(rows))
        return [rows[i] for i in range(count)]

    def load_forgetting_rows(self, config) -> Rows:
        rows = load_first_rows_streaming(config.forgetting_data, config.forgetting_size, key="forgetting_data")
        require_columns(rows, ["text"], config.forgetting_data, "forgetting_data")
        return rows

    @staticmethod
    def _gsm8k_rows(source: str, split: str, key: str) -> list[dict[str, str]]:
        """GSM8K rows (question, answer) as query/response rows; query/response files are accepted as they are."""
        rows = load_rows(source, split=split, hub_config=None if is_local_source(source) else "main", key=key)
        columns = set(rows.column_names)
        if {"query", "response"} <= columns:
            return [{"query": q, "response": r} for q, r in zip(rows["query"], rows["response"])]
        require_columns(rows, ["question", "answer"], source, key)
        return [{"query": q, "response": a} for q, a in zip(rows["question"], rows["answer"])]

    # ---- model ----
    def load_processor(self, config):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(config.model_id, trust_remote_code=config.trust_remote_code)
        tokenizer.model_max_length = config.max_seq_length
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if tokenizer.eos_token_id is None:
            raise ConfigError(f"the tokenizer of {config.model_id} has no EOS token; generation could not stop")
        return tokenizer

    def load_model(self, config, device: str):
        import torch
        from transformers import AutoModelForCausalLM

        if config.batch_order == "peft":
            # The suite's randomness too: its init_accelerator() re-seeds torch with 0 and builds a 1x1 Linear
            # after set_seed(seed), so the adapter's initialisation is the same whatever the seed (and, with
            # its fixed batch order, the whole run). Measured: the suite's run bit for bit
            # (benchmarks/math-faithful.md). `batch_order: shuffled` lets the seed vary both.
            torch.manual_seed(0)
            torch.nn.Linear(1, 1)
        model = AutoModelForCausalLM.from_pretrained(
            config.model_id,
            dtype=getattr(torch, config.dtype),
            attn_implementation=config.attn_implementation,
            trust_remote_code=config.trust_remote_code,
        )
        return model.to(device)

    # ---- training ----
    def prompt(self, query: str, config) -> str:
        return config.query_template.format(query=query)

    def tokenize_examples(self, rows: list[dict[str, Any]], tokenizer, config) -> list[tuple[list[int], int]]:
        """For each row, the token ids of prompt + response (no separator) cut at max_seq_length, and the
        prompt's length. loss_on "sequence" tokenizes as the PEFT suite does (no EOS appended: the first padding
        token, which is EOS, carries the stop label); "completion" appends EOS. One batched tokenizer call per
        list (fast tokenizers work in parallel on a batch)."""
        prompts = [self.prompt(row["query"], config) for row in rows]
        full_ids = tokenizer([p + row["response"] for p, row in zip(prompts, rows)], verbose=False)["input_ids"]
        if config.loss_on == "sequence":
            return [(ids[: config.max_seq_length], 0) for ids in full_ids]
        prompt_ids = tokenizer(prompts, verbose=False)["input_ids"]
        return [
            ((ids + [tokenizer.eos_token_id])[: config.max_seq_length], min(len(prompt), config.max_seq_length))
            for ids, prompt in zip(full_ids, prompt_ids)
        ]

    def train_batches(self, rows: Rows, processor, config, seed: int) -> Iterator[TrainBatch]:
        """Length-bucketed batches: buckets of BUCKET_FACTOR batches, each sorted longest first (so that an OOM
        shows up early) and cut into batches. batch_order "peft" is the suite's BucketIterator (file order, one
        pass: training ends when it is used up); "shuffled" reshuffles every epoch and never ends."""
        import torch

        if len(rows) == 0:
            raise ConfigError("the training split is empty")
        for bucket in self._buckets(rows, config, seed):
            examples = self.tokenize_examples(bucket, processor, config)
            if config.batch_order == "peft":
                # torch's sort, as the suite's: it orders equal lengths differently from Python's stable sort
                order = torch.argsort(torch.tensor([len(ids) for ids, _ in examples]), descending=True)
                examples = [examples[i] for i in order.tolist()]
            else:
                examples.sort(key=lambda example: len(example[0]), reverse=True)
            for start in range(0, len(examples), config.batch_size):
                yield self._collate(examples[start : start + config.batch_size], processor.pad_token_id, config)

    @staticmethod
    def _buckets(rows: Rows, config, seed: int) -> Iterator[list]:
        bucket_size = config.batch_size * BUCKET_FACTOR
        if config.batch_order == "peft":
            for start in range(0, len(rows), bucket_size):
                yield [rows[i] for i in range(start, min(start + bucket_size, len(rows)))]
            remainder = len(rows) % bucket_size
            if remainder:  # the suite's BucketIterator yields the last, partial bucket a second time
                yield [rows[i] for i in range(len(rows) - remainder, len(rows))]
            return
        rng = np.random.default_rng(seed)
        while True:
            order = rng.permutation(len(rows))
            for start in range(0, len(order), bucket_size):
                yield [rows[int(i)] for i in order[start : start + bucket_size]]

    @staticmethod
    def _collate(chunk: list[tuple[list[int], int]], pad_id: int, config) -> TrainBatch:
        """Right-padded tensors. "sequence": labels are the whole row and the first padding token (the
        tokenizer's pad, EOS when it has none), and the loss is summed and divided by the batch's non-padding
        tokens (num_items_in_batch), as the suite's. "completion": labels are the response and its EOS, and
        the loss is the mean over them."""
        import torch

        width = max(len(ids) for ids, _ in chunk)
        input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(chunk), width), dtype=torch.long)
        labels = torch.full((len(chunk), width), -100, dtype=torch.long)
        for row, (ids, prompt_length) in enumerate(chunk):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention_mask[row, : len(ids)] = 1
            if config.loss_on == "sequence":
                labels[row, : len(ids) + 1] = input_ids[row, : len(ids) + 1]
            else:
                labels[row, prompt_length : len(ids)] = input_ids[row, prompt_length : len(ids)]
        num_tokens = int(attention_mask.sum())
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        if config.loss_on == "sequence":
            inputs["num_items_in_batch"] = num_tokens
        return TrainBatch(inputs=inputs, num_units=num_tokens)

    def compute_loss(self, model, batch: TrainBatch):
        # transformers shifts the labels inside the model; peft extends them for virtual tokens
        return model(**batch.inputs).loss

    # ---- evaluation ----
    def evaluate(self, model, processor, rows: Rows, config, desc: str) -> EvalResult:
        from peftbench.evaluation.answers import is_correct
        from peftbench.evaluation.generation import generate_greedy

        prompts = [self.prompt(row["query"], config) for row in rows]
        completions = generate_greedy(
            model, processor, prompts, batch_size=config.batch_size_eval,
            generation_kwargs=config.generation_kwargs, max_prompt_length=config.max_seq_length, desc=desc,
        )
        correct = [int(is_correct(c, row["response"])) for c, row in zip(completions, rows)]
        score = sum(correct) / len(correct) if correct else float("nan")
        return EvalResult(score=score, per_item_correct=correct, predictions=completions,
                          targets=[row["response"] for row in rows], inputs=prompts)

    def forgetting_loss(self, model, processor, rows: Rows, config) -> float:
        from peftbench.evaluation.forgetting import peft_suite_token_loss

        # the training batch size, not batch_size_eval, keeps this from inflating the peak memory (as the suite)
        return peft_suite_token_loss(
            model, processor, [row["text"] for row in rows], batch_size=config.batch_size,
            max_length=config.forgetting_max_length,
        )
