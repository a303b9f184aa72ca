"""`image-gen`: PEFT's image-generation benchmark. FLUX.2-klein-base-4B learns "sks cat" from 14 photos; the
test score is the DINOv2 similarity of generated images to each prompt's own held-out photo, and drift measures
how much images of unrelated prompts change. Every definition is PEFT's (docs/image-gen.md).

Every hub id (`model_id`, `dataset_id`, `dino_model_id`) may be a local folder in the same format. The defaults
are a JSON file in PEFT's `default_training_params.json` format (`defaults_file`): a task with other models and
data is a subclass naming another file.

The images go to the run's `artifacts_dir` (set by the runner): the test images with each prompt's reference
photo, the drift pairs (adapter disabled and enabled, same prompt, same starting noise) and the sample images;
`after_run` lists them for the result file, where the report's gallery finds them.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Optional

from peftbench.tasks.base import (
    EvalResult, ForgettingMeasure, Rows, Task, TaskData, TrainBatch, check_local_source, hub_offline, is_local_source,
    offline_in_loaded_libraries,
)
from peftbench.tasks.image_gen import data as concept_data
from peftbench.tasks.image_gen.config import ImageGenConfig
from peftbench.timing import PREPARE, TEST, TRAIN

# PEFT's seeds, offset from the run's seed so that evaluation never reuses training's noise
VALID_SEED_OFFSET = 100_000  # the generator is re-seeded for every validation
TEST_SEED_OFFSET = 100_000  # one generator for all test repeats
DRIFT_SEED_OFFSET = 100_000_000  # the same for the base model's and the adapter's images
SAMPLE_SEED_OFFSET = 100_000  # one generator for all the sample prompts, in order
LOCATION_KEYS = ("model_id", "dataset_id", "dino_model_id")  # a hub id or a local folder in the same format
# Saved reference photos are shrunk to this many pixels on their longer side (the originals stay in the dataset).
REFERENCE_MAX_SIDE = 512


class ImageGenTask(Task):
    name = "image-gen"
    description = ("PEFT's image benchmark: FLUX.2-klein-base-4B learns a concept from 14 photos; DINOv2 similarity "
                   "and drift (GPU)")
    config_class = ImageGenConfig
    score_name = "dino_similarity"
    higher_is_better = True
    forgetting_name = "drift"
    forgetting_higher_is_better = False
    throughput_unit = "images"
    suite_memory_scope = "train"  # PEFT resets the peak after caching and after each validation
    # PEFT's train() starts its clock after loading the data and the similarity model, before the caches
    suite_train_phases = (PREPARE, TRAIN, TEST)
    defaults_file: Path = Path(__file__).with_name("default_training_params.json")

    def __init__(self) -> None:
        self._images: dict[str, Any] = {}  # what was saved under artifacts_dir, for the result file

    # ---- configuration ----
    def default_params(self) -> dict[str, Any]:
        """The defaults file's keys; a hub-id key whose value starts with "./" is a folder beside that file (so that
        a package can ship its models and data next to its defaults)."""
        from peftbench.config import read_json_file

        defaults = read_json_file(self.defaults_file, "image task defaults")
        for key in LOCATION_KEYS:
            value = defaults.get(key)
            if isinstance(value, str) and value.startswith("./"):
                defaults[key] = str((Path(self.defaults_file).parent / value).resolve())
        return defaults

    def check_inputs(self, config) -> None:
        """Before anything trains: the dataset (rows = captions, every image decodes) and the similarity model
        (a vision model). Both are read where they are local folders or already cached."""
        from peftbench.evaluation.similarity import check_vision_model

        for key in LOCATION_KEYS:  # a hub id: offline mode at once when the hub cannot be reached (no retries)
            if not is_local_source(getattr(config, key)):
                check_local_source(getattr(config, key), key)
        if hub_offline():
            offline_in_loaded_libraries()
        if is_local_source(config.dataset_id):  # a hub dataset is checked when the run loads it
            concept_data.load_concept_rows(config)
        check_vision_model(config.dino_model_id)

    # ---- data, companions, model ----
    def load_data(self, config) -> TaskData:
        return concept_data.load_task_data(config)

    def load_processor(self, config):
        from peftbench.tasks.image_gen.generation import load_companions

        return load_companions(config)

    def load_model(self, config, device):
        from peftbench.tasks.image_gen.generation import load_transformer

        return load_transformer(config, device)

    def before_training(self, model, processor, data: TaskData, config) -> None:
        """PEFT's caches: every prompt's embedding and every training image's latent, once."""
        from peftbench.tasks.image_gen.generation import NEGATIVE_PROMPT, cache_latents, cache_prompts, place

        place(processor, model)
        processor.train_prompts = [row["prompt"] for row in data.train]
        prompts = [*processor.train_prompts, *(row["prompt"] for row in (*data.valid, *data.test)),
                   *config.drift_image_prompts, *config.sample_image_prompts, NEGATIVE_PROMPT]
        cache_prompts(processor, prompts, config)
        pixels = [concept_data.training_pixels(row["image"], config.resolution) for row in data.train]
        cache_latents(processor, pixels, config)

    # ---- training ----
    def train_batches(self, rows: Rows, processor, config, seed: int) -> Iterator[TrainBatch]:
        from peftbench.tasks.image_gen.generation import training_batches

        if processor.train_latents is None:
            raise RuntimeError("before_training must build the caches before the first batch")
        for inputs in training_batches(processor, config, seed):
            yield TrainBatch(inputs={**inputs, "parts": processor, "config": config},
                             num_units=int(inputs["latents"].shape[0]))

    def compute_loss(self, model, batch: TrainBatch):
        from peftbench.tasks.image_gen.generation import flow_matching_loss

        inputs = batch.inputs
        return flow_matching_loss(model, inputs["parts"].pipeline, inputs, inputs["config"])

    # ---- evaluation ----
    def evaluate(self, model, processor, rows: Rows, config, desc: str) -> EvalResult:
        """The mean DINO cosine of each generated image with its prompt's own reference photo, over the rows and
        (test) `test_repeats` images each from one generator; valid: 1 image each, the generator re-seeded every time."""
        import torch

        from peftbench.evaluation.similarity import pairwise_cosine
        from peftbench.tasks.image_gen.generation import generate, pipeline_with

        model.eval()
        repeats, offset = (config.test_repeats, TEST_SEED_OFFSET) if desc == "test" else (1, VALID_SEED_OFFSET)
        generator = torch.Generator(device=processor.device).manual_seed(config.seed + offset)
        prompts = [row["prompt"] for row in rows]
        references = [row["image"] for row in rows]
        per_repeat: list[list[float]] = []
        generated: list[list] = []
        with pipeline_with(processor, model) as pipeline:
            for _ in range(repeats):
                images = []
                for start in range(0, len(prompts), config.batch_size_eval):
                    images += generate(pipeline, processor, prompts[start : start + config.batch_size_eval],
                                       generator, config)
                generated.append(images)
                per_repeat.append(pairwise_cosine(images, references, processor.similarity_processor,
                                                  processor.similarity_model, config.batch_size_eval))
        score = sum(sum(r) / len(r) for r in per_repeat) / repeats if prompts else float("nan")
        if desc == "test":
            self._save_test_images(prompts, references, generated, per_repeat)
        return EvalResult(score=score, per_item_correct=[], predictions=[])

    def forgetting_loss(self, model, processor, rows: Rows, config) -> float:
        raise NotImplementedError("image-gen measures drift by comparing images (measure_forgetting)")

    def forgetting_reference(self, model, processor, rows: Rows, config) -> Any:
        return None  # PEFT: full fine-tuning has no base model to compare with afterwards; its drift is NaN

    def measure_forgetting(self, model, processor, rows: Rows, config, *,
                           adapter_disabled: Optional[Callable[[], ContextManager]] = None,
                           reference: Any = None) -> ForgettingMeasure:
        """Drift: the drift prompts' images with the adapter disabled and enabled, both from a generator seeded
        seed + 100000000 (the same starting noise); drift = (1 - mean DINO cosine of the pairs) / 2."""
        import torch

        from peftbench.evaluation.similarity import pairwise_cosine
        from peftbench.tasks.image_gen.generation import generate, pipeline_with

        if adapter_disabled is None:
            return ForgettingMeasure(value=math.nan)
        model.eval()
        prompts = [row["prompt"] for row in rows]
        outputs = {}
        with pipeline_with(processor, model) as pipeline:
            for which in ("base", "adapter"):
                generator = torch.Generator(device=processor.device).manual_seed(config.seed + DRIFT_SEED_OFFSET)
                images = []
                with adapter_disabled() if which == "base" else nullcontext():
                    for start in range(0, len(prompts), config.batch_size_eval):
                        images += generate(pipeline, processor, prompts[start : start + config.batch_size_eval],
                                           generator, config)
                outputs[which] = images
        cosines = pairwise_cosine(outputs["adapter"], outputs["base"], processor.similarity_processor,
                                  processor.similarity_model, config.batch_size_eval)
        drift = (1 - sum(cosines) / len(cosines)) / 2
        self._save_drift_pairs(prompts, outputs["base"], outputs["adapter"], cosines)
        return ForgettingMeasure(value=drift)

    def after_run(self, model, processor, config) -> dict[str, Any]:
        """PEFT's sample images (one image per prompt, in order, from one generator seeded seed + 100000), saved
        only; then the list of every image saved, for the result file."""
        import torch

        from peftbench.tasks.image_gen.generation import generate, pipeline_with

        if self.artifacts_dir is None:
            return {}
        model.eval()
        samples = []
        generator = torch.Generator(device=processor.device).manual_seed(config.seed + SAMPLE_SEED_OFFSET)
        with pipeline_with(processor, model) as pipeline:
            for index, prompt in enumerate(config.sample_image_prompts, start=1):
                image = generate(pipeline, processor, [prompt], generator, config)[0]
                samples.append({"prompt": prompt, "image": self._save(image, f"samples/{index:02d}.png")})
        self._images["samples"] = samples
        return {"images": {"folder": self._relative_folder(), **self._images}}

    # ---- saved images ----
    def _save(self, image, name: str) -> str:
        """Save a PIL image under artifacts_dir; its path relative to the results folder."""
        path = self.artifacts_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        return str(path.relative_to(self.artifacts_dir.parent.parent))

    def _relative_folder(self) -> str:
        return str(self.artifacts_dir.relative_to(self.artifacts_dir.parent.parent))

    def _save_test_images(self, prompts, references, generated, per_repeat) -> None:
        if self.artifacts_dir is None:
            return
        items = []
        for i, (prompt, reference) in enumerate(zip(prompts, references)):
            shrunk = reference.copy()
            shrunk.thumbnail((REFERENCE_MAX_SIDE, REFERENCE_MAX_SIDE))
            items.append({
                "prompt": prompt,
                "reference": self._save(shrunk, f"test/{i:02d}-reference.png"),
                "images": [self._save(images[i], f"test/{i:02d}-{r}.png") for r, images in enumerate(generated)],
                "similarity": [scores[i] for scores in per_repeat],
            })
        self._images["test"] = items

    def _save_drift_pairs(self, prompts, base, adapter, cosines) -> None:
        if self.artifacts_dir is None:
            return
        self._images["drift"] = [
            {"prompt": prompt, "base": self._save(b, f"drift/{i:02d}-base.png"),
             "adapter": self._save(a, f"drift/{i:02d}-adapter.png"), "similarity": cosine}
            for i, (prompt, b, a, cosine) in enumerate(zip(prompts, base, adapter, cosines))
        ]


