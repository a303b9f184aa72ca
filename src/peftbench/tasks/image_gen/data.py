"""The concept dataset: loading, checking, PEFT's split and the training images' preprocessing.

PEFT's definitions: row i is captioned by `instance_prompts[i]` (a dataset with another row count is an
error); the split is `np.random.seed(0)`'s shuffle of `arange(rows)`, then the first rows train, the next
`valid_size` validate and the next `test_size` test. Training images are RGB, EXIF-transposed, resized
(squashed, no crop) to resolution x resolution bilinearly, scaled to [-1, 1]; valid and test images stay as they
are, the references the generated images are compared with.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from peftbench.config import ConfigError
from peftbench.tasks.base import TaskData, check_local_source

SPLIT_SEED = 0  # PEFT's split is the same for every run, whatever the training seed


def _open_image(value: Any, row: int, config) -> Any:
    """A dataset cell as an RGB PIL image (EXIF orientation applied); undecodable data names the row."""
    import io

    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        if isinstance(value, Image.Image):
            image = value
        elif isinstance(value, dict) and (value.get("bytes") or value.get("path")):
            image = Image.open(io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"])
        else:
            raise ValueError(f"not an image but {type(value).__name__}")
        image.load()
        return ImageOps.exif_transpose(image).convert("RGB")
    except (OSError, ValueError, UnidentifiedImageError, SyntaxError) as error:
        raise ConfigError(
            f"'dataset_id' ({config.dataset_id}): row {row} of column '{config.image_column}' is not a decodable "
            f"image ({type(error).__name__}: {error})", key="dataset_id",
        ) from None


def load_concept_rows(config) -> list[dict[str, Any]]:
    """Every dataset row as {"image": PIL image, "prompt": its caption}, checked: the image column exists, the
    row count equals the number of instance_prompts, every image decodes."""
    import datasets

    source = config.dataset_id
    check_local_source(source, "dataset_id")  # a hub id: offline mode at once when the hub cannot be reached
    try:
        dataset = datasets.load_dataset(source, split=config.dataset_split)
    except (ConnectionError, FileNotFoundError, ValueError) as error:  # offline, no such dataset or split
        raise ConfigError(f"'dataset_id': {source} (split {config.dataset_split!r}) cannot be loaded: {error}",
                          key="dataset_id") from None
    dataset = dataset.cast_column(config.image_column, datasets.Image(decode=False)) \
        if config.image_column in dataset.column_names else dataset
    if config.image_column not in dataset.column_names:
        raise ConfigError(
            f"'image_column': {config.image_column!r} is not a column of 'dataset_id' ({source}); its columns: "
            f"{', '.join(dataset.column_names)}", key="image_column",
        )
    if len(dataset) != len(config.instance_prompts):
        raise ConfigError(
            f"'dataset_id' ({source}) has {len(dataset)} rows but 'instance_prompts' has {len(config.instance_prompts)} "
            "captions: row i is captioned by instance_prompts[i], so the two must match", key="instance_prompts",
        )
    cells = dataset[config.image_column]
    return [{"image": _open_image(cell, i, config), "prompt": prompt}
            for i, (cell, prompt) in enumerate(zip(cells, config.instance_prompts))]


def split_indices(num_rows: int, valid_size: int, test_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PEFT's split: np.random.seed(0), shuffle arange(num_rows); train first, then valid, then test."""
    order = np.arange(num_rows)
    np.random.RandomState(SPLIT_SEED).shuffle(order)  # the same draws as np.random.seed(0) + shuffle
    train_size = num_rows - valid_size - test_size
    return order[:train_size], order[train_size : train_size + valid_size], order[train_size + valid_size :]


def load_task_data(config) -> TaskData:
    rows = load_concept_rows(config)
    train, valid, test = split_indices(len(rows), config.valid_size, config.test_size)
    return TaskData(
        train=[rows[i] for i in train],
        valid=[rows[i] for i in valid],
        test=[rows[i] for i in test],
        forgetting=[{"prompt": prompt} for prompt in config.drift_image_prompts],
        info={"dataset_id": config.dataset_id, "dataset_split": config.dataset_split,
              "split": {"train": train.tolist(), "valid": valid.tolist(), "test": test.tolist()}},
    )


def training_pixels(image, resolution: int):
    """A training image as PEFT feeds it to the VAE: squashed to resolution^2 (bilinear), [-1, 1], CHW float32."""
    import torch
    from PIL import Image

    resized = image.resize((resolution, resolution), Image.Resampling.BILINEAR)
    array = np.asarray(resized, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1) * 2.0 - 1.0


