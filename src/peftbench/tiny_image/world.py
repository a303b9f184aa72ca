"""The procedural image world of the offline `image-tiny` task: one object on a background, with a caption.

A scene is a few named attributes (shape, colour, texture, size, position of the object; background colour),
drawn with PIL at a small resolution and described by a caption built from the same attributes, so the
caption says exactly what is visible. Everything is deterministic from a seed. Captions may leave
attributes out (the picture still has them), as a user's prompt would, so that the generator also learns
to draw from short prompts such as the task's test prompts.

The concept object of the task (tiny_image/concept.py) never occurs here: its shape is none of these, and
its fill pairs two hues of the palette (pink and teal), where every object here pairs a colour with its own
shade. Its colours themselves are in the palette, so that the VAE and the generator learn to draw them: a
fine-tuning of a few hundred steps cannot teach a frozen VAE a colour it never decoded.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

IMAGE_SIZE = 32  # pixels per side of every generated image

# Colours an object or a background can have; each name is one word of the captions.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "orange": (245, 140, 30),
    "purple": (140, 60, 180),
    "pink": (250, 120, 190),
    "teal": (30, 185, 175),
}
# Silhouettes chosen to stay distinct at a few 4x4-pixel tokens wide.
SHAPES = ("circle", "square", "triangle", "cross", "ring", "bar")
TEXTURES = ("plain", "striped", "dotted", "checkered")
SIZES = {"small": 12, "large": 22}  # object extent in pixels
POSITIONS = {  # object centre as a fraction of the image side, and its caption phrase
    "center": ((0.5, 0.5), "in the center"),
    "left": ((0.3, 0.5), "on the left"),
    "right": ((0.7, 0.5), "on the right"),
    "top": ((0.5, 0.3), "at the top"),
    "bottom": ((0.5, 0.7), "at the bottom"),
}
# Each attribute of a caption is left out with this probability (the image still shows it).
OMIT_PROBABILITY = 0.2


@dataclass(frozen=True)
class Scene:
    shape: str
    colour: str
    texture: str
    size: str
    position: str
    background: str


def random_scene(rng: random.Random) -> Scene:
    """Any object on any other-coloured background."""
    colour = rng.choice(list(PALETTE))
    background = rng.choice([name for name in PALETTE if name != colour])
    return Scene(
        shape=rng.choice(SHAPES),
        colour=colour,
        texture=rng.choice(TEXTURES),
        size=rng.choice(list(SIZES)),
        position=rng.choice(list(POSITIONS)),
        background=background,
    )


def shade(rgb: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    """A darker (factor < 1) or lighter (> 1) version of a colour; white and black get a visible contrast."""
    if sum(rgb) > 600:
        factor = min(factor, 0.7)
    if sum(rgb) < 100:
        return tuple(min(255, c + 90) for c in rgb)
    return tuple(max(0, min(255, int(c * factor))) for c in rgb)


def shape_mask(shape: str, centre: tuple[float, float], extent: int, size: int = IMAGE_SIZE) -> Image.Image:
    """A 1-bit mask of the silhouette, `extent` pixels across, centred at `centre` (pixels)."""
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy = centre
    r = extent / 2
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        draw.ellipse(box, fill=255)
    elif shape == "square":
        draw.rectangle(box, fill=255)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=255)
    elif shape == "cross":
        arm = r / 2.6
        draw.rectangle((cx - r, cy - arm, cx + r, cy + arm), fill=255)
        draw.rectangle((cx - arm, cy - r, cx + arm, cy + r), fill=255)
    elif shape == "ring":
        draw.ellipse(box, fill=255)
        inner = r * 0.5
        draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=0)
    elif shape == "bar":
        draw.rectangle((cx - r, cy - r * 0.4, cx + r, cy + r * 0.4), fill=255)
    elif shape == "heart":  # the concept's silhouette (concept.py); never drawn in the pretraining world
        lobe = r * 0.55
        draw.ellipse((cx - r, cy - r * 0.8, cx - r + 2 * lobe, cy - r * 0.8 + 2 * lobe), fill=255)
        draw.ellipse((cx + r - 2 * lobe, cy - r * 0.8, cx + r, cy - r * 0.8 + 2 * lobe), fill=255)
        draw.polygon([(cx - r, cy - r * 0.8 + lobe), (cx + r, cy - r * 0.8 + lobe), (cx, cy + r)], fill=255)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return mask


def texture_image(texture: str, base: tuple[int, int, int], second: tuple[int, int, int], size: int = IMAGE_SIZE) -> Image.Image:
    """A full-size fill in the texture's pattern of the two colours (period 4 px: one token of the VAE grid)."""
    fill = Image.new("RGB", (size, size), base)
    draw = ImageDraw.Draw(fill)
    if texture == "plain":
        return fill
    for a in range(0, size, 4):
        for b in range(0, size, 4):
            if texture == "striped" and b == 0:
                draw.rectangle((0, a, size, a + 1), fill=second)
            elif texture == "dotted":
                draw.rectangle((b + 1, a + 1, b + 2, a + 2), fill=second)
            elif texture == "checkered" and (a // 4 + b // 4) % 2 == 0:
                draw.rectangle((b, a, b + 3, a + 3), fill=second)
    return fill


def object_fill(colour: str, texture: str) -> Image.Image:
    """A world object's fill: its colour, patterned with a darker shade of the same colour."""
    base = PALETTE[colour]
    return texture_image(texture, base, shade(base, 0.55))


def draw_object(
    image: Image.Image, shape: str, fill: Image.Image, size: str, position: str, jitter: tuple[float, float] = (0.0, 0.0)
) -> None:
    """Paste `fill` through the shape's mask onto `image`, in place."""
    (fx, fy), _ = POSITIONS[position]
    side = image.size[0]
    centre = ((fx + jitter[0]) * side, (fy + jitter[1]) * side)
    image.paste(fill, (0, 0), shape_mask(shape, centre, SIZES[size], side))


def render(scene: Scene, rng: random.Random | None = None) -> Image.Image:
    """The scene as an RGB image; `rng` adds a small position jitter (so no two pictures are pixel-identical)."""
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), PALETTE[scene.background])
    fill = object_fill(scene.colour, scene.texture)
    jitter = (rng.uniform(-0.04, 0.04), rng.uniform(-0.04, 0.04)) if rng else (0.0, 0.0)
    draw_object(image, scene.shape, fill, scene.size, scene.position, jitter)
    return image


def caption(scene: Scene, rng: random.Random | None = None, omit_probability: float = OMIT_PROBABILITY) -> str:
    """'a large red striped circle on the left on a blue background'; with `rng`, attributes other than the
    shape are left out at random."""

    def keep() -> bool:
        return rng is None or rng.random() >= omit_probability

    words = []
    if keep():
        words.append(scene.size)
    if keep():
        words.append(scene.colour)
    if scene.texture != "plain" and keep():
        words.append(scene.texture)
    words.append(scene.shape)
    if keep():
        words.append(POSITIONS[scene.position][1])
    if keep():
        words.append(f"on {article(scene.background)} {scene.background} background")
    return f"{article(words[0])} " + " ".join(words)


def article(next_word: str) -> str:
    return "an" if next_word[0] in "aeiou" else "a"


def pretraining_examples(count: int, seed: int) -> list[tuple[Scene, Image.Image, str]]:
    """`count` (scene, image, caption) triples of the world, deterministic from `seed`."""
    rng = random.Random(seed)
    examples = []
    for _ in range(count):
        scene = random_scene(rng)
        examples.append((scene, render(scene, rng), caption(scene, rng)))
    return examples


def vocabulary() -> list[str]:
    """Every word a caption of the world can contain."""
    words = {"a", "an", "on", "background", "in", "the", "at"}
    words |= set(PALETTE) | set(SHAPES) | set(TEXTURES) | set(SIZES)
    for _, phrase in POSITIONS.values():
        words |= set(phrase.split())
    return sorted(words)
