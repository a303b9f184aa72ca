"""Tiny random stand-ins for the image-generation task, in the real classes, built offline in seconds.

- a generator folder that `Flux2KleinPipeline.from_pretrained` loads: Flux2Transformer2DModel (2 heads of 16,
  one double- and one single-stream block), AutoencoderKLFlux2 (two blocks, 4 latent channels), a 3-layer
  Qwen3ForCausalLM text encoder, a byte-level BPE tokenizer trained here, wrapped as Qwen2TokenizerFast with a
  chat template that accepts `enable_thinking`, and FlowMatchEulerDiscreteScheduler;
- a concept dataset folder that `datasets.load_dataset` reads (parquet, an `image` column of the Image feature),
  one generated picture per caption;
- a similarity model folder that AutoModel / AutoImageProcessor load (a 1-layer Dinov2Model, BitImageProcessor).
The weights are random: the tests check the path, not what the images look like.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

PEFT_DEFAULTS = Path(__file__).parent / "fixtures" / "peft-image-gen-configs" / "default_training_params.json"
TEXT_LAYERS = [1, 2]  # hidden states of the 3-layer text encoder, stacked: 2 x 32 = joint_attention_dim 64
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_generator(folder: Path, texts: list[str]) -> None:
    import torch
    from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline, Flux2Transformer2DModel
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast, Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator([*texts, "user assistant"], trainer)
    tokenizer = Qwen2TokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   unk_token=None, bos_token=None)
    tokenizer.chat_template = CHAT_TEMPLATE
    text_encoder = Qwen3ForCausalLM(Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, max_position_embeddings=128, tie_word_embeddings=True))
    vae = AutoencoderKLFlux2(block_out_channels=(16, 32), latent_channels=4, layers_per_block=1, norm_num_groups=8,
                             down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
    transformer = Flux2Transformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=64, timestep_guidance_channels=32, axes_dims_rope=(4, 4, 4, 4), guidance_embeds=False,
        mlp_ratio=2.0)
    Flux2KleinPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder,
                       tokenizer=tokenizer, transformer=transformer).save_pretrained(folder)


def concept_image(index: int, size: int = 40):
    """A picture of row `index`: a coloured square at a row-dependent place on a row-dependent background."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size + 8), ((index * 37) % 256, 90, (index * 53) % 256))
    x = 4 + index % 5 * 4
    ImageDraw.Draw(image).rectangle([x, 6, x + 14, 20], fill=(240, 200, 40))
    return image


def build_dataset(folder: Path, num_rows: int, broken_row: int | None = None) -> None:
    """A parquet dataset of `num_rows` images (row `broken_row`, if given, holds bytes that are no image)."""
    import datasets

    cells = []
    for i in range(num_rows):
        buffer = io.BytesIO()
        concept_image(i).save(buffer, format="PNG")
        data = b"not an image" if i == broken_row else buffer.getvalue()
        cells.append({"bytes": data, "path": None})
    dataset = datasets.Dataset.from_dict({"image": cells}, features=datasets.Features({"image": datasets.Image()}))
    (folder / "data").mkdir(parents=True, exist_ok=True)
    dataset.to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))


def build_similarity_model(folder: Path) -> None:
    import torch
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                             image_size=28, patch_size=14)).save_pretrained(folder)
    BitImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28},
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(folder)


def build_standins(root: Path) -> dict[str, object]:
    """Every stand-in under `root`; returns training parameters that point image-gen at them, sized to train and
    evaluate in seconds on a CPU (PEFT's prompts, split sizes and seeds are kept)."""
    peft_defaults = json.loads(PEFT_DEFAULTS.read_text())
    prompts = [*peft_defaults["instance_prompts"], *peft_defaults["sample_image_prompts"],
               *peft_defaults["drift_image_prompts"]]
    build_generator(root / "generator", prompts)
    build_dataset(root / "concept", len(peft_defaults["instance_prompts"]))
    build_similarity_model(root / "similarity")
    return {
        "model_id": str(root / "generator"),
        "dataset_id": str(root / "concept"),
        "dino_model_id": str(root / "similarity"),
        "dtype": "float32",
        "resolution": 32,
        "max_steps": 4,
        "eval_steps": 2,
        "batch_size_eval": 4,
        "num_inference_steps": 2,
        "max_sequence_length": 24,
        "text_encoder_out_layers": TEXT_LAYERS,
        "sample_image_prompts": peft_defaults["sample_image_prompts"][:2],
        "drift_image_prompts": peft_defaults["drift_image_prompts"][:3],
        "num_threads": 1,
    }
