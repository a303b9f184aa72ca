"""The image-generation task's parameters: the keys of PEFT's image-gen `default_training_params.json`.

This module imports no torch. The defaults themselves are a JSON file in PEFT's format (the task's
`defaults_file`), so that a task with other models and data (image-tiny) is that file and a few lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from peftbench.config import TrainConfig, param

# diffusers' timestep-density / loss-weighting schemes that PEFT's benchmark accepts
WEIGHTING_SCHEMES = ("none", "sigma_sqrt", "logit_normal", "mode")


@dataclass
class ImageGenConfig(TrainConfig):
    # PEFT's script merges training_params.json over its defaults shallowly: an `optimizer_kwargs` with only `lr`
    # replaces the whole dict, so AdamW's default weight decay (0.01) replaces the default 1e-4. Kept, so that its
    # configs train as published; each result records the optimizer's actual hyperparameters beside it.
    nested_keys: ClassVar[tuple[str, ...]] = ()

    # PEFT's script keeps AdaLoRA's total_step from adapter_config.json (750, its max_steps) at any max_steps
    adalora_total_step: str = param("config", help="AdaLoRA's rank schedule: 'config' (the suite's) or 'max_steps'")
    dataset_id: str = param("", help="concept images: a hub dataset id or a local folder that datasets.load_dataset reads")
    dataset_split: str = param("train", help="the dataset's split")
    image_column: str = param("image", help="the dataset's image column")
    resolution: int = param(512, help="training and generated images are resolution x resolution pixels")
    repeats: int = param(1000, help="the training order is this many concatenated permutations of the training images")
    valid_size: int = param(2, help="validation images (drawn as PEFT draws them)")
    test_size: int = param(4, help="test images")
    # PEFT's 3; more images per test prompt shrink the generation noise of the test score, cheaply at small sizes
    test_repeats: int = param(3, help="images generated per test prompt, from one generator")
    num_inference_steps: int = param(20, help="denoising steps of each generated image")
    guidance_scale: float = param(3.5, help="classifier-free guidance scale (negative prompt: the empty prompt)")
    max_sequence_length: int = param(512, help="prompt tokens given to the text encoder")
    text_encoder_out_layers: list[int] = param([10, 20, 30], help="text-encoder hidden layers stacked into the prompt embedding")
    weighting_scheme: str = param("none", help="timestep density and loss weighting: " + ", ".join(WEIGHTING_SCHEMES))
    logit_mean: float = param(0.0, help="logit_normal weighting: mean")
    logit_std: float = param(1.0, help="logit_normal weighting: standard deviation")
    mode_scale: float = param(1.29, help="mode weighting: scale")
    dino_model_id: str = param("facebook/dinov2-base", help="similarity model: a hub id or local folder AutoModel and AutoImageProcessor load")
    dino_image_size: int = param(224, help="kept for PEFT's configs; unused there too (the image processor's own size applies)")
    instance_prompts: list[str] = param([], help="the caption of each dataset row, in row order (one per row)")
    sample_image_prompts: list[str] = param([], help="prompts whose images are only saved, after the run")
    drift_image_prompts: list[str] = param([], help="prompts unrelated to the concept, for drift")

    def validate(self) -> None:
        super().validate()
        bad = self.bad
        for key in ("dataset_id", "dataset_split", "image_column", "dino_model_id"):
            if not getattr(self, key):
                raise bad(key, "must not be empty")
        for key in ("resolution", "repeats", "test_repeats", "num_inference_steps", "max_sequence_length", "dino_image_size"):
            if getattr(self, key) <= 0:
                raise bad(key, "must be a positive integer")
        for key in ("valid_size", "test_size"):
            if getattr(self, key) < 0:
                raise bad(key, "must be an integer >= 0")
        if not self.text_encoder_out_layers:
            raise bad("text_encoder_out_layers", "must list at least one layer")
        if self.weighting_scheme not in WEIGHTING_SCHEMES:
            raise bad("weighting_scheme", f"valid: {', '.join(WEIGHTING_SCHEMES)}")
        if not self.instance_prompts:
            raise bad("instance_prompts", "must hold one caption per dataset row")
        if len(self.instance_prompts) <= self.valid_size + self.test_size:
            raise bad("instance_prompts", f"needs more than valid_size + test_size = {self.valid_size + self.test_size} "
                      "rows, so that at least one is left to train on")
