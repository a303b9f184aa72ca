"""Shared test fixtures: a tiny random Llama and a tiny tokenizer, built once per test session.

`tiny_model_dir` is a folder that `AutoModelForCausalLM.from_pretrained` and `AutoTokenizer.from_pretrained`
both load (hidden 32, 2 layers, a byte-level BPE of a few hundred tokens trained on the fixture texts), so it
can be passed as `model_id` to any text task. Nothing here touches the network.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
MATH_FIXTURES = FIXTURES / "math"
REPO_ROOT = Path(__file__).resolve().parents[1]


def _fixture_texts() -> list[str]:
    texts = []
    for path in sorted(MATH_FIXTURES.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            texts += [str(v) for k, v in row.items() if k in ("query", "response", "question", "answer", "text")]
    texts.append("Question: Think step by step.\nAnswer: The answer is: #### 0123456789")
    return texts


def build_tiny_tokenizer(out_dir: Path):
    """A byte-level BPE tokenizer (vocab ~300) wrapped as a transformers fast tokenizer and saved."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tokenizer.train_from_iterator(_fixture_texts(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.save_pretrained(out_dir)
    return fast


def build_tiny_llama(out_dir: Path, vocab_size: int, pad_token_id: int, bos_token_id: int, eos_token_id: int):
    """A randomly initialised 2-layer Llama (hidden 32) saved with save_pretrained."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, pad_token_id=pad_token_id, bos_token_id=bos_token_id,
        eos_token_id=eos_token_id, tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(out_dir)
    return model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """Folder with a tiny random Llama and its tokenizer (use as model_id)."""
    out_dir = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = build_tiny_tokenizer(out_dir)
    build_tiny_llama(
        out_dir, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    return out_dir


@pytest.fixture(scope="session")
def math_fixture_params(tiny_model_dir) -> dict:
    """Training parameters that run the `math` task on the local fixture files with the tiny model, fast."""
    return {
        "model_id": str(tiny_model_dir),
        "dtype": "float32",
        "train_data": str(MATH_FIXTURES / "metamath_train.jsonl"),
        "valid_data": str(MATH_FIXTURES / "gsm8k_train.jsonl"),
        "test_data": str(MATH_FIXTURES / "gsm8k_test.jsonl"),
        "forgetting_data": str(MATH_FIXTURES / "finewiki.jsonl"),
        "valid_size": 4,
        "max_steps": 4,
        "eval_steps": 2,
        "batch_size": 4,
        "batch_size_eval": 8,
        "max_seq_length": 96,
        "generation_kwargs": {"max_length": 160, "max_new_tokens": 8},
        "num_threads": 1,
    }


@pytest.fixture()
def experiments_copy(tmp_path) -> Path:
    """A writable copy of the PEFT-suite experiment folders kept in tests/fixtures/experiments."""
    destination = tmp_path / "experiments"
    shutil.copytree(FIXTURES / "experiments", destination)
    return destination


@pytest.fixture(scope="session")
def image_standins(tmp_path_factory) -> dict:
    """Tiny random stand-ins of image-gen's generator, concept dataset and similarity model (tests/image_standins.py),
    built once per session; returns the training parameters that point image-gen at them."""
    from image_standins import build_standins

    return build_standins(tmp_path_factory.mktemp("image-standins"))


IMAGE_EXPERIMENTS = FIXTURES / "peft-image-gen-configs" / "experiments"


def copy_image_experiment(name: str, destination: Path) -> Path:
    """A copy of one of PEFT's image-gen experiment folders (shipped under tests/fixtures)."""
    folder = destination / name
    shutil.copytree(IMAGE_EXPERIMENTS / name, folder)
    return folder


@pytest.fixture(scope="session")
def image_lora_run(image_standins, tmp_path_factory) -> tuple[Path, dict]:
    """PEFT's lora/flux2-klein-default run by image-gen on the stand-ins: (result file, its content)."""
    from peftbench.run.engine import execute
    from peftbench.run.request import RunRequest

    root = tmp_path_factory.mktemp("image-run")
    experiment = copy_image_experiment("lora/flux2-klein-default", root / "experiments")
    path, status = execute(RunRequest(task="image-gen", results_dir=str(root / "results"), experiment_dir=str(experiment),
                                      overrides=dict(image_standins), show_progress=False))
    result = json.loads(Path(path).read_text())
    assert status == "success", result["peftbench"]["error_msg"]
    return Path(path), result
