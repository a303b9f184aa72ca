"""Would longer pretraining make shapes learnable? Continue the shipped generator's training and look.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_image_tiny_longer.py --steps 2200 [--out results/image-tiny-longer]

Loads the shipped pipeline, trains its transformer and text encoder for `--steps` more steps as
scripts/pretrain_tiny_image.py does (fresh world pictures from another seed; a new 100-step warm-up and
cosine decay from --lr), and writes the same 48 prompts' generations before and
after as PNG grids, with the loss curve. Nothing shipped is changed.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from peftbench.tiny_image import assets, models, pretraining, world  # noqa: E402
from peftbench.tiny_image.grid import image_grid  # noqa: E402


def sample(pipe, prompts):
    return pipe(
        prompt=prompts, height=models.IMAGE_SIZE, width=models.IMAGE_SIZE, num_inference_steps=20, guidance_scale=3.5,
        max_sequence_length=models.MAX_SEQUENCE_LENGTH, text_encoder_out_layers=models.TEXT_ENCODER_OUT_LAYERS,
        generator=torch.Generator().manual_seed(0),
    ).images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2200)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--images", type=int, default=30000)
    parser.add_argument("--out", type=Path, default=Path("results/image-tiny-longer"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    from diffusers import Flux2KleinPipeline

    args.out.mkdir(parents=True, exist_ok=True)
    pipe = Flux2KleinPipeline.from_pretrained(assets.ASSET_DIR / assets.GENERATOR_DIR)
    pipe.set_progress_bar_config(disable=True)
    rng = random.Random(3)  # the 48 prompts that scripts/pretrain_tiny_image.py samples (seed 0 + 3)
    prompts = [world.caption(world.random_scene(rng)) for _ in range(48)]
    before = sample(pipe, prompts)

    examples = world.pretraining_examples(args.images, seed=7)
    images = pretraining.to_tensor([image for _, image, _ in examples])
    with torch.no_grad():
        raw = pretraining.encode_latents(pipe.vae, images)
        mean = pipe.vae.bn.running_mean.view(1, -1, 1, 1)
        std = torch.sqrt(pipe.vae.bn.running_var.view(1, -1, 1, 1) + pipe.vae.config.batch_norm_eps)
        latents = (raw - mean) / std
    input_ids, attention_mask = pretraining.tokenize(pipe.tokenizer, [text for _, _, text in examples])
    empty = pretraining.tokenize(pipe.tokenizer, [""])
    started, cpu_started = time.time(), time.process_time()
    log = pretraining.train_generator(
        pipe.transformer, pipe.text_encoder, pipe.scheduler, latents, input_ids, attention_mask, (empty[0][0], empty[1][0]),
        args.steps, 32, args.lr, seed=7,
    )
    after = sample(pipe, prompts)
    image_grid([before[i : i + 12] for i in range(0, 48, 12)] + [after[i : i + 12] for i in range(0, 48, 12)], scale=3).save(
        args.out / "before_after.png"
    )
    result = {"steps": args.steps, "lr": args.lr, "final_loss": log.final, "loss_curve": log.curve,
              "wall_seconds": round(time.time() - started, 1), "cpu_seconds": round(time.process_time() - cpu_started, 1),
              "prompts": prompts}
    (args.out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("loss_curve", "prompts")}))


if __name__ == "__main__":
    main()
