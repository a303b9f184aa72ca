"""`image-tiny`: the image-gen task with the shipped tiny models and concept, offline on a CPU (docs/image-tiny.md).

Same code and definitions as `image-gen`; only the defaults file differs: it names the folders shipped in
src/peftbench/assets/tiny-image/ (a tiny FLUX.2-klein pipeline, the "sks toy" concept, an in-house DINOv2-class
similarity model) and tiny sizes.
"""

from __future__ import annotations

from peftbench.tasks.image_gen.task import ImageGenTask
from peftbench.tiny_image.assets import ASSET_DIR, DEFAULTS_FILE


class ImageTinyTask(ImageGenTask):
    name = "image-tiny"
    description = "offline default: a tiny FLUX.2 learns 'sks toy' from 14 pictures, in-house similarity model (CPU)"
    defaults_file = ASSET_DIR / DEFAULTS_FILE
    # `peftbench infer`: two prompts, three runs (PEFT's 5 and 10 would take most of an hour on two CPU cores)
    inference_params = {"prompts_per_category": 2, "runs": 3}
