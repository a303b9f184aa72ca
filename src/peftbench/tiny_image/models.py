"""The shipped tiny models' architectures, in the real classes that PEFT's FLUX.2 benchmark loads.

- Generator: `Flux2KleinPipeline` = `Flux2Transformer2DModel` + `AutoencoderKLFlux2` + `Qwen3ForCausalLM` text
  encoder + a word-level tokenizer + `FlowMatchEulerDiscreteScheduler`.
- Similarity model (in place of DINOv2): `Dinov2Model` + `BitImageProcessor`.

The transformer's widths are chosen so that every PEFT image-gen config applies unchanged: an inner width of
256 is the smallest that C3A (block_size 256) and VB-LoRA (vector_length 256) divide, and OFT's
oft_block_size 32, BOFT's butterfly blocks and RoAd's group_size 64 divide it too. mlp_ratio 1 keeps every
projection a multiple of 256 (the single-stream `to_qkv_mlp_proj` is 256 -> 5 x 256). One double-stream and
two single-stream blocks keep a training step cheap on two CPU cores.
"""

from __future__ import annotations

IMAGE_SIZE = 32  # = world.IMAGE_SIZE; the pipeline's height and width
LATENT_CHANNELS = 4  # the VAE's; the transformer sees 2x2 patches of them: 16 channels, 8x8 tokens at 32x32
MAX_SEQUENCE_LENGTH = 16  # tokens per prompt (BOS, at most 13 words, EOS, padding)
TEXT_ENCODER_OUT_LAYERS = (1, 2)  # hidden states stacked into the prompt embedding (PEFT's: 10, 20, 30)
TEXT_HIDDEN = 64

TRANSFORMER_CONFIG = dict(
    patch_size=1,
    in_channels=4 * LATENT_CHANNELS,
    num_layers=1,
    num_single_layers=2,
    attention_head_dim=32,
    num_attention_heads=8,
    joint_attention_dim=len(TEXT_ENCODER_OUT_LAYERS) * TEXT_HIDDEN,
    timestep_guidance_channels=64,
    mlp_ratio=1.0,
    axes_dims_rope=(8, 8, 8, 8),  # must add up to attention_head_dim
    guidance_embeds=False,  # as FLUX.2-klein-base: real classifier-free guidance, no guidance embedding
)
VAE_CONFIG = dict(
    down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
    up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
    block_out_channels=(32, 64),  # two levels: a downsampling factor of 2, 16x16 latents at 32x32
    layers_per_block=1,
    latent_channels=LATENT_CHANNELS,
    norm_num_groups=8,
    sample_size=IMAGE_SIZE,
    mid_block_add_attention=False,
)
SCHEDULER_CONFIG = dict(  # FLUX.2-klein's scheduler settings: dynamic shifting, exponential time shift
    num_train_timesteps=1000,
    shift=3.0,
    use_dynamic_shifting=True,
    base_shift=0.5,
    max_shift=1.15,
    base_image_seq_len=256,
    max_image_seq_len=4096,
    time_shift_type="exponential",
)
SIMILARITY_IMAGE_SIZE = IMAGE_SIZE
SIMILARITY_CONFIG = dict(
    image_size=SIMILARITY_IMAGE_SIZE,
    patch_size=4,
    hidden_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    mlp_ratio=2,
)
SPECIAL_TOKENS = ["<pad>", "<unk>", "<s>", "</s>"]
# Qwen's chat template, reduced to what a word-level tokenizer can read: the user's text only. The
# pipeline calls it with add_generation_prompt and enable_thinking, which a template may ignore.
CHAT_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}"


def build_tokenizer(words: list[str]):
    """A word-level tokenizer over `words` (a byte-level BPE this small splits and truncates captions);
    every encoded text is `<s> words </s>`."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + sorted(set(words)))}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=MAX_SEQUENCE_LENGTH,
        chat_template=CHAT_TEMPLATE,
    )


def build_text_encoder(vocab_size: int, pad_token_id: int):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=TEXT_HIDDEN,
        intermediate_size=2 * TEXT_HIDDEN,
        num_hidden_layers=max(TEXT_ENCODER_OUT_LAYERS),
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=4 * MAX_SEQUENCE_LENGTH,
        tie_word_embeddings=True,  # the LM head is never used; tying keeps it out of the shipped size
        pad_token_id=pad_token_id,
    )
    return Qwen3ForCausalLM(config)


def build_transformer():
    from diffusers import Flux2Transformer2DModel

    return Flux2Transformer2DModel(**TRANSFORMER_CONFIG)


def build_vae():
    from diffusers import AutoencoderKLFlux2

    return AutoencoderKLFlux2(**VAE_CONFIG)


def build_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG)


def build_similarity_model():
    from transformers import Dinov2Config, Dinov2Model

    return Dinov2Model(Dinov2Config(**SIMILARITY_CONFIG))


def build_similarity_processor():
    """DINOv2's preprocessing (BitImageProcessor, ImageNet mean/std) at the tiny images' size."""
    from transformers import BitImageProcessor

    side = SIMILARITY_IMAGE_SIZE
    return BitImageProcessor(
        size={"shortest_edge": side},
        crop_size={"height": side, "width": side},
        do_center_crop=True,
        resample=3,  # bicubic, as DINOv2's
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
        do_convert_rgb=True,
    )
