"""PEFT's own MetaMathQA configs, trained a few steps, converted at full rank: plain peft in a fresh process must
reproduce each original's logits with the converted LoRA.

Half of these configs say `"task_type": null`; conversion once loaded the bare model for them, peft left the
adapter at its no-op initialisation, and the self-check compared a no-op with a no-op. Every config is accounted
for: converted and checked, or in NOT_CONVERTED with the reason.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

from peftbench.conversion import AdapterFolderError, ConversionRefused, RankSpec, convert_adapter_dir
from peftbench.conversion.source import read_adapter_config
from waiting import SAFETY_NET_S

warnings.filterwarnings("ignore", category=UserWarning)

CONFIGS = Path(__file__).parent / "fixtures" / "peft-metamathqa-configs"
FULL_RANK_TOLERANCE = 1e-4
TRAIN_STEPS = 3
VOCAB_SIZE = 128

# Every config that is not converted, with why; anything else must convert and match.
NOT_CONVERTED = {
    # prompt learning, adaption prompts and trainable tokens change no linear layer's weight
    "adaptionprompt/llama-3.2-3B-lr_0.0005": "refused",
    "adaptionprompt/llama-3.2-3B-lr_5e-3": "refused",
    "prefixtuning/llama-3.2-3B-lr_0.001": "refused",
    "prefixtuning/llama-3.2-3B-lr_0.005_zero_init": "refused",
    "prefixtuning/llama-3.2-3B-tokens50-init_prefix-lr_0.005": "refused",
    "prompt_tuning/llama-3.2-3B-default": "refused",
    "prompt_tuning/llama-3.2-3B-lr_0.001": "refused",
    "prompt_tuning/llama-3.2-3B-sample_vocab-lr_0.001": "refused",
    "ptuning/llama-3.2-3B-default": "refused",
    "trainable_tokens/llama-3.2-3B-sos+eos": "refused",
    "ln_tuning/llama-3.2-3B-default": "refused",  # adapts normalisation layers, not linear ones
    # Lily routes its experts on the input: not linear, converted only approximately (--fit least-squares)
    "lily/llama-3.2-3B-rank140-mlp-a2-b2-s8.0": "refused",
    "lily/llama-3.2-3B-rank896-a2-b2-s2.0": "refused",
    # its rank_pattern freezes 2944 of Llama-3B's 3072 directions, i.e. all 256 of the tiny model's
    "osf/llama-3.2-3B-rank128": "nothing to train",
}

# Run in a fresh interpreter with nothing from peftbench: what a serving user does with the files.
LOAD_WITH_PLAIN_PEFT = textwrap.dedent(
    """
    import json, sys, torch
    from transformers import AutoModelForCausalLM
    from peft import PeftModel
    base_dir, pairs = sys.argv[1], json.loads(sys.argv[2])
    ids = torch.randint(0, %d, (3, 24), generator=torch.Generator().manual_seed(5))
    def relative(candidate, reference):
        return float(((candidate - reference).flatten(1).norm(dim=1) / reference.flatten(1).norm(dim=1)).max())
    results = {}
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(base_dir).eval()(input_ids=ids).logits
        for name, (original_dir, lora_dir) in pairs.items():
            original = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), original_dir)
            converted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), lora_dir)
            reference = original.eval()(input_ids=ids).logits
            results[name] = {
                "error": relative(converted.eval()(input_ids=ids).logits, reference),
                "effect": relative(base, reference),
                "type": type(converted.base_model).__name__,
            }
    print(json.dumps(results))
    """
    % VOCAB_SIZE
)


def _config_name(config_file: Path) -> str:
    return f"{config_file.parent.parent.name}/{config_file.parent.name}"


def _tiny_wide_llama(out_dir: Path) -> Path:
    """A random one-layer Llama as wide as the shipped tiny model (hidden 256), so that the same configs fit it
    (block sizes, VB-LoRA's vector length 256, FourierFT's 5000 frequencies, PSOFT's rank 256)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB_SIZE, hidden_size=256, intermediate_size=512, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=64, tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).save_pretrained(out_dir)
    return out_dir


def _train_and_save(config_dir: Path, base_model, out_dir: Path) -> str | None:
    """Train PEFT's config `config_dir` a few steps on random tokens and save it; or why it cannot be trained."""
    from peft import PeftConfig, get_peft_model

    peft_config = PeftConfig.from_pretrained(str(config_dir))
    if peft_config.peft_type == "ADALORA":  # its rank schedule runs over the training (as the engine sets it)
        peft_config.total_step, peft_config.tinit, peft_config.tfinal = TRAIN_STEPS, 0, 0
    torch.manual_seed(0)  # adapter initialisation: the same for every config, whatever ran before
    try:
        model = get_peft_model(copy.deepcopy(base_model), peft_config)
        trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
        if not sum(parameter.numel() for parameter in trainable):
            return "nothing to train"
        optimizer = torch.optim.AdamW(trainable, lr=5e-3)
        input_ids = torch.randint(0, VOCAB_SIZE, (4, 16), generator=torch.Generator().manual_seed(0))
        model.train()
        for _ in range(TRAIN_STEPS):
            model(input_ids=input_ids, labels=input_ids).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    except (ValueError, RuntimeError, TypeError):  # peft's own checks of a config against the model
        return "does not build"
    model.save_pretrained(out_dir)
    return None


@pytest.fixture
def one_thread():
    """Tiny matrices: a second thread only adds synchronisation (and stalls when other jobs load the CPU)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield {**os.environ, "OMP_NUM_THREADS": "1"}
    torch.set_num_threads(previous)


def test_every_peft_metamathqa_config_converts_exactly_after_training(tmp_path, one_thread):
    from transformers import AutoModelForCausalLM

    config_files = sorted(CONFIGS.glob("*/*/adapter_config.json"))
    assert len(config_files) == 70
    null_task_type = {
        _config_name(file) for file in config_files if json.loads(file.read_text()).get("task_type") is None
    }
    assert len(null_task_type) == 35

    base_dir = _tiny_wide_llama(tmp_path / "base")
    base_model = AutoModelForCausalLM.from_pretrained(base_dir)
    outcomes, pairs, reports = {}, {}, {}
    for config_file in config_files:
        name = _config_name(config_file)
        try:
            read_adapter_config(config_file.parent)
        except ConversionRefused:
            outcomes[name] = "refused"  # by its type alone, before anything loads
            continue
        except AdapterFolderError:
            pass  # no weights yet: expected
        adapter_dir, lora_dir = tmp_path / "adapters" / name, tmp_path / "lora" / name
        why_not = _train_and_save(config_file.parent, base_model, adapter_dir)
        if why_not:
            outcomes[name] = why_not
            continue
        try:
            reports[name] = convert_adapter_dir(adapter_dir, lora_dir, RankSpec(), base_model=str(base_dir))
        except ConversionRefused:
            outcomes[name] = "refused"
            continue
        pairs[name] = [str(adapter_dir), str(lora_dir)]

    assert outcomes == NOT_CONVERTED
    assert len(pairs) == 70 - len(NOT_CONVERTED)
    assert len(null_task_type & set(pairs)) >= 20
    for name, report in reports.items():
        assert report.base_model_loaded_as.startswith("LlamaForCausalLM"), name
        assert report.weight_change_view_error <= FULL_RANK_TOLERANCE, name
        assert report.max_logits_relative_error <= FULL_RANK_TOLERANCE, name

    completed = subprocess.run(
        [sys.executable, "-c", LOAD_WITH_PLAIN_PEFT, str(base_dir), json.dumps(pairs)],
        capture_output=True, text=True, timeout=SAFETY_NET_S, check=True, env=one_thread,
    )
    loaded = json.loads(completed.stdout.strip().splitlines()[-1])
    assert set(loaded) == set(pairs)
    for name, outcome in loaded.items():
        assert outcome["type"] == "LoraModel", name
        assert outcome["effect"] > 1e-5, f"{name}: the trained adapter must change the model, or this proves nothing"
        assert outcome["error"] <= FULL_RANK_TOLERANCE, f"{name}: {outcome}"
        # conversion measured the same adapter effect as plain peft in the other process (a loaded adapter)
        assert reports[name].adapter_logits_effect > 1e-5, name


def test_issue_repro_ia3_and_oft_trained_by_peftbench_run_convert_with_their_effect(tmp_path):
    """PEFT's IA3 and OFT configs (task_type null) trained 20 steps on math-tiny by `peftbench run`, converted at
    full rank onto the shipped model: once reported "error 0 (the adapter itself moves logits by 0)"."""
    from typer.testing import CliRunner

    from peftbench.cli import app
    from peftbench.tasks import get_task

    shipped_model = get_task("math-tiny").default_params()["model_id"]
    experiments = [CONFIGS / "ia3/llama-3.2-3B-default", CONFIGS / "oft/llama-3.2-3B-rank32"]
    small = ["max_steps=20", "eval_steps=20", "batch_size=4", "valid_size=2", "test_size=2", "forgetting_size=2"]
    run = CliRunner().invoke(
        app, ["run", *map(str, experiments), "--task", "math-tiny", "-r", str(tmp_path), "--threads", "1",
              *[part for value in small for part in ("--set", value)]],
    )
    assert run.exit_code == 0, run.output
    for experiment in experiments:
        checkpoint = tmp_path / "checkpoints" / f"{experiment.parent.name}--{experiment.name}"
        converted = CliRunner().invoke(
            app, ["convert", str(checkpoint), "--out", str(tmp_path / f"lora-{checkpoint.name}"), "--rank", "full",
                  "--base-model", shipped_model, "--json"],
        )
        assert converted.exit_code == 0, converted.output
        report = json.loads(converted.stdout)
        assert report["base_model_loaded_as"].startswith("math-tiny's model")
        assert report["adapter_logits_effect"] > 1e-3, report["adapter_logits_effect"]
        assert report["max_logits_relative_error"] <= FULL_RANK_TOLERANCE
        assert report["lora_parameters"] > 10_000  # full rank of every adapted layer, not rank 1
