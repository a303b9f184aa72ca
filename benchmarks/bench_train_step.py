"""Where one training step of the side-by-side comparison spends its time, and what oneDNN's fp32 kernels
(`cpu_matmul`) and torch.compile change.

The step is the one both PEFT's MetaMathQA script and `math` run: the shipped tiny Llama with the PEFT suite's
LoRA r32 on q/v, a batch of 16 rows of 140 tokens, fp32, loss over the whole sequence, AdamW, grad-norm clip.
Prints the fp32 product throughput of torch's kernel and oneDNN's on the step's shapes, the median step time
with torch's kernels, with oneDNN's linear layers and under `torch.compile` (with its compile time), then the
profiler's top operators of three eager steps with each kernel.

    .venv/bin/python benchmarks/bench_train_step.py [--threads 1] [--steps 6]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from importlib.resources import files

import torch
import torch.nn.functional as F

from peftbench.training.onednn_linear import _inner_product, onednn_linears

# (rows, in, out) of the step's products: q/k/v/o, MLP up and down, LM head; and a large square one
SHAPES = [(2240, 256, 256), (2240, 256, 704), (2240, 704, 256), (2240, 256, 705), (2048, 2048, 2048)]


def build(compiled: bool, on_onednn: bool = False):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(files("peftbench") / "assets" / "tiny-math-llama"),
                                                 dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=32, lora_alpha=64, target_modules=["q_proj", "v_proj"],
                                             lora_dropout=0.0))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.1)
    forward = torch.compile(model) if compiled else model
    tokens = torch.randint(3, 700, (16, 140))

    def step() -> None:
        with onednn_linears(on_onednn):
            loss = forward(input_ids=tokens, attention_mask=torch.ones_like(tokens), labels=tokens).loss
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()

    return step


def timed(step, steps: int) -> tuple[float, float]:
    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=6)
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    from peftbench.hardware import detect_hardware  # the CPU, named beside every timing

    cpu = detect_hardware("cpu")
    print(f"CPU {cpu.name} ({' '.join(cpu.flags)}; torch kernels {cpu.torch_cpu_capability}) · torch {torch.__version__}"
          f" · {arguments.threads} thread(s) · Python {platform.python_version()}")
    for rows, size_in, size_out in SHAPES:
        x, weight = torch.randn(rows, size_in), torch.randn(size_out, size_in)
        rates = []
        for product in (F.linear, _inner_product):
            product(x, weight)
            tic = time.perf_counter()
            for _ in range(5):
                product(x, weight)
            rates.append(2 * rows * size_in * size_out * 5 / (time.perf_counter() - tic) / 1e9)
        print(f"fp32 product {rows}x{size_in}x{size_out}: torch {rates[0]:.0f} GFLOP/s, oneDNN {rates[1]:.0f} GFLOP/s")
    for label, compiled, on_onednn in (("eager", False, False), ("eager oneDNN", False, True),
                                       ("torch.compile", True, False)):
        first, median = timed(build(compiled, on_onednn), arguments.steps)
        print(f"{label:>13}: first step {first:.2f} s, median step {median:.3f} s")
    from torch.profiler import profile

    for on_onednn in (False, True):
        step = build(False, on_onednn)
        step()
        with profile() as profiler:
            for _ in range(3):
                step()
        print("oneDNN linear layers" if on_onednn else "torch's kernels")
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))


if __name__ == "__main__":
    main()
