"""The text-task engine: causal-LM fine-tuning on rows of {query, response}, shared by every text task (the
task files, `math` among them, and math-tiny). A task supplies the rows, the defaults and the evaluation;
this class tokenizes, batches, computes the loss and measures forgetting, with the PEFT suite's choices
selected by training parameters:

- loss_on "sequence": labels on prompt + response + the first padding token, the loss divided by the batch's
  non-padding tokens (the suite's); "completion": labels on the response and an appended EOS;
- batch_order "peft": the suite's BucketIterator (file order, one pass, the last partial bucket twice) and its
  re-seeding of torch before the model loads; "shuffled": reshuffled buckets, endless;
- forgetting_formula "next_token" (a task attribute): the ordinary shifted loss; "peft_suite": the suite's
  unshifted formula, kept only to match its published numbers.
"""

from __future__ import annotations

import sys
from typing import Any, Iterator

import numpy as np

from peftbench.config import ConfigError
from peftbench.tasks.base import Rows, Task, TaskData, TrainBatch
from peftbench.tasks.text_config import TextTrainConfig

# Rows per bucket = BUCKET_FACTOR * batch_size; sorting within a bucket reduces padding without sorting the
# whole epoch (the PEFT suite's value).
BUCKET_FACTOR = 20
FORGETTING_FORMULAS = ("next_token", "peft_suite")
# The training parameters that replace a text task's data sources with local files (or other hub ids).
DATA_KEYS = ("train_data", "valid_data", "test_data", "forgetting_data")


def subset_in_file_order(rows: list, size, seed: int = 0) -> list:
    """`size` rows drawn with `seed`, kept in file order (batch_order "peft" reads the file in order); all of
    them when size is None or not smaller."""
    if size is None or size >= len(rows):
        return rows
    keep = np.sort(np.random.default_rng(seed).permutation(len(rows))[:size])
    return [rows[int(i)] for i in keep]


class TextTask(Task):
    """Rows are dicts with "query" (the prompt's text, put into config.query_template) and "response"."""

    config_class = TextTrainConfig
    score_name = "accuracy"
    higher_is_better = True
    throughput_unit = "tokens"
    forgetting_formula = "next_token"  # see FORGETTING_FORMULAS

    # ---- model ----
    def load_processor(self, config):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(config.model_id, trust_remote_code=config.trust_remote_code)
        tokenizer.model_max_length = config.max_seq_length
        if tokenizer.eos_token_id is None:
            raise ConfigError(f"the tokenizer of {config.model_id} has no EOS token; generation could not stop")
        if config.pad_token == "eos" or tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        # right padding (the suite's get_tokenizer): some tokenizers default to left, and training batches are
        # built assuming right padding; generation and forgetting name their side explicitly
        tokenizer.padding_side = "right"
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
        checkpoint_dtype = config.dtype == "float32" and config.float32_loading == "checkpoint"
        model = AutoModelForCausalLM.from_pretrained(
            config.model_id,
            dtype="auto" if checkpoint_dtype else getattr(torch, config.dtype),
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

    def before_training(self, model, processor, data: TaskData, config) -> None:
        if config.loss_on == "completion":
            data.train = self._rows_with_a_label(data, processor, config)

    def _rows_with_a_label(self, data: TaskData, tokenizer, config) -> Rows:
        """The training rows that keep a response token within max_seq_length. "completion" trains on the
        response only: a row whose prompt fills max_seq_length has nothing to learn from, and a batch of such rows
        (the longest rows are batched together) has the loss 0/0 = nan. The rows left out are counted in the
        result's dataset_info; none left is a ConfigError naming max_seq_length."""
        examples = self.tokenize_examples(data.train, tokenizer, config)
        kept = [row for row, (ids, prompt_length) in zip(data.train, examples) if len(ids) > prompt_length]
        left_out = len(data.train) - len(kept)
        if not left_out:
            return data.train
        why = (f"the prompt fills max_seq_length ({config.max_seq_length} tokens), so no response token is left to "
               "train on (loss_on: completion)")
        if not kept:
            raise ConfigError(f"training parameter 'max_seq_length': in every training row ({left_out}) {why}; raise "
                              "max_seq_length or shorten the prompts", key="max_seq_length")
        print(f"warning: {left_out} of {len(data.train)} training rows left out: {why}; raise max_seq_length to "
              "train on them", file=sys.stderr)
        data.info["train_rows_left_out"] = left_out
        data.info["train_rows_left_out_because"] = why
        return kept

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
                yield self._collate(examples[start : start + config.batch_size], processor, config)

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
    def _collate(chunk: list[tuple[list[int], int]], tokenizer, config) -> TrainBatch:
        """Right-padded tensors, without an attention mask (see below). "sequence": labels are the whole row and
        the first padding position, labelled EOS (the suite pads with EOS and labels that position with the pad:
        the same token; with pad_token "tokenizer" the label stays EOS, so the model still learns to stop), and
        the loss is summed and divided by the batch's non-padding tokens (num_items_in_batch), as the suite's.
        The longest row has no padding position and so no stop label, as in the suite. "completion": labels are
        the response and its EOS, and the loss is the mean over them."""
        import torch

        width = max(len(ids) for ids, _ in chunk)
        input_ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((len(chunk), width), -100, dtype=torch.long)
        for row, (ids, prompt_length) in enumerate(chunk):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            if config.loss_on == "sequence":
                labels[row, : len(ids)] = input_ids[row, : len(ids)]
                if len(ids) < width:
                    labels[row, len(ids)] = tokenizer.eos_token_id
            else:
                labels[row, prompt_length : len(ids)] = input_ids[row, prompt_length : len(ids)]
        num_tokens = sum(len(ids) for ids, _ in chunk)
        # No attention mask: the padding is on the right, so under causal attention no real token sees a padding
        # position, and no padding position's output carries a label (the first padding token is predicted from
        # the last real token). The loss and its gradients are the masked batch's, and the attention kernel
        # skips the masked half of the scores (benchmarks/math-faithful.md, "Speed": the same losses, 6% less
        # time per CPU training step). Position ids are counted from the left either way.
        inputs = {"input_ids": input_ids, "labels": labels}
        if config.loss_on == "sequence":
            inputs["num_items_in_batch"] = num_tokens
        return TrainBatch(inputs=inputs, num_units=num_tokens)

    def compute_loss(self, model, batch: TrainBatch):
        # transformers shifts the labels inside the model; peft extends them for virtual tokens
        return model(**batch.inputs).loss

    def validation_loss(self, model, processor, rows: Rows, config) -> float:
        """The training loss over `rows` in file order, batches of batch_size, weighted by each batch's tokens."""
        import torch

        device = next(model.parameters()).device
        examples = self.tokenize_examples(list(rows), processor, config)
        total = units = 0.0
        model.eval()
        with torch.no_grad():
            for start in range(0, len(examples), config.batch_size):
                batch = self.to_device(self._collate(examples[start : start + config.batch_size], processor, config),
                                       device)
                total += self.compute_loss(model, batch).item() * batch.num_units
                units += batch.num_units
        return total / max(units, 1)

    def forgetting_loss(self, model, processor, rows: Rows, config) -> float:
        from peftbench.evaluation.forgetting import mean_token_loss, peft_suite_token_loss

        measure = peft_suite_token_loss if self.forgetting_formula == "peft_suite" else mean_token_loss
        # the training batch size, not batch_size_eval, keeps this from inflating the peak memory (as the suite)
        return measure(
            model, processor, [row["text"] for row in rows], batch_size=config.batch_size,
            max_length=config.forgetting_max_length,
        )
