"""`math-tiny`: the offline default task. Generated multi-step word problems, the tiny model shipped in the
package, and defaults sized so that the quick suite (9 experiments, 2 at a time) runs in minutes on a small
laptop CPU without native bf16 (the measured times are in benchmarks/math-tiny.md).

It is the `math` task (tasks/files/math.yaml) with generated rows: the same prompt template, tokenization
(peftbench.tasks.text), greedy generation and `#### N` scoring. Unlike `math`, which reproduces the PEFT suite, it trains with
the answer-only loss on shuffled batches and measures forgetting as a next-token loss (docs/math-tiny.md). The rows come from
peftbench.tasks.math_tiny_data, always with data seed DATA_SEED, so every run (any training seed) sees
the same train, valid and test problems; the training seed only changes their order and the adapter's
initialisation. Train, valid and test are disjoint by number chain (see math_tiny_data). The forgetting
set is held-out text of the base model's own pretraining distribution.

A data key (train_data, valid_data, test_data, forgetting_data) set to a local file replaces the generated
rows of that split, read as the `math` task file reads that split (its renames, filter and sample).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

from peftbench.config import ConfigError
from peftbench.tasks import math_tiny_data
from peftbench.tasks.base import EvalResult, Rows, TaskData, check_local_source, is_local_source
from peftbench.tasks.text import DATA_KEYS, TextTask, subset_in_file_order

DATA_SEED = 0
DEFAULT_TRAIN_SIZE = 8000
DEFAULT_TEST_SIZE = 500
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json")


def shipped_model_path() -> Path:
    """The tiny base model's folder inside the installed package."""
    return Path(str(files("peftbench") / "assets" / "tiny-math-llama"))


def math_task():
    from peftbench.tasks import get_task

    return get_task("math")


class MathTinyTask(TextTask):
    name = "math-tiny"
    description = (
        "generated multi-step word problems, tiny Llama-architecture model shipped in the package "
        "(offline; minutes per experiment on a laptop CPU)"
    )
    _data = None  # (config, data): local data files read by check_inputs, for load_data with the same config

    # PEFT's inference settings (5 prompts a category, 10 runs of 20/50/100 tokens, every mode at batch sizes 1
    # and 8) would take most of an hour for the quick suite's nine methods on two CPU cores; these keep its
    # categories at half the lengths, and measure the merged and converted modes (a check of the measurement,
    # and a LoRA of known cost) at batch size 1 only
    inference_params = {"prompts_per_category": 2, "max_new_tokens": {"short": 10, "medium": 25, "long": 50},
                        "runs": 3, "modes_at_every_batch_size": ["unmerged", "mixed"]}

    def default_params(self) -> dict[str, Any]:
        return {
            **math_task().default_params(),
            "model_id": str(shipped_model_path()),
            # weights in fp32; bf16 autocast where the hardware runs bf16 natively (2x faster there, many times
            # slower where it is emulated): peftbench.hardware decides, once per suite
            "dtype": "float32",
            "use_amp": "auto",
            "max_seq_length": 256,
            # 128 steps of 8 (not 200 of 16): the quick suite's time budget on a small CPU without native bf16
            # (benchmarks/math-tiny.md); more, smaller steps learned more per token than fewer, larger ones
            "batch_size": 8,
            "batch_size_eval": 100,
            "max_steps": 128,
            "eval_steps": 128,  # validation once, at the end: generation dominates the CPU time
            "optimizer_kwargs": {"lr": 2e-3, "weight_decay": 0.1},
            # solutions: 46-94 tokens
            "generation_kwargs": {"max_length": 256, "max_new_tokens": 100},
            "train_data": None,
            "valid_data": None,
            "test_data": None,
            "forgetting_data": None,
            "train_size": DEFAULT_TRAIN_SIZE,
            "valid_size": 100,
            "test_size": DEFAULT_TEST_SIZE,
            "forgetting_size": 100,
            "forgetting_max_length": 256,
            # One thread: this model is too small to gain much from two, and two threads that must meet at
            # every op slow down many times over when another process takes a core (measured: 7 s/step
            # against 0.55 s/step on the shared machine). `peftbench suite` runs two experiments at once.
            "num_threads": 1,
            # measured: predicts the published ranking better than the suite's loss, with which every config
            # stays near 0% on the shipped model (benchmarks/math-tiny.md, "Which loss")
            "loss_on": "completion",
            # peftbench's own choices where `math` keeps the suite's (text_config.PAD_TOKENS, DECODINGS)
            "pad_token": "tokenizer",
            "decoding": "greedy",
            "float32_loading": "float32",
            "adalora_total_step": "max_steps",
            "batch_order": "shuffled",
            # test generation on merged weights: LoHa, DoRA and OFT otherwise rebuild their weight deltas at every
            # generated token (benchmarks/math-tiny.md: the CPU saved, and how many completions stay identical)
            "merge_for_eval": True,
        }

    def check_inputs(self, config) -> None:
        model_path = Path(config.model_id)
        if model_path == shipped_model_path():
            missing = [name for name in MODEL_FILES if not (model_path / name).exists()]
            if missing:
                raise ConfigError(
                    f"the shipped math-tiny model is incomplete at {model_path} (missing {', '.join(missing)}); "
                    "restore it from git or rebuild it with: python scripts/pretrain_tiny_model.py"
                )
        sources = [getattr(config, key) for key in DATA_KEYS if getattr(config, key) is not None]
        for key in DATA_KEYS:
            if getattr(config, key) is not None:
                check_local_source(getattr(config, key), key)
        if sources and all(is_local_source(source) for source in sources):
            # every problem of a local file (a byte that is not UTF-8, a row without a field) before any model loads
            self._data = (config, self._read_data(config))

    # ---- generated rows, unless a local file replaces a split (read by the math task file) ----
    # The forgetting measure is the engine's next-token loss on the base model's own pretraining distribution
    # (not the PEFT suite's unshifted formula, which `math` keeps for comparability with the published numbers).
    def load_data(self, config) -> TaskData:
        """The data check_inputs read for this config (the engine calls both with one config), else read now."""
        return self._data[1] if self._data is not None and self._data[0] is config else self._read_data(config)

    def _read_data(self, config) -> TaskData:
        math = math_task() if any(getattr(config, key) is not None for key in DATA_KEYS) else None
        if config.train_data is not None:
            train = subset_in_file_order(math.split_rows("train", config.train_data), config.train_size)
        else:
            train = math_tiny_data.generate_rows("train", config.train_size or DEFAULT_TRAIN_SIZE, seed=DATA_SEED)
        if config.valid_data is not None:
            valid = math.split_rows("valid", config.valid_data)[: config.valid_size]
        else:
            valid = math_tiny_data.generate_rows("valid", config.valid_size, seed=DATA_SEED)
        if config.test_data is not None:
            test = math.split_rows("test", config.test_data)[: config.test_size]
        else:
            test = math_tiny_data.generate_rows("test", config.test_size or DEFAULT_TEST_SIZE, seed=DATA_SEED)
        if config.forgetting_data is not None:
            forgetting = math.forgetting_rows(config)
        else:
            texts = math_tiny_data.forgetting_texts(config.forgetting_size, seed=DATA_SEED)
            forgetting = [{"text": text} for text in texts]
        return TaskData(train=train, valid=valid, test=test, forgetting=forgetting,
                        info={key: getattr(config, key) for key in DATA_KEYS})

    def evaluate(self, model, processor, rows: Rows, config, desc: str) -> EvalResult:
        from peftbench.evaluation.answers import is_correct
        from peftbench.evaluation.generation import generate_completions

        prompts = [self.prompt(row["query"], config) for row in rows]
        completions = generate_completions(
            model, processor, prompts, batch_size=config.batch_size_eval, generation_kwargs=config.generation_kwargs,
            max_prompt_length=config.max_seq_length, decoding=config.decoding, desc=desc,
        )
        correct = [int(is_correct(c, row["response"])) for c, row in zip(completions.texts, rows)]
        score = sum(correct) / len(correct) if correct else float("nan")
        return EvalResult(score=score, per_item_correct=correct, predictions=completions.texts,
                          targets=[row["response"] for row in rows], inputs=prompts,
                          completions_at_length_limit=completions.at_length_limit)
