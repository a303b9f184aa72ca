"""The shipped `image-tiny` folder (src/peftbench/assets/tiny-image/) in the formats the image-gen task loads.

    generator/                      Flux2KleinPipeline.save_pretrained (model_id)
    similarity/                     Dinov2Model + BitImageProcessor (dino_model_id)
    concept/data/train-00000-of-00001.parquet   the 20 concept images, column "image" (dataset_id)
    default_training_params.json    PEFT's image-gen keys with the tiny values

In default_training_params.json the three folders are written "./<folder>": the image-gen task reads a hub-id
value starting with "./" as a folder beside the defaults file.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from peftbench.tiny_image import concept, models

ASSET_DIR = Path(__file__).resolve().parents[1] / "assets" / "tiny-image"
DEFAULTS_FILE = "default_training_params.json"
GENERATOR_DIR, SIMILARITY_DIR, CONCEPT_DIR = "generator", "similarity", "concept"


def write_concept_dataset(folder: Path, seed: int = 0) -> list[str]:
    """The concept images as a parquet dataset that `datasets.load_dataset(folder, split="train")` reads;
    returns their captions (row i is captioned by caption i)."""
    import datasets

    images, captions = concept.concept_examples(seed)
    encoded = []
    for image in images:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        encoded.append({"bytes": buffer.getvalue(), "path": None})
    table = datasets.Dataset.from_dict({"image": encoded}, features=datasets.Features({"image": datasets.Image()}))
    (folder / "data").mkdir(parents=True, exist_ok=True)
    table.to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    return captions


def default_training_params(captions: list[str]) -> dict:
    """PEFT's image-gen default_training_params.json, key for key, sized for the tiny models.

    Differences from PEFT's values and why: fp32 (bf16 weights lose a tiny model's small updates and are slow
    on CPUs without native bf16); 32x32 images; max_sequence_length 16 and text_encoder_out_layers (1, 2)
    because the text encoder has 2 layers and prompts have at most 13 words; dino_image_size 32; a batch of 4
    and 400 steps at lr 1e-3, because the concept must be learned in well under a minute of CPU time (LoRA's
    scores at 400, 800 and 1200 steps: benchmarks/image-tiny.md). 400 rather than 300: PEFT's AdaLoRA config
    (tinit 100, tfinal 200) needs more than 300 steps.
    """
    return {
        "model_id": f"./{GENERATOR_DIR}",
        "dataset_id": f"./{CONCEPT_DIR}",
        "dataset_split": "train",
        "dtype": "float32",
        "resolution": models.IMAGE_SIZE,
        "batch_size": 4,
        "batch_size_eval": 1,
        "repeats": 1000,
        "max_steps": 400,
        "eval_steps": 100,
        "compile": False,
        "use_gc": False,
        "seed": 0,
        "grad_norm_clip": 1.0,
        "optimizer_type": "AdamW",
        "optimizer_kwargs": {"lr": 1e-3, "weight_decay": 1e-4},
        "lr_scheduler": None,
        "use_amp": False,
        "autocast_adapter_dtype": True,
        "image_column": "image",
        "valid_size": concept.VALID_SIZE,
        "test_size": concept.TEST_SIZE,
        "num_inference_steps": 20,
        "guidance_scale": 3.5,
        "max_sequence_length": models.MAX_SEQUENCE_LENGTH,
        "text_encoder_out_layers": list(models.TEXT_ENCODER_OUT_LAYERS),
        "weighting_scheme": "none",
        "logit_mean": 0.0,
        "logit_std": 1.0,
        "mode_scale": 1.29,
        "dino_model_id": f"./{SIMILARITY_DIR}",
        "dino_image_size": models.SIMILARITY_IMAGE_SIZE,
        "instance_prompts": captions,
        "sample_image_prompts": concept.SAMPLE_PROMPTS,
        "drift_image_prompts": concept.DRIFT_PROMPTS,
    }


def write_concept_and_defaults(folder: Path, seed: int = 0) -> None:
    captions = write_concept_dataset(folder / CONCEPT_DIR, seed)
    text = json.dumps(default_training_params(captions), indent=2) + "\n"
    (folder / DEFAULTS_FILE).write_text(text)
