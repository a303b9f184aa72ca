"""Pretrain the tiny image models shipped for the offline `image-tiny` task, and write its folder.

    .venv/bin/python scripts/pretrain_tiny_image.py [--threads 1] [--out src/peftbench/assets/tiny-image] [--seed 0]

Steps, all deterministic from the seed (peftbench.tiny_image.*):
1. draw the procedural world (world.py): images with captions, never the concept;
2. train the similarity model (a Dinov2Model) to predict each object's shape, colour and texture;
3. train the VAE (AutoencoderKLFlux2) to reconstruct the images and random colour mosaics, then set its
   batch-norm statistics from the world images' latents;
4. train the transformer (Flux2Transformer2DModel) and the text encoder (Qwen3) jointly with flow matching
   on the cached latents, with a word-level tokenizer over the world's and the task's words;
5. measure: the VAE's reconstruction error, the similarity model's ROC AUCs (similarity.validate), and
   how often the generator draws the prompted shape, colour and texture (judged by the similarity model's
   attribute heads, which are not shipped); save a PNG of generated samples;
6. write generator/, similarity/, the concept dataset, default_training_params.json, pretraining_info.json
   and a model card (README.md). The output folder is replaced atomically at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
DEFAULT_OUT = SRC / "peftbench" / "assets" / "tiny-image"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (replaced at the end)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", type=int, default=30000, help="world images for the VAE and the generator")
    parser.add_argument("--similarity-steps", type=int, default=400)
    parser.add_argument("--vae-steps", type=int, default=400)
    parser.add_argument("--generator-steps", type=int, default=2200)
    parser.add_argument("--generator-batch", type=int, default=32)
    parser.add_argument("--generator-lr", type=float, default=1e-3)
    # One thread by default: on a shared machine, two threads that must meet at every op barrier slow down
    # several times over when another process takes a core.
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from peftbench.tiny_image import assets, concept, models, pretraining, similarity, world
    from peftbench.tiny_image.grid import image_grid

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    started, cpu_started, load_started = time.time(), cpu_seconds(), os.getloadavg()
    phases: dict[str, dict] = {}

    def phase_done(name: str, since: float, cpu_since: float) -> None:
        phases[name] = {"wall_seconds": round(time.time() - since, 1), "cpu_seconds": round(cpu_seconds() - cpu_since, 1)}
        print(f"== {name}: {phases[name]}", file=sys.stderr, flush=True)

    # 1. the world
    t, c = time.time(), cpu_seconds()
    examples = world.pretraining_examples(args.images, args.seed)
    images = pretraining.to_tensor([image for _, image, _ in examples])
    captions = [text for _, _, text in examples]
    phase_done("world", t, c)

    # 2. the similarity model
    t, c = time.time(), cpu_seconds()
    processor = models.build_similarity_processor()
    sim_model = models.build_similarity_model()
    pixels, labels = pretraining.similarity_training_data(20000, args.seed + 1, processor)
    sim_log, heads = pretraining.train_similarity(sim_model, pixels, labels, args.similarity_steps, 128, 2e-3, args.seed)
    validation = similarity.validate(sim_model, processor)
    print(f"similarity validation: {validation}", file=sys.stderr, flush=True)
    phase_done("similarity", t, c)

    # 3. the VAE
    t, c = time.time(), cpu_seconds()
    vae = models.build_vae()
    vae_images = pretraining.vae_training_images(images, args.seed + 7)
    vae_log = pretraining.train_vae(vae, vae_images, args.vae_steps, 64, 2e-3, args.seed)
    del vae_images
    held_out = pretraining.to_tensor([image for _, image, _ in world.pretraining_examples(512, args.seed + 2)])
    concept_tensor = pretraining.to_tensor(concept.concept_examples()[0])
    reconstruction = {
        "world_mae": round(pretraining.reconstruction_error(vae, held_out), 2),
        "concept_mae": round(pretraining.reconstruction_error(vae, concept_tensor), 2),
    }
    print(f"VAE reconstruction (mean abs error, 0-255): {reconstruction}", file=sys.stderr, flush=True)
    latents = pretraining.fit_latent_batchnorm(vae, pretraining.encode_latents(vae, images))
    phase_done("vae", t, c)

    # 4. the generator
    t, c = time.time(), cpu_seconds()
    tokenizer = models.build_tokenizer(world.vocabulary() + concept.prompt_words())
    text_encoder = models.build_text_encoder(len(tokenizer), tokenizer.pad_token_id)
    transformer = models.build_transformer()
    scheduler = models.build_scheduler()
    input_ids, attention_mask = pretraining.tokenize(tokenizer, captions)
    empty_ids = pretraining.tokenize(tokenizer, [""])
    generator_log = pretraining.train_generator(
        transformer, text_encoder, scheduler, latents, input_ids, attention_mask, (empty_ids[0][0], empty_ids[1][0]),
        args.generator_steps, args.generator_batch, args.generator_lr, args.seed,
    )
    phase_done("generator", t, c)

    # 5. what the generator draws
    t, c = time.time(), cpu_seconds()
    from diffusers import Flux2KleinPipeline

    pipe = Flux2KleinPipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    rng = random.Random(args.seed + 3)
    scenes = [world.random_scene(rng) for _ in range(48)]
    prompts = [world.caption(scene) for scene in scenes]
    generated = pipe(
        prompt=prompts, height=models.IMAGE_SIZE, width=models.IMAGE_SIZE, num_inference_steps=20, guidance_scale=3.5,
        max_sequence_length=models.MAX_SEQUENCE_LENGTH, text_encoder_out_layers=models.TEXT_ENCODER_OUT_LAYERS,
        generator=torch.Generator().manual_seed(args.seed),
    ).images
    drawn = pretraining.attribute_accuracy(sim_model, processor, heads, generated, scenes)
    drawn_reference = pretraining.attribute_accuracy(sim_model, processor, heads, [world.render(s) for s in scenes], scenes)
    print(f"generated images judged by the attribute heads: {drawn} (on the drawn originals: {drawn_reference})", file=sys.stderr, flush=True)
    phase_done("measure", t, c)

    info = {
        "command": "scripts/pretrain_tiny_image.py " + " ".join(sys.argv[1:]),
        "seed": args.seed,
        "threads": args.threads,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores visible",
        "torch": torch.__version__,
        "wall_seconds": round(time.time() - started, 1),
        "cpu_seconds": round(cpu_seconds() - cpu_started, 1),
        "load_average_at_start": [round(x, 2) for x in load_started],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "phases": phases,
        "parameters": {
            "transformer": sum(p.numel() for p in transformer.parameters()),
            "vae": sum(p.numel() for p in vae.parameters()),
            "text_encoder": sum(p.numel() for p in text_encoder.parameters()),
            "similarity": sum(p.numel() for p in sim_model.parameters()),
        },
        "vocabulary": len(tokenizer),
        "world_images": args.images,
        "similarity": {"steps": args.similarity_steps, "batch_size": 128, "peak_lr": 2e-3, "training_images": 20000,
                       "final_loss": sim_log.final, "loss_curve": sim_log.curve, "validation": validation},
        "vae": {"steps": args.vae_steps, "batch_size": 64, "peak_lr": 2e-3, "kl_weight": 1e-6,
                "mosaic_fraction": pretraining.VAE_MOSAIC_FRACTION,
                "final_loss": vae_log.final, "loss_curve": vae_log.curve, "reconstruction": reconstruction},
        "generator": {"steps": args.generator_steps, "batch_size": args.generator_batch, "peak_lr": args.generator_lr,
                      "caption_dropout": pretraining.CAPTION_DROPOUT, "final_loss": generator_log.final,
                      "loss_curve": generator_log.curve, "drawn_attributes": drawn,
                      "attribute_heads_on_originals": drawn_reference},
        "schedule": "linear warm-up, cosine decay to 5% of peak; AdamW, grad-norm clip 1.0; fp32 weights, bf16 autocast",
    }
    staging = args.out.with_name(args.out.name + f".tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
        pipe.save_pretrained(staging / assets.GENERATOR_DIR)
        sim_model.save_pretrained(staging / assets.SIMILARITY_DIR)
        processor.save_pretrained(staging / assets.SIMILARITY_DIR)
        assets.write_concept_and_defaults(staging, args.seed)
        image_grid([generated[i : i + 12] for i in range(0, 48, 12)]).save(staging / "generated_samples.png")
        (staging / "pretraining_info.json").write_text(json.dumps(info, indent=2) + "\n")
        (staging / "README.md").write_text(model_card(info))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # never leave a half-written folder behind
        raise
    if args.out.exists():
        shutil.rmtree(args.out)
    os.replace(staging, args.out)
    print(f"wrote {args.out} in {info['wall_seconds']:.0f} s wall, {info['cpu_seconds']:.0f} s CPU", flush=True)


def model_card(info: dict) -> str:
    from peftbench.tiny_image import world

    p = info["parameters"]
    v = info["similarity"]["validation"]
    g = info["generator"]
    phase_rows = "\n".join(
        f"| {name} | {ph['wall_seconds']:.0f} | {ph['cpu_seconds']:.0f} |" for name, ph in info["phases"].items()
    )
    return f"""# tiny-image

The shipped models and data of peftbench's offline `image-tiny` task (the `image-gen` task with local
folders): a real `Flux2KleinPipeline` and a `Dinov2Model`, small enough to train and fine-tune on a CPU.
All of it is rebuilt by `scripts/pretrain_tiny_image.py` from the procedural world in
`peftbench.tiny_image.world` (one object, {len(world.SHAPES)} shapes x {len(world.PALETTE)} colours x {len(world.TEXTURES)} textures, two sizes, five
positions, on a background of another colour, with a caption). The concept ("sks toy": a heart with a pink
and teal checkerboard) is never part of any pretraining; pink and teal are world colours, never paired in one object.

| folder | what | parameters |
|---|---|---|
| `generator/transformer` | Flux2Transformer2DModel, inner width 256 (8 heads x 32), 1 double + 2 single blocks, mlp_ratio 1 | {p['transformer']:,} |
| `generator/vae` | AutoencoderKLFlux2, 2 levels (32, 64 channels), 4 latent channels, batch-norm stats from the latents | {p['vae']:,} |
| `generator/text_encoder` | Qwen3ForCausalLM, 2 layers, hidden 64; prompt embedding = hidden states 1 and 2 | {p['text_encoder']:,} |
| `generator/tokenizer` | word-level, {info['vocabulary']} tokens (the world's words and the task's prompt words) | |
| `similarity` | Dinov2Model (patch 4, hidden 128, 4 layers) + BitImageProcessor at 32x32 | {p['similarity']:,} |
| `concept` | 20 images of "sks toy", parquet, column `image`; captions in `default_training_params.json` | |

Training (seed {info['seed']}; `{info['command']}`; {info['threads']} threads, {info['machine']}, torch {info['torch']}):
- similarity model: attribute prediction (shape, colour, texture) from the CLS token, {info['similarity']['steps']} steps of
  {info['similarity']['batch_size']}, final loss {info['similarity']['final_loss']}. Held-out ROC AUC, same object in different scenes
  against different objects: **{v['world_auc']}** over world objects ({v['world_pairs'][0]} / {v['world_pairs'][1]} pairs),
  **{v['concept_auc']}** for the unseen concept against world objects.
- VAE: {info['vae']['steps']} steps of {info['vae']['batch_size']}, MSE + {info['vae']['kl_weight']} KL, final loss {info['vae']['final_loss']},
  {info['vae']['mosaic_fraction']:.0%} of its training pictures random colour mosaics (a general colour codec);
  reconstruction mean absolute error (0-255) {info['vae']['reconstruction']['world_mae']} on held-out world images,
  {info['vae']['reconstruction']['concept_mae']} on the concept's.
- generator: flow matching as PEFT's script trains, transformer and text encoder jointly, {g['steps']} steps of {g['batch_size']},
  peak lr {g['peak_lr']}, {g['caption_dropout']:.0%} empty captions, final loss {g['final_loss']}. On 48 prompts of full
  captions, the similarity model's attribute heads find the prompted shape / colour / texture in
  {g['drawn_attributes']['shape']:.0%} / {g['drawn_attributes']['colour']:.0%} / {g['drawn_attributes']['texture']:.0%} of the generated images
  (on the drawn originals: {g['attribute_heads_on_originals']['shape']:.0%} / {g['attribute_heads_on_originals']['colour']:.0%} / {g['attribute_heads_on_originals']['texture']:.0%};
  chance: 17% / 12% / 25%). `generated_samples.png` shows them.
- {info['schedule']}.

| phase | wall s | CPU s |
|---|---|---|
{phase_rows}
| total | {info['wall_seconds']:.0f} | {info['cpu_seconds']:.0f} |

Load average at start {info['load_average_at_start']}, at end {info['load_average_at_end']} (the machine was shared).
The loss curves and all settings are in `pretraining_info.json`.
"""


if __name__ == "__main__":
    main()
