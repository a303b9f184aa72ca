"""Training the tiny image models from scratch on the procedural world (run by scripts/pretrain_tiny_image.py).

- the VAE: reconstruction (MSE) with a small KL term, on world pictures and random colour mosaics, then its
  batch-norm running mean/var set from the training latents (PEFT and the pipeline normalise latents with them);
- the generator: transformer and text encoder jointly, with flow matching as PEFT's image-gen script trains
  (sigma from a uniform index into the scheduler's initial sigmas, x_t = (1 - sigma) x0 + sigma noise,
  target noise - x0, timestep sigma), plus 10% empty captions so that classifier-free guidance has an
  unconditional model to push against;
- the similarity model: a Dinov2Model whose CLS token predicts the object's shape, colour and texture (not
  its scene), so that the same object in different scenes embeds close together.
Each returns its loss curve for the model card.
"""

from __future__ import annotations

import math
import random
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

from peftbench.tiny_image import world
from peftbench.tiny_image.models import MAX_SEQUENCE_LENGTH, TEXT_ENCODER_OUT_LAYERS

CAPTION_DROPOUT = 0.1


def to_tensor(images: list[Image.Image]) -> torch.Tensor:
    """RGB images -> (N, 3, H, W) in [-1, 1], as PEFT normalises training images."""
    array = np.stack([np.asarray(image.convert("RGB"), dtype=np.float32) for image in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2) / 127.5 - 1.0


def cosine_lr(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


class LossLog:
    """Mean loss over the last `window` steps, recorded every `every` steps, printed now and then."""

    def __init__(self, name: str, total: int, every: int = 50, window: int = 50):
        self.name, self.total, self.every, self.window = name, total, every, window
        self.recent: list[float] = []
        self.curve: list[dict] = []
        self.started = time.time()

    def add(self, step: int, loss: float) -> None:
        self.recent = (self.recent + [loss])[-self.window :]
        if step % self.every == 0 or step == self.total - 1:
            mean = sum(self.recent) / len(self.recent)
            self.curve.append({"step": step, "loss": round(mean, 5)})
            elapsed = time.time() - self.started
            print(f"[{self.name}] step {step}/{self.total} loss {mean:.4f} ({elapsed:.0f} s)", file=sys.stderr, flush=True)

    @property
    def final(self) -> float:
        return round(sum(self.recent) / len(self.recent), 5)


# Share of the VAE's training pictures that are random colour mosaics instead of world pictures. On world
# pictures alone the VAE learns that hue changes only at an object's edge (an object is one colour and its
# shade), and decodes the concept's fine pink/teal checkerboard as a blue/white/yellow one; a fine-tuned
# generator cannot draw past its frozen decoder. Mosaics make it a general codec of colour at every scale.
VAE_MOSAIC_FRACTION = 0.3


def colour_mosaic(rng: random.Random, side: int = world.IMAGE_SIZE) -> Image.Image:
    """A picture of square blocks (2, 4 or 8 pixels) of uniformly random colours: no shape, no caption."""
    block = rng.choice((2, 4, 4, 8))
    pixels = np.zeros((side, side, 3), np.uint8)
    for y in range(0, side, block):
        for x in range(0, side, block):
            pixels[y : y + block, x : x + block] = [rng.randrange(256) for _ in range(3)]
    return Image.fromarray(pixels)


def vae_training_images(world_images: torch.Tensor, seed: int, fraction: float = VAE_MOSAIC_FRACTION) -> torch.Tensor:
    """The world pictures with their first `fraction` replaced by colour mosaics."""
    rng = random.Random(seed)
    count = int(len(world_images) * fraction)
    return torch.cat([to_tensor([colour_mosaic(rng) for _ in range(count)]), world_images[count:]])


def train_vae(vae, images: torch.Tensor, steps: int, batch_size: int, lr: float, seed: int, kl_weight: float = 1e-6):
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    log = LossLog("vae", steps)
    vae.train()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, steps, lr, warmup=50)
        batch = images[torch.randint(len(images), (batch_size,), generator=generator)]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            posterior = vae.encode(batch).latent_dist
            reconstruction = vae.decode(posterior.sample(generator)).sample
        loss = F.mse_loss(reconstruction.float(), batch) + kl_weight * posterior.kl().mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        log.add(step, loss.item())
    vae.eval()
    return log


@torch.no_grad()
def encode_latents(vae, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """VAE latents as PEFT caches them before normalisation: `latent_dist.mode()`, 2x2-patchified."""
    from diffusers import Flux2KleinPipeline

    latents = [vae.encode(batch).latent_dist.mode() for batch in images.split(batch_size)]
    return Flux2KleinPipeline._patchify_latents(torch.cat(latents))


@torch.no_grad()
def fit_latent_batchnorm(vae, patchified: torch.Tensor) -> torch.Tensor:
    """Set the VAE's batch-norm running statistics to the latents' per-channel mean and variance, and
    return the latents normalised with them (exactly as PEFT and the pipeline do)."""
    mean = patchified.mean(dim=(0, 2, 3))
    var = patchified.var(dim=(0, 2, 3))
    vae.bn.running_mean.copy_(mean)
    vae.bn.running_var.copy_(var)
    std = torch.sqrt(var + vae.config.batch_norm_eps)
    return (patchified - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


@torch.no_grad()
def reconstruction_error(vae, images: torch.Tensor) -> float:
    """Mean absolute error in [0, 255] pixel units of encode(mode) -> decode."""
    decoded = torch.cat([vae.decode(vae.encode(batch).latent_dist.mode()).sample for batch in images.split(256)])
    return float((decoded.clamp(-1, 1) - images).abs().mean() * 127.5)


def prompt_embeddings(text_encoder, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The pipeline's `_get_qwen3_prompt_embeds` on token ids: chosen hidden states, concatenated per token."""
    output = text_encoder(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, use_cache=False)
    stacked = torch.stack([output.hidden_states[k] for k in TEXT_ENCODER_OUT_LAYERS], dim=1)
    batch, layers, length, hidden = stacked.shape
    return stacked.permute(0, 2, 1, 3).reshape(batch, length, layers * hidden)


def tokenize(tokenizer, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids as the pipeline makes them: the chat template, then padding to the maximum length."""
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": caption}], tokenize=False, add_generation_prompt=True, enable_thinking=False
        )
        for caption in captions
    ]
    encoded = tokenizer(texts, return_tensors="pt", padding="max_length", truncation=True, max_length=MAX_SEQUENCE_LENGTH)
    return encoded["input_ids"], encoded["attention_mask"]


def position_ids(batch: int, latent_side: int, text_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The pipeline's 4-D (T, H, W, L) ids for image tokens and text tokens."""
    from diffusers import Flux2KleinPipeline

    image_ids = Flux2KleinPipeline._prepare_latent_ids(torch.zeros(batch, 1, latent_side, latent_side))
    text_ids = Flux2KleinPipeline._prepare_text_ids(torch.zeros(batch, text_length, 1))
    return image_ids, text_ids


def train_generator(
    transformer,
    text_encoder,
    scheduler,
    latents: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    empty_ids: tuple[torch.Tensor, torch.Tensor],
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
):
    """Flow matching on normalised, patchified latents (N, C, h, w) with their captions' token ids."""
    from diffusers import Flux2KleinPipeline

    generator = torch.Generator().manual_seed(seed)
    parameters = list(transformer.parameters()) + list(text_encoder.parameters())
    decay = [p for p in parameters if p.ndim >= 2]
    no_decay = [p for p in parameters if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.99)
    )
    # the sigmas of the scheduler's initial state, as PEFT's training reads them (sampling changes them)
    sigmas = type(scheduler).from_config(scheduler.config).sigmas.clone()
    image_ids, text_ids = position_ids(batch_size, latents.shape[-1], input_ids.shape[1])
    log = LossLog("generator", steps)
    transformer.train()
    text_encoder.train()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, steps, lr, warmup=100)
        rows = torch.randint(len(latents), (batch_size,), generator=generator)
        x0 = Flux2KleinPipeline._pack_latents(latents[rows])
        ids, mask = input_ids[rows].clone(), attention_mask[rows].clone()
        dropped = torch.rand(batch_size, generator=generator) < CAPTION_DROPOUT
        ids[dropped], mask[dropped] = empty_ids[0], empty_ids[1]
        noise = torch.randn(x0.shape, generator=generator)
        index = (torch.rand(batch_size, generator=generator) * scheduler.config.num_train_timesteps).long()
        sigma = sigmas[index].view(-1, 1, 1)
        noisy = (1 - sigma) * x0 + sigma * noise
        with torch.autocast("cpu", dtype=torch.bfloat16):
            prediction = transformer(
                hidden_states=noisy,
                encoder_hidden_states=prompt_embeddings(text_encoder, ids, mask),
                timestep=sigma.view(-1),
                img_ids=image_ids,
                txt_ids=text_ids,
                return_dict=False,
            )[0]
        loss = F.mse_loss(prediction.float(), noise - x0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        log.add(step, loss.item())
    transformer.eval()
    text_encoder.eval()
    return log


# ---- the similarity model -------------------------------------------------------------------------------

ATTRIBUTES = {"shape": world.SHAPES, "colour": tuple(world.PALETTE), "texture": world.TEXTURES}


def degrade(image: Image.Image, rng: random.Random) -> Image.Image:
    """A blur or pixel noise now and then, so that a generated (softer, noisier) picture of an object embeds
    like a drawn one."""
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.3, 1.0)))
    if rng.random() < 0.3:
        array = np.asarray(image, dtype=np.float32) + np.random.default_rng(rng.randrange(2**31)).normal(0, 8, (*image.size, 3))
        image = Image.fromarray(array.clip(0, 255).astype(np.uint8))
    return image


def similarity_training_data(count: int, seed: int, processor):
    """World images (no concept), degraded now and then, as pixel values, and their attribute labels."""
    rng = random.Random(seed)
    images, labels = [], {name: [] for name in ATTRIBUTES}
    for _ in range(count):
        scene = world.random_scene(rng)
        images.append(degrade(world.render(scene, rng), rng))
        for name, values in ATTRIBUTES.items():
            labels[name].append(values.index(getattr(scene, name)))
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    return pixels, {name: torch.tensor(values) for name, values in labels.items()}


def train_similarity(model, pixels: torch.Tensor, labels: dict, steps: int, batch_size: int, lr: float, seed: int):
    """Attribute prediction from the CLS token; returns the loss log and the heads (which are not shipped)."""
    generator = torch.Generator().manual_seed(seed)
    hidden = model.config.hidden_size
    heads = torch.nn.ModuleDict({name: torch.nn.Linear(hidden, len(values)) for name, values in ATTRIBUTES.items()})
    parameters = list(model.parameters()) + list(heads.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.05)
    log = LossLog("similarity", steps)
    model.train()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, steps, lr, warmup=50)
        rows = torch.randint(len(pixels), (batch_size,), generator=generator)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            cls = model(pixel_values=pixels[rows]).last_hidden_state[:, 0]
            loss = sum(F.cross_entropy(heads[name](cls).float(), labels[name][rows]) for name in ATTRIBUTES)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        log.add(step, loss.item())
    model.eval()
    return log, heads


@torch.no_grad()
def attribute_accuracy(model, processor, heads, images: list[Image.Image], scenes: list[world.Scene]) -> dict:
    """Share of images whose object the similarity model's attribute heads read as the scene's, per attribute."""
    pixels = processor(images=[image.convert("RGB") for image in images], return_tensors="pt")["pixel_values"]
    cls = model(pixel_values=pixels).last_hidden_state[:, 0]
    accuracy = {}
    for name, values in ATTRIBUTES.items():
        predicted = heads[name](cls).argmax(-1).tolist()
        accuracy[name] = round(sum(values[p] == getattr(s, name) for p, s in zip(predicted, scenes)) / len(scenes), 4)
    return accuracy
