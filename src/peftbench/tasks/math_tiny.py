"""`math-tiny`: the offline default task. Generated multi-step word problems, the tiny model shipped in the
package, and defaults sized so that the quick suite (9 experiments, 2 at a time) runs in minutes on a small
laptop CPU without native bf16 (the measured times are in benchmarks/math-tiny.md).

It is the `math` task with generated rows: the same prompt template, tokenization, greedy generation and
`#### N` scoring (see peftbench.tasks.math). Unlike `math`, which reproduces the PEFT suite, it trains with
the answer-only loss on shuffled batches and measures forgetting as a next-token loss (docs/math-tiny.md). The rows come from
peftbench.tasks.math_tiny_data, always with data seed DATA_SEED, so every run (any training seed) sees
the same train, valid and test problems; the training seed only changes their order and the adapter's
initialisation. Train, valid and test are disjoint by number chain (see math_tiny_data). The forgetting
set is held-out text of the base model's own pretraining distribution.

A data key (train_data, valid_data, test_data, forgetting_data) set to a local file replaces the generated
rows of that split, as in the `math` task.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

from peftbench.config import ConfigError
from peftbench.tasks import math_tiny_data
from peftbench.tasks.base import Rows, check_local_source
from peftbench.tasks.math import DATA_KEYS, MathTask

DATA_SEED = 0
DEFAULT_TRAIN_SIZE = 8000
DEFAULT_TEST_SIZE = 500
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json")


def shipped_model_path() -> Path:
    """The tiny base model's folder inside the installed package."""
    return Path(str(files("peftbench") / "assets" / "tiny-math-llama"))


class MathTinyTask(MathTask):
    name = "math-tiny"
    description = (
        "generated multi-step word problems, tiny Llama-architecture model shipped in the package "
        "(offline; minutes per experiment on a laptop CPU)"
    )

    def default_params(self) -> dict[str, Any]:
        return {
            **super().default_params(),
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
            # solutions: 46-94 tokens; a static KV cache is filled in place instead of re-concatenated at every
            # token (same completions, about a quarter less CPU time on an AVX2 CPU)
            "generation_kwargs": {"max_length": 256, "max_new_tokens": 100, "cache_implementation": "static"},
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
        for key in DATA_KEYS:
            if getattr(config, key) is not None:
                check_local_source(getattr(config, key), key)

    # ---- generated rows, unless a local file replaces a split ----
    def load_train_rows(self, config) -> Rows:
        if config.train_data is not None:
            return super().load_train_rows(config)
        return math_tiny_data.generate_rows("train", config.train_size or DEFAULT_TRAIN_SIZE, seed=DATA_SEED)

    def load_valid_rows(self, config) -> Rows:
        if config.valid_data is not None:
            return super().load_valid_rows(config)
        return math_tiny_data.generate_rows("valid", config.valid_size, seed=DATA_SEED)

    def load_test_rows(self, config) -> Rows:
        if config.test_data is not None:
            return super().load_test_rows(config)
        return math_tiny_data.generate_rows("test", config.test_size or DEFAULT_TEST_SIZE, seed=DATA_SEED)

    def load_forgetting_rows(self, config) -> Rows:
        if config.forgetting_data is not None:
            return super().load_forgetting_rows(config)
        texts = math_tiny_data.forgetting_texts(config.forgetting_size, seed=DATA_SEED)
        return [{"text": text} for text in texts]

    def forgetting_loss(self, model, processor, rows: Rows, config) -> float:
        from peftbench.evaluation.forgetting import mean_token_loss

        # the next-token loss on the base model's own pretraining distribution (not the PEFT suite's
        # unshifted formula, which `math` keeps for comparability with the published numbers)
        return mean_token_loss(
            model, processor, [row["text"] for row in rows], batch_size=config.batch_size,
            max_length=config.forgetting_max_length,
        )
