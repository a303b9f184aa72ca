"""One LoRA training step on the shipped math-tiny model, fp32 against bf16 autocast (issue 10's measurement).

LoRA r=16 on all projections, a batch of 16 sequences of 160 tokens, AdamW; prints the median seconds per step
of each precision, and the CPU capability torch dispatches to. Restrict the kernels with environment variables
to emulate an older CPU, e.g. an AVX2-only one:

    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \\
        .venv/bin/python benchmarks/bench_precision.py --threads 1 --steps 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from peftbench.tasks.math_tiny import shipped_model_path


def seconds_per_step(model, optimizer, batch, steps: int, amp: bool) -> tuple[float, float]:
    """Median wall seconds and median CPU seconds (this process) per step."""
    times, cpu_times = [], []
    for _ in range(steps + 1):  # the first step warms up allocators and kernels: not counted
        tic, tic_cpu = time.perf_counter(), time.process_time()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - tic)
        cpu_times.append(time.process_time() - tic_cpu)
    return statistics.median(times[1:]), statistics.median(cpu_times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=160)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(shipped_model_path(), dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=[
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], task_type="CAUSAL_LM"))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    batch = torch.randint(3, model.config.vocab_size, (args.batch, args.length))
    print(f"torch {torch.__version__}, capability {torch.backends.cpu.get_cpu_capability()}, "
          f"threads {args.threads}, batch {args.batch} x {args.length}")
    for precision in args.precisions:
        wall, cpu = seconds_per_step(model, optimizer, batch, args.steps, precision == "bf16")
        print(f"{precision}: {wall:.3f} s/step wall, {cpu:.3f} s/step CPU")


if __name__ == "__main__":
    main()
