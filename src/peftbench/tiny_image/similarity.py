"""Scoring with the in-house similarity model as PEFT scores with DINOv2, and validating that model.

The feature is the CLS token of `AutoModel`'s `last_hidden_state`, L2-normalised, after `AutoImageProcessor`'s
default preprocessing (PEFT's definition). The validation asks what the benchmark needs: two pictures of
the same object in different scenes must score higher than two pictures of different objects (ROC AUC over
all such pairs of held-out pictures), for the world's objects and for the concept against them.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from PIL import Image

from peftbench.tiny_image import concept, world


@torch.no_grad()
def features(model, processor, images: list[Image.Image], batch_size: int = 256) -> torch.Tensor:
    out = []
    for start in range(0, len(images), batch_size):
        pixels = processor(images=[im.convert("RGB") for im in images[start : start + batch_size]], return_tensors="pt")
        cls = model(pixel_values=pixels["pixel_values"]).last_hidden_state[:, 0]
        out.append(torch.nn.functional.normalize(cls.float(), dim=-1))
    return torch.cat(out)


def roc_auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a positive pair scores above a negative pair), ties counting half."""
    from sklearn.metrics import roc_auc_score

    labels = np.concatenate([np.ones(len(positive)), np.zeros(len(negative))])
    return float(roc_auc_score(labels, np.concatenate([positive, negative])))


def object_pairs(objects: int, scenes_per_object: int, seed: int):
    """Held-out pictures: `objects` distinct world objects (shape, colour, texture), each drawn in
    `scenes_per_object` different scenes (background, size, position), with each picture's object index."""
    rng = random.Random(seed)
    combos = [(s, c, t) for s in world.SHAPES for c in world.PALETTE for t in world.TEXTURES]
    rng.shuffle(combos)
    images, owners = [], []
    for index, (shape, colour, texture) in enumerate(combos[:objects]):
        backgrounds = rng.sample([name for name in world.PALETTE if name != colour], scenes_per_object)
        for background in backgrounds:
            scene = world.Scene(shape, colour, texture, rng.choice(list(world.SIZES)), rng.choice(list(world.POSITIONS)), background)
            images.append(world.render(scene, rng))
            owners.append(index)
    return images, owners


def pair_scores(feats: torch.Tensor, owners: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Cosines of same-owner pairs and of different-owner pairs (each unordered pair once)."""
    cos = (feats @ feats.T).numpy()
    owner = np.array(owners)
    upper = np.triu(np.ones_like(cos, dtype=bool), k=1)
    same = (owner[:, None] == owner[None, :]) & upper
    different = (owner[:, None] != owner[None, :]) & upper
    return cos[same], cos[different]


def validate(model, processor, seed: int = 12345, objects: int = 120, scenes_per_object: int = 3) -> dict:
    """ROC AUCs of same-object vs different-object pairs: among held-out world objects, and for the concept
    (its 20 dataset pictures, never seen in training) against those objects."""
    images, owners = object_pairs(objects, scenes_per_object, seed)
    concept_images, _ = concept.concept_examples()
    feats = features(model, processor, images + concept_images)
    world_feats = feats[: len(images)]
    positive, negative = pair_scores(world_feats, owners)
    # only the pairs that involve the concept: concept-concept against concept-world
    concept_feats = feats[len(images) :]
    concept_same = (concept_feats @ concept_feats.T).numpy()[np.triu_indices(len(concept_images), k=1)]
    concept_vs_world = (concept_feats @ world_feats.T).numpy().ravel()
    return {
        "world_auc": round(roc_auc(positive, negative), 4),
        "world_pairs": [len(positive), len(negative)],
        "world_same_mean": round(float(positive.mean()), 4),
        "world_different_mean": round(float(negative.mean()), 4),
        "concept_auc": round(roc_auc(concept_same, concept_vs_world), 4),
        "concept_pairs": [len(concept_same), len(concept_vs_world)],
        "concept_same_mean": round(float(concept_same.mean()), 4),
        "concept_vs_world_mean": round(float(concept_vs_world.mean()), 4),
        "objects": objects,
        "scenes_per_object": scenes_per_object,
        "seed": seed,
    }
