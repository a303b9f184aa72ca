"""Image similarity as PEFT's image benchmark defines it: DINOv2 features, the CLS token, L2-normalised.

The model is any folder or hub id that `transformers.AutoModel` and `AutoImageProcessor` load (a `Dinov2Model`
and its image processor for the real benchmark), with the processor's default preprocessing.
"""

from __future__ import annotations

from typing import Any

from peftbench.config import ConfigError


def check_vision_model(model_id: str, key: str = "dino_model_id") -> None:
    """Fail before training unless `model_id` is a vision model with an image processor (names the key)."""
    from transformers import AutoConfig, AutoImageProcessor

    try:
        model_config = AutoConfig.from_pretrained(model_id)
    except (OSError, ValueError) as error:
        raise ConfigError(f"'{key}': {model_id} cannot be loaded as a transformers model: {error}", key=key) from None
    model_type = getattr(model_config, "model_type", "?")
    # a vision backbone's config describes its input images; a language model's does not
    if not hasattr(model_config, "num_channels") or not hasattr(model_config, "image_size"):
        raise ConfigError(
            f"'{key}': {model_id} is a {model_type!r} model, not a vision model (the similarity is the CLS feature "
            "of an image model such as Dinov2Model, with its image processor)", key=key,
        )
    try:
        AutoImageProcessor.from_pretrained(model_id)
    except (OSError, ValueError) as error:
        raise ConfigError(f"'{key}': {model_id} has no image processor AutoImageProcessor loads: {error}", key=key) from None


def load_similarity_model(model_id: str, device: Any) -> tuple[Any, Any]:
    """(image processor, model in eval mode on `device`)."""
    from transformers import AutoImageProcessor, AutoModel

    processor = AutoImageProcessor.from_pretrained(model_id)
    model = AutoModel.from_pretrained(model_id).to(device)
    model.eval()
    return processor, model


def image_features(images: list, processor: Any, model: Any, batch_size: int):
    """L2-normalised CLS features of PIL images, one row per image."""
    import torch

    features = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            inputs = processor(images=images[start : start + batch_size], return_tensors="pt").to(model.device)
            cls = model(**inputs).last_hidden_state[:, 0]
            features.append(torch.nn.functional.normalize(cls.float(), dim=-1))
    return torch.cat(features, dim=0)


def pairwise_cosine(images_a: list, images_b: list, processor: Any, model: Any, batch_size: int) -> list[float]:
    """The cosine similarity of each image of `images_a` with the image at the same position in `images_b`."""
    a = image_features(images_a, processor, model, batch_size)
    b = image_features(images_b, processor, model, batch_size)
    return (a * b).sum(dim=-1).tolist()
