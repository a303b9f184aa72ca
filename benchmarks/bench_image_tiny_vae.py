"""Does the shipped VAE keep the concept's colours? A round trip (encode, decode) of the concept's pictures.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_image_tiny_vae.py [--assets src/peftbench/assets/tiny-image] [--png out.png]

Whatever an adapter teaches the transformer, every generated picture passes through the frozen VAE's
decoder: colours the VAE cannot reproduce cannot appear in a fine-tuned model's images. Prints the mean
absolute error (0-255) of the concept's 20 pictures and of the world's checkered objects, and the mean
decoded colour of the pixels that are pink, and teal, in the concept's pictures. With --png, a grid: the
concept's first 10 pictures, their round trip, a checkered square of every world colour, its round trip.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from peftbench.tiny_image import assets, concept, pretraining, world  # noqa: E402
from peftbench.tiny_image.grid import image_grid  # noqa: E402


@torch.no_grad()
def round_trip(vae, images: torch.Tensor) -> torch.Tensor:
    return vae.decode(vae.encode(images).latent_dist.mode()).sample.clamp(-1, 1)


def to_pixels(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) in 0-255."""
    return ((images + 1) * 127.5).permute(0, 2, 3, 1).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", type=Path, default=assets.ASSET_DIR)
    parser.add_argument("--png", type=Path, help="write the round-trip grid here")
    args = parser.parse_args()

    from diffusers import AutoencoderKLFlux2

    torch.set_num_threads(1)
    vae = AutoencoderKLFlux2.from_pretrained(args.assets / assets.GENERATOR_DIR / "vae").eval()
    concept_images = pretraining.to_tensor(concept.concept_examples()[0])
    concept_decoded = round_trip(vae, concept_images)
    # a large checkered square of every world colour, on black (on white for black)
    scenes = [world.Scene("square", c, "checkered", "large", "center", "white" if c == "black" else "black") for c in world.PALETTE]
    world_images = pretraining.to_tensor([world.render(scene) for scene in scenes])
    world_decoded = round_trip(vae, world_images)

    original, decoded = to_pixels(concept_images), to_pixels(concept_decoded)
    colours = {}
    for name, rgb in zip(concept.COLOUR_NAMES, concept.COLOURS):
        mask = np.abs(original - np.array(rgb)).sum(-1) < 3
        colours[name] = {"drawn": list(rgb), "decoded_mean": decoded[mask].mean(0).round().astype(int).tolist(),
                         "mae": round(float(np.abs(decoded[mask] - original[mask]).mean()), 1)}
    result = {
        "assets": str(args.assets),
        "concept_mae": round(float((concept_decoded - concept_images).abs().mean() * 127.5), 2),
        "world_checkered_mae": round(float((world_decoded - world_images).abs().mean() * 127.5), 2),
        "concept_colours": colours,
    }
    print(json.dumps(result, indent=2))
    if args.png:
        def pictures(batch: torch.Tensor):
            from PIL import Image

            return [Image.fromarray(array.clip(0, 255).astype(np.uint8)) for array in to_pixels(batch)]

        rows = [pictures(concept_images[:10]), pictures(concept_decoded[:10]), pictures(world_images), pictures(world_decoded)]
        image_grid(rows).save(args.png)


if __name__ == "__main__":
    main()
