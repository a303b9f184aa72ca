"""Training throughput: peftbench's training loop vs a bare PyTorch + peft loop.

Both train the same LoRA adapter on the same base model with the same batches (the task's length-bucketed
batches for the same seed), the same optimizer and the same number of steps; rounds alternate between the two
(and which goes first) to spread machine noise. The bare loop gets its batches pre-built (no tokenization while timed), so the
difference is everything the engine adds: batching, scheduler, clipping, method hooks, bookkeeping.

    .venv/bin/python benchmarks/bench_throughput.py [--task math-tiny] [--steps 30] [--rounds 3] [--threads 2]
        [--model-id FOLDER]

Prints tokens/s of each loop and the engine's relative throughput (target: at least 0.90).
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch
from peft import LoraConfig, get_peft_model

from peftbench.hardware import resolve_use_amp
from peftbench.tasks import get_task
from peftbench.training.methods import MethodSupport
from peftbench.training.train import seed_everything, train


def fresh_model(task, config, device):
    seed_everything(config.seed)
    base = task.load_model(config, device)
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                           "up_proj", "down_proj"], task_type="CAUSAL_LM")
    return get_peft_model(base, lora)


def engine_tokens_per_second(task, data, processor, config, device) -> float:
    model = fresh_model(task, config, device)
    outcome = train(model=model, task=task, data=data, processor=processor, config=config, device=device,
                    support=MethodSupport(), show_progress=False)
    assert outcome.status == "success", outcome.error_msg
    return outcome.train_units / outcome.train_seconds


def bare_tokens_per_second(task, data, processor, config, device) -> float:
    model = fresh_model(task, config, device)
    stream = task.train_batches(data.train, processor, config, seed=config.seed)
    batches = [next(stream) for _ in range(config.max_steps)]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], **config.optimizer_kwargs)
    model.train()
    tokens = 0
    tic = time.perf_counter()
    for batch in batches:
        inputs = {k: v.to(device) for k, v in batch.inputs.items()}
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.use_amp):
            loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_norm_clip)
        optimizer.step()
        loss.item()  # the engine reads the loss every step too (divergence check, progress)
        tokens += batch.num_units
    return tokens / (time.perf_counter() - tic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="math-tiny")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--model-id", default=None, help="Another base model folder (default: the task's).")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    task = get_task(args.task)
    overrides = {"max_steps": args.steps, "eval_steps": args.steps, "valid_size": 0, "train_size": 2000}
    if args.model_id:
        overrides["model_id"] = args.model_id
    config = task.build_config(overrides=overrides)
    # the bare loop runs torch's own fp32 kernels, so the engine does too; precision as a run would decide it
    config = replace(config, use_amp=resolve_use_amp(config.use_amp, config.device)[0], cpu_matmul="torch")
    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    data = task.load_data(config)
    processor = task.load_processor(config)

    engine, bare = [], []
    for round_index in range(args.rounds):
        # alternate which loop goes first, so that neither always meets a cold allocator or cache
        if round_index % 2 == 0:
            engine.append(engine_tokens_per_second(task, data, processor, config, device))
            bare.append(bare_tokens_per_second(task, data, processor, config, device))
        else:
            bare.append(bare_tokens_per_second(task, data, processor, config, device))
            engine.append(engine_tokens_per_second(task, data, processor, config, device))
        print(f"round {round_index + 1}: engine {engine[-1]:,.0f} tok/s, bare loop {bare[-1]:,.0f} tok/s")
    print(f"task {args.task}, model {config.model_id}, batch {config.batch_size}, steps {args.steps}, "
          f"use_amp {config.use_amp}, device {device}, torch threads {torch.get_num_threads()}")
    # best of N is the figure least disturbed by other processes (as timeit's minimum); the median is shown too
    for label, pick in (("best", max), ("median", statistics.median)):
        ratio = pick(engine) / pick(bare)
        print(f"{label}: engine {pick(engine):,.0f} tok/s, bare loop {pick(bare):,.0f} tok/s, engine/bare = {ratio:.3f} "
              f"({'within' if ratio >= 0.9 else 'NOT within'} 10%)")


if __name__ == "__main__":
    main()
