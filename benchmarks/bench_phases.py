"""CPU seconds of each phase of one math-tiny experiment (LoRA r16, all projections), for budgeting the quick suite.

Measures process CPU time (not wall time), so numbers stay meaningful on a machine shared with other jobs: at one
torch thread, CPU seconds are the wall seconds the phase takes on an idle core of the same CPU.

    .venv/bin/python benchmarks/bench_phases.py --steps 10 --test-items 100 [--set key=value ...]

Emulate an AVX2-only CPU with ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2.
"""

from __future__ import annotations

import argparse
import time

tic_start = time.process_time()

import torch  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402

from peftbench.config import parse_set_options  # noqa: E402
from peftbench.tasks import get_task  # noqa: E402
from peftbench.training.methods import MethodSupport  # noqa: E402
from peftbench.training.train import train  # noqa: E402

ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--test-items", type=int, default=100)
    parser.add_argument("--forgetting-texts", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", dest="assignments", action="append", default=[])
    args = parser.parse_args()
    imports = time.process_time() - tic_start
    torch.set_num_threads(args.threads)
    task = get_task("math-tiny")
    overrides = {"use_amp": False, "max_steps": args.steps, "eval_steps": 10**6, "valid_size": 0,
                 "test_size": args.test_items, "forgetting_size": args.forgetting_texts,
                 **parse_set_options(args.assignments)}
    config = task.build_config(overrides=overrides)
    tic = time.process_time()
    data = task.load_data(config)
    processor = task.load_processor(config)
    model = get_peft_model(task.load_model(config, torch.device("cpu")),
                           LoraConfig(r=16, lora_alpha=32, target_modules=ALL_PROJECTIONS, task_type="CAUSAL_LM"))
    setup = time.process_time() - tic
    tic = time.process_time()
    outcome = train(model=model, task=task, data=data, processor=processor, config=config, device=torch.device("cpu"),
                    support=MethodSupport(), show_progress=False)
    train_s = time.process_time() - tic
    tic = time.process_time()
    result = task.evaluate(model, processor, data.test, config, desc="test")
    test_s = time.process_time() - tic
    tic = time.process_time()
    task.measure_forgetting(model, processor, data.forgetting, config, adapter_disabled=model.disable_adapter)
    forgetting_s = time.process_time() - tic
    print(f"capability {torch.backends.cpu.get_cpu_capability()}, use_amp {config.use_amp}, threads {args.threads}")
    print(f"imports {imports:.1f} s CPU, data+model {setup:.1f} s")
    print(f"train: {train_s / args.steps:.3f} s CPU/step ({outcome.train_units / args.steps:.0f} tokens/step, "
          f"batch {config.batch_size})")
    generated = sum(len(processor(text, add_special_tokens=False)["input_ids"]) for text in result.predictions)
    print(f"test: {test_s / args.test_items * 100:.2f} s CPU per 100 items "
          f"({generated / args.test_items:.1f} generated tokens/item, batch {config.batch_size_eval})")
    print(f"forgetting: {forgetting_s / max(1, args.forgetting_texts) * 100:.2f} s CPU per 100 texts "
          f"(x2: adapter on and off)")


if __name__ == "__main__":
    main()
