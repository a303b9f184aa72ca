"""Write the experiment folders of the built-in `quick` suite (src/peftbench/suites/quick/<method>/<name>/).

    .venv/bin/python scripts/build_quick_suite.py

Each folder holds an `adapter_config.json` written by peft's `config.save_pretrained` (none for full
fine-tuning) and a `training_params.json` with the method's learning rate. The configs are the PEFT suite's
MetaMathQA ones sized for the tiny math-tiny model (hidden 256, intermediate 704, 4 layers). The learning
rates follow one rule for every method (see experiments()); tuning them is `peftbench sweep`'s job.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

SUITE_DIR = Path(__file__).resolve().parents[1] / "src" / "peftbench" / "suites" / "quick"
ORDER_FILE = "order.json"  # read by peftbench.builtin_suites.suite_experiments
ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def experiments():
    """(method, name, peft config or None, training params) of every quick-suite experiment."""
    from peft import (
        IA3Config,
        LoHaConfig,
        LoraConfig,
        OFTConfig,
        PromptTuningConfig,
        TaskType,
    )

    def lr(value: float, **extra) -> dict:
        return {"optimizer_kwargs": {"lr": value, **extra}}

    causal = {"task_type": TaskType.CAUSAL_LM}
    # Learning rates: 20x the PEFT suite's published rate for the method (its default 1e-4 -> math-tiny's LoRA
    # rate 2e-3, the one the feasibility probe found), so every method keeps its rate relative to LoRA's:
    # full fine-tuning 1e-5 -> 2e-4, prompt tuning 1e-3 -> 2e-2, IA3 5e-3 -> 0.1. Not tuned here;
    # `peftbench sweep` tunes them on the valid split.
    # 9 experiments keep the suite within ten minutes on 2 idle cores (VeRA rank 128, lr 2e-2, was the tenth: 31%
    # test accuracy, 133 s, and the suite took 10 min 29 s); GraLoRA, MiSS, Lily and BEFT configs sized
    # for this model apply too (tests/test_math_tiny_task.py checked them) but did not fit the time budget.
    return [
        ("lora", "rank16", LoraConfig(r=16, lora_alpha=32, target_modules=ALL_PROJECTIONS, **causal), lr(2e-3)),
        (
            "lora", "rank16-rslora",
            LoraConfig(r=16, lora_alpha=16, use_rslora=True, target_modules=ALL_PROJECTIONS, **causal), lr(2e-3),
        ),
        (
            "lora", "rank16-dora",
            LoraConfig(r=16, lora_alpha=32, use_dora=True, target_modules=ALL_PROJECTIONS, **causal), lr(2e-3),
        ),
        (
            "lora", "rank16-lorafa",
            LoraConfig(r=16, lora_alpha=32, target_modules=ALL_PROJECTIONS, **causal),
            {"optimizer_type": "lora-fa", **lr(2e-3, r=16, lora_alpha=32)},
        ),
        ("oft", "block32", OFTConfig(oft_block_size=32, r=0, target_modules=ALL_PROJECTIONS, **causal), lr(2e-3)),
        ("ia3", "default", IA3Config(**causal), lr(0.1)),
        ("prompt_tuning", "tokens20", PromptTuningConfig(num_virtual_tokens=20, **causal), lr(2e-2)),
        ("full-finetuning", "default", None, lr(2e-4)),
        ("loha", "rank16", LoHaConfig(r=16, alpha=32, target_modules=ALL_PROJECTIONS, **causal), lr(2e-3)),
    ]


# Training parameters of every quick-suite experiment, on top of math-tiny's defaults, for its 10-minute budget on
# a 2-core AVX2-only CPU: no validation (the suite reports test scores; 100 validation generations were a sixth
# of each experiment's evaluation), and the first 300 of the 500 test problems (LoRA's seed spread stayed within
# 3 points; benchmarks/math-tiny.md).
SUITE_PARAMS = {"valid_size": 0, "test_size": 300}

# The order `peftbench suite` starts the experiments in (written to order.json): longest first, by the child CPU
# seconds measured on the emulated AVX2-only CPU (benchmarks/math-tiny.md), so that the two workers finish close
# together instead of one running the slowest experiment alone at the end. Experiments not listed run last.
LONGEST_FIRST = [
    "loha/rank16", "lora/rank16-dora", "full-finetuning/default", "lora/rank16", "oft/block32",
    "lora/rank16-lorafa", "lora/rank16-rslora", "prompt_tuning/tokens20", "ia3/default",
]


def main() -> None:
    if SUITE_DIR.exists():
        shutil.rmtree(SUITE_DIR)
    for method, name, peft_config, training_params in experiments():
        folder = SUITE_DIR / method / name
        folder.mkdir(parents=True)
        if peft_config is not None:
            peft_config.save_pretrained(str(folder))
        (folder / "training_params.json").write_text(json.dumps({**SUITE_PARAMS, **training_params}, indent=2) + "\n")
        print(f"wrote {folder.relative_to(SUITE_DIR.parents[2])}")
    (SUITE_DIR / ORDER_FILE).write_text(json.dumps({"longest_first": LONGEST_FIRST}, indent=2) + "\n")


if __name__ == "__main__":
    main()
