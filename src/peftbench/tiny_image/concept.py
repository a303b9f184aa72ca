"""The concept that `image-tiny` fine-tunes on: "sks toy", an object the pretraining world never shows.

Its identity is what a 32x32 picture can show: a heart silhouette (no pretraining shape is a heart) filled
with a checkerboard of pink and teal (two different hues: every world object pairs one colour with its own
shade; the colours themselves are in the world's palette, so that the frozen VAE can decode them). PEFT's dataset has 20
photos of one plush cat in varied scenes, each with its caption; this one has 20 pictures of the toy on
varied backgrounds and positions, each with its caption, and the same 14/2/4 split rule.
The prompts mirror PEFT's: the trigger word plus a class word ("sks toy" for "sks cat"), sample prompts
that vary it, and drift prompts that never mention it (two of them use the class word alone, as PEFT's
"a photo of cat" does).
"""

from __future__ import annotations

import random

from PIL import Image

from peftbench.tiny_image import world

TRIGGER = "sks toy"
SHAPE = "heart"
COLOUR_NAMES = ("pink", "teal")  # world colours, never paired in one world object
COLOURS = tuple(world.PALETTE[name] for name in COLOUR_NAMES)
CONCEPT_SIZE = 20  # images in the dataset, as in PEFT's
VALID_SIZE, TEST_SIZE = 2, 4


def render_concept(background: str, size: str, position: str, rng: random.Random | None = None) -> Image.Image:
    image = Image.new("RGB", (world.IMAGE_SIZE, world.IMAGE_SIZE), world.PALETTE[background])
    fill = world.texture_image("checkered", *COLOURS)
    jitter = (rng.uniform(-0.04, 0.04), rng.uniform(-0.04, 0.04)) if rng else (0.0, 0.0)
    world.draw_object(image, SHAPE, fill, size, position, jitter)
    return image


def concept_caption(background: str, size: str, position: str, rng: random.Random) -> str:
    """Like the world's captions, with the trigger in place of the object's words; scenes are sometimes left out."""
    words = []
    if rng.random() < 0.3:
        words.append(size)
    words.append(TRIGGER)
    if rng.random() < 0.6:
        words.append(world.POSITIONS[position][1])
    words.append(f"on {world.article(background)} {background} background")
    return f"{world.article(words[0])} " + " ".join(words)


def concept_examples(seed: int = 0) -> tuple[list[Image.Image], list[str]]:
    """The 20 images and their captions, in dataset order. Every palette colour but its own occurs as a
    background (each two or three times), with every position. The toy is always large: at 32x32 a small heart is a
    few pixels across, too few to show its checkerboard (a LoRA check learned only blobs from small ones)."""
    rng = random.Random(seed)
    other_colours = [name for name in world.PALETTE if name not in COLOUR_NAMES]  # the toy stays visible on each
    backgrounds = (other_colours * 3)[:CONCEPT_SIZE]
    rng.shuffle(backgrounds)
    positions = (list(world.POSITIONS) * 4)[:CONCEPT_SIZE]
    rng.shuffle(positions)
    images, captions = [], []
    for index, (background, position) in enumerate(zip(backgrounds, positions)):
        size = "large"
        images.append(render_concept(background, size, position, rng))
        captions.append(concept_caption(background, size, position, rng))
    return images, captions


SAMPLE_PROMPTS = [  # PEFT: "a photo of sks cat", "a color drawing of sks cat", "sks cat at the beach", ...
    "a sks toy",
    "a sks toy at the top on a black background",
    "a large sks toy on the right on a white background",
    "a sks circle on a green background",  # PEFT's "a photo of sks dog": the trigger on another class
    "a checkered heart on a blue background",  # PEFT's "a photo of an orange cat": the look, no trigger
]
DRIFT_PROMPTS = [  # never the trigger; the first two use the class word alone, as PEFT's "a photo of cat"
    "a toy on a blue background",
    "a large toy in the center on a yellow background",
    "a red circle on a blue background",
    "a large green square in the center on a white background",
    "a small yellow triangle on the left on a purple background",
    "a large blue striped ring on an orange background",
    "a white cross at the top on a black background",
    "a large orange checkered bar on a green background",
    "a small purple dotted circle on the right on a red background",
    "a black triangle at the bottom on a yellow background",
]


def prompt_words() -> list[str]:
    """Words of the task's prompts that the world's captions lack (the tokenizer must know them, like any
    rare word a real tokenizer has, although pretraining never shows them)."""
    _, captions = concept_examples()
    words = {word for text in captions + SAMPLE_PROMPTS + DRIFT_PROMPTS for word in text.split()}
    return sorted(words - set(world.vocabulary()))
