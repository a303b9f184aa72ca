"""FLUX.2-klein through diffusers, as PEFT's image benchmark uses it: the frozen companions, the caches, the
flow-matching training batch and loss, and image generation from cached prompt embeddings.

PEFT's definitions (its method_comparison/image-gen/run.py): every prompt is encoded once
(`max_sequence_length`, `text_encoder_out_layers`) and every training image VAE-encoded once
(`latent_dist.mode()`, 2x2 patchify, normalised with the VAE's batch-norm running statistics). A step draws
noise ~ N(0, 1) from the run's generator (the one that drew the training order), u from diffusers'
`compute_density_for_timestep_sampling` (uniform for weighting "none"), index = floor(u * 1000) into a copy of
the scheduler's initial timesteps and sigmas, x_t = (1 - sigma) x0 + sigma noise, timestep t / 1000 (and the
guidance scale only for a transformer with guidance embeddings), target noise - x0, loss = MSE in fp32 with
diffusers' `compute_loss_weighting_for_sd3`.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

from peftbench.config import ConfigError

NEGATIVE_PROMPT = ""  # classifier-free guidance's unconditional prompt, as in PEFT


@dataclass
class ImageGenParts:
    """The frozen companions of the trained transformer, and the caches built from them."""

    pipeline: Any  # Flux2KleinPipeline without its transformer (VAE, text encoder, tokenizer, scheduler)
    similarity_processor: Any
    similarity_model: Any
    device: Any = None  # the trained model's, once `place` has run
    prompt_cache: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # prompt -> (embeds, text ids), on device
    train_latents: Optional[Any] = None  # (rows, C, H, W) on device
    train_prompts: list[str] = field(default_factory=list)


def torch_dtype(name: str):
    import torch

    return getattr(torch, name)


def load_companions(config) -> ImageGenParts:
    """The pipeline's VAE, text encoder, tokenizer and scheduler and the similarity model, on the CPU (`place`
    moves the similarity model to the trained model's device)."""
    from diffusers import Flux2KleinPipeline

    from peftbench.evaluation.similarity import load_similarity_model

    try:
        pipeline = Flux2KleinPipeline.from_pretrained(config.model_id, transformer=None,
                                                      dtype=torch_dtype(config.dtype))
    except (OSError, ValueError, TypeError) as error:
        raise ConfigError(f"'model_id': {config.model_id} is not a Flux2KleinPipeline folder or hub id: {error}",
                          key="model_id") from None
    pipeline.set_progress_bar_config(disable=True)
    pipeline.vae.requires_grad_(False).eval()
    pipeline.text_encoder.requires_grad_(False).eval()
    processor, model = load_similarity_model(config.dino_model_id, "cpu")
    return ImageGenParts(pipeline=pipeline, similarity_processor=processor, similarity_model=model)


def place(parts: ImageGenParts, model) -> None:
    """The companions follow the trained model: the similarity model moves to its device, as in PEFT (where it
    stays during training); the VAE and text encoder stay on the CPU and visit the device while they work."""
    parts.device = next(model.parameters()).device
    parts.similarity_model.to(parts.device)


def load_transformer(config, device):
    from diffusers import Flux2Transformer2DModel

    transformer = Flux2Transformer2DModel.from_pretrained(config.model_id, subfolder="transformer",
                                                          dtype=torch_dtype(config.dtype))
    return transformer.to(device)


@contextmanager
def on_device(parts: ImageGenParts, *modules):
    """`modules` on the run's device while the block runs, back on the CPU afterwards (diffusers'
    offload_models, as PEFT uses it; on a CPU run nothing moves)."""
    from diffusers.training_utils import offload_models

    with offload_models(*modules, device=parts.device, offload=parts.device.type != "cpu"):
        yield


def cache_prompts(parts: ImageGenParts, prompts: list[str], config) -> None:
    """Encode each prompt not yet cached, once."""
    import torch

    missing = [p for p in dict.fromkeys(prompts) if p not in parts.prompt_cache]
    if not missing:
        return
    with torch.no_grad(), on_device(parts, parts.pipeline.text_encoder):
        for prompt in missing:
            embeds, text_ids = parts.pipeline.encode_prompt(
                prompt=prompt, device=parts.device, max_sequence_length=config.max_sequence_length,
                text_encoder_out_layers=tuple(config.text_encoder_out_layers),
            )
            parts.prompt_cache[prompt] = (embeds.to(parts.device), text_ids.to(parts.device))


def cached_prompts(parts: ImageGenParts, prompts: list[str]):
    import torch

    embeds = torch.cat([parts.prompt_cache[p][0] for p in prompts])
    text_ids = torch.cat([parts.prompt_cache[p][1] for p in prompts])
    return embeds, text_ids


def cache_latents(parts: ImageGenParts, pixel_values: list, config) -> None:
    """VAE latents of the training images: the mode, patchified, normalised with the VAE's batch-norm statistics."""
    import torch

    vae = parts.pipeline.vae
    latents = []
    with torch.no_grad(), on_device(parts, vae):
        mean = vae.bn.running_mean.view(1, -1, 1, 1).to(vae.device)
        std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps).to(vae.device)
        for start in range(0, len(pixel_values), config.batch_size):
            batch = torch.stack(pixel_values[start : start + config.batch_size]).to(vae.device, vae.dtype)
            encoded = parts.pipeline._patchify_latents(vae.encode(batch).latent_dist.mode())
            latents.append(((encoded - mean) / std).to(parts.device))
    parts.train_latents = torch.cat(latents)


def training_batches(parts: ImageGenParts, config, seed: int) -> Iterator[dict[str, Any]]:
    """PEFT's training batches: the order is `repeats` concatenated permutations of the training images from a
    generator seeded with `seed` on the run's device, read in order, `batch_size` at a time; the same generator
    then draws each step's noise."""
    import torch
    from diffusers.training_utils import compute_density_for_timestep_sampling

    latents_cache = parts.train_latents
    embeds_cache, text_ids_cache = cached_prompts(parts, parts.train_prompts)
    generator = torch.Generator(device=parts.device).manual_seed(seed)
    order = torch.cat([torch.randperm(len(latents_cache), generator=generator, device=parts.device)
                       for _ in range(config.repeats)])
    if config.max_steps > len(order):  # PEFT's check, on samples rather than steps
        raise ConfigError(f"'max_steps' {config.max_steps} exceeds the {len(order)} training samples of "
                          f"'repeats' {config.repeats}", key="max_steps")
    scheduler = copy.deepcopy(parts.pipeline.scheduler)  # its initial timesteps and sigmas, never stepped
    for start in range(0, len(order), config.batch_size):
        indices = order[start : start + config.batch_size].to(latents_cache.device, torch.long)
        latents = latents_cache.index_select(0, indices)
        noise = torch.randn_like(latents, generator=generator)
        u = compute_density_for_timestep_sampling(
            weighting_scheme=config.weighting_scheme, batch_size=latents.shape[0], logit_mean=config.logit_mean,
            logit_std=config.logit_std, mode_scale=config.mode_scale,
        )
        timestep_index = (u * scheduler.config.num_train_timesteps).long()
        timesteps = scheduler.timesteps[timestep_index]
        sigmas = _sigmas(scheduler, timesteps, latents.ndim, latents.dtype).to(latents.device)
        yield {
            "latents": latents,
            "noise": noise,
            "sigmas": sigmas,
            "timesteps": timesteps.to(latents.device),
            "prompt_embeds": embeds_cache.index_select(0, indices),
            "text_ids": text_ids_cache.index_select(0, indices),
        }


def _sigmas(scheduler, timesteps, n_dim: int, dtype):
    """The scheduler's sigma of each timestep (PEFT's get_sigmas), shaped to broadcast over latents."""
    sigmas = scheduler.sigmas.to(dtype=dtype)
    schedule = scheduler.timesteps
    sigma = sigmas[[(schedule == t).nonzero().item() for t in timesteps]].flatten()
    while sigma.ndim < n_dim:
        sigma = sigma.unsqueeze(-1)
    return sigma


def flow_matching_loss(model, pipeline, batch: dict[str, Any], config):
    """The transformer's velocity prediction against noise - x0, MSE in fp32 with the scheme's weighting."""
    import torch
    from diffusers.training_utils import compute_loss_weighting_for_sd3

    latents, noise, sigmas = batch["latents"], batch["noise"], batch["sigmas"]
    noisy = (1.0 - sigmas) * latents + sigmas * noise
    packed = pipeline._pack_latents(noisy)
    latent_ids = pipeline._prepare_latent_ids(latents).to(latents.device)
    guidance = None
    if transformer_config(model).guidance_embeds:
        guidance = torch.full([latents.shape[0]], config.guidance_scale, device=latents.device)
    prediction = model(
        hidden_states=packed, timestep=batch["timesteps"] / 1000, guidance=guidance,
        encoder_hidden_states=batch["prompt_embeds"], txt_ids=batch["text_ids"], img_ids=latent_ids,
        return_dict=False,
    )[0]
    prediction = pipeline._unpack_latents_with_ids(prediction[:, : packed.size(1)], latent_ids)
    weighting = compute_loss_weighting_for_sd3(config.weighting_scheme, sigmas=sigmas)
    target = noise - latents
    loss = torch.mean((weighting.float() * (prediction.float() - target.float()) ** 2).reshape(target.shape[0], -1), 1)
    return loss.mean()


def transformer_config(model):
    """The diffusers config of the transformer, whether peft wraps it or not."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.config


@contextmanager
def pipeline_with(parts: ImageGenParts, transformer):
    """The pipeline with `transformer` in place (and its VAE on the device), for generating."""
    pipeline = parts.pipeline
    pipeline.transformer = transformer
    try:
        with on_device(parts, pipeline.vae):
            yield pipeline
    finally:
        pipeline.transformer = None


def generate(pipeline, parts: ImageGenParts, prompts: list[str], generator, config) -> list:
    """PIL images of `prompts` (one each) from cached prompt embeddings, negative prompt "" (PEFT's settings)."""
    import torch

    cache_prompts(parts, [*prompts, NEGATIVE_PROMPT], config)
    embeds, _ = cached_prompts(parts, prompts)
    negative, _ = cached_prompts(parts, [NEGATIVE_PROMPT] * len(prompts))
    with torch.inference_mode():
        output = pipeline(
            prompt_embeds=embeds, negative_prompt_embeds=negative, num_inference_steps=config.num_inference_steps,
            guidance_scale=config.guidance_scale, height=config.resolution, width=config.resolution,
            max_sequence_length=config.max_sequence_length,
            text_encoder_out_layers=tuple(config.text_encoder_out_layers), generator=generator, output_type="pil",
        )
    return list(output.images)
