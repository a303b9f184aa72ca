"""Can the shipped tiny FLUX.2 learn the concept, and would the benchmark see it? (issue 12's de-risk check)

    PYTHONPATH=src .venv/bin/python benchmarks/bench_image_tiny_concept.py [--steps 300] [--seeds 0 1 2] [--out results/image-tiny-derisk]

A stand-in for the `image-gen` task, written before that task existed, following PEFT's definitions
(../shared/notes/peft-image-gen-benchmark.md): the 14/2/4 split, latents cached with `latent_dist.mode()`,
patchified and normalised with the VAE's batch-norm statistics; LoRA with PEFT's flux2-klein-default config
(r 32, alpha 32, its target modules); flow matching with a uniform index into the scheduler's sigmas; the
sample order of concatenated randperm(14); AdamW with grad-norm clip 1.0. Scored as PEFT scores: each test
prompt 3 images from one generator seeded 100000, similarity = cosine of L2-normalised CLS features to the
prompt's own reference image; drift = (1 - mean cosine of adapter-off/on pairs from the same noise) / 2 over
the drift prompts (generator seeded 100000000).

It prints the base model's test similarity, each LoRA seed's, and the spread of the base score over
generation seeds (the noise of the measurement itself), and writes PNG grids to look at.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))

from peftbench.tasks.image_gen.data import split_indices  # noqa: E402
from peftbench.tiny_image import assets, pretraining, similarity  # noqa: E402
from peftbench.tiny_image.grid import image_grid  # noqa: E402

PEFT_LORA_TARGETS = ["to_out.0", "to_add_out", "to_qkv_mlp_proj", "add_k_proj", "add_q_proj", "add_v_proj",
                     "to_k", "to_q", "to_v", "linear_in", "linear_out"]


def generate(pipe, params: dict, prompt: str, generator: torch.Generator):
    return pipe(
        prompt=prompt, height=params["resolution"], width=params["resolution"],
        num_inference_steps=params["num_inference_steps"], guidance_scale=params["guidance_scale"],
        max_sequence_length=params["max_sequence_length"], text_encoder_out_layers=tuple(params["text_encoder_out_layers"]),
        generator=generator,
    ).images[0]


def test_images(pipe, params, prompts, repeats: int = 3, seed: int = 100000):
    generator = torch.Generator().manual_seed(seed)
    return [[generate(pipe, params, prompt, generator) for _ in range(repeats)] for prompt in prompts]


def test_similarity(sim_model, processor, generated: list[list], references: list) -> float:
    ref = similarity.features(sim_model, processor, references)
    scores = []
    for row, reference in zip(generated, ref):
        feats = similarity.features(sim_model, processor, row)
        scores += (feats @ reference).tolist()
    return sum(scores) / len(scores)


def drift(pipe, peft_model, sim_model, processor, params, prompts, seed: int = 100000000):
    with peft_model.disable_adapter():
        generator = torch.Generator().manual_seed(seed)
        base = [generate(pipe, params, p, generator) for p in prompts]
    generator = torch.Generator().manual_seed(seed)
    tuned = [generate(pipe, params, p, generator) for p in prompts]
    cos = (similarity.features(sim_model, processor, base) * similarity.features(sim_model, processor, tuned)).sum(-1)
    return float((1 - cos.mean()) / 2), base, tuned


def train_lora(pipe, params, latents, embeds, steps: int, lr: float, seed: int, batch_size: int):
    from diffusers import Flux2KleinPipeline
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(r=32, lora_alpha=32, target_modules=PEFT_LORA_TARGETS)
    # the adapter layers are injected into pipe.transformer itself, so the pipeline generates with them
    model = get_peft_model(pipe.transformer, config, autocast_adapter_dtype=True)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=1e-4)
    order_gen = torch.Generator().manual_seed(seed)
    order = torch.cat([torch.randperm(len(latents), generator=order_gen) for _ in range(1000)])
    sigmas = type(pipe.scheduler).from_config(pipe.scheduler.config).sigmas.clone()  # the initial state's, as PEFT
    image_ids, text_ids = pretraining.position_ids(batch_size, latents.shape[-1], embeds.shape[1])
    noise_gen = torch.Generator().manual_seed(seed)
    losses = []
    model.train()
    for step in range(steps):
        rows = order[step * batch_size : (step + 1) * batch_size]
        x0 = Flux2KleinPipeline._pack_latents(latents[rows])
        noise = torch.randn(x0.shape, generator=noise_gen)
        index = (torch.rand(batch_size, generator=noise_gen) * 1000).long()
        sigma = sigmas[index].view(-1, 1, 1)
        prediction = model(hidden_states=(1 - sigma) * x0 + sigma * noise, encoder_hidden_states=embeds[rows],
                           timestep=sigma.view(-1), img_ids=image_ids, txt_ids=text_ids, return_dict=False)[0]
        loss = F.mse_loss(prediction.float(), noise - x0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    return model, losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", type=Path, default=assets.ASSET_DIR)
    parser.add_argument("--steps", type=int, default=None, help="default: the defaults file's max_steps")
    parser.add_argument("--lr", type=float, default=None, help="default: the defaults file's lr")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("results/image-tiny-derisk"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import datasets
    from diffusers import Flux2KleinPipeline
    from transformers import AutoImageProcessor, AutoModel

    params = json.loads((args.assets / assets.DEFAULTS_FILE).read_text())
    steps = args.steps or params["max_steps"]
    lr = args.lr or params["optimizer_kwargs"]["lr"]
    rows = datasets.load_dataset(str(args.assets / params["dataset_id"]), split="train")
    images = [row[params["image_column"]].convert("RGB") for row in rows]
    prompts = params["instance_prompts"]
    train, valid, test = (idx.tolist() for idx in split_indices(len(images), params["valid_size"], params["test_size"]))
    sim_model = AutoModel.from_pretrained(args.assets / params["dino_model_id"]).eval()
    processor = AutoImageProcessor.from_pretrained(args.assets / params["dino_model_id"])
    args.out.mkdir(parents=True, exist_ok=True)
    test_prompts = [prompts[i] for i in test]
    references = [images[i] for i in test]

    def fresh_pipe():
        pipe = Flux2KleinPipeline.from_pretrained(args.assets / params["model_id"])
        pipe.set_progress_bar_config(disable=True)
        return pipe

    pipe = fresh_pipe()
    vae = pipe.vae
    with torch.no_grad():
        raw = pretraining.encode_latents(vae, pretraining.to_tensor([images[i] for i in train]))
        mean = vae.bn.running_mean.view(1, -1, 1, 1)
        std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps)
        latents = (raw - mean) / std
        embeds, _ = pipe.encode_prompt([prompts[i] for i in train], max_sequence_length=params["max_sequence_length"],
                                       text_encoder_out_layers=tuple(params["text_encoder_out_layers"]))

    results: dict = {"steps": steps, "lr": lr, "batch_size": params["batch_size"], "test_prompts": test_prompts}
    started = time.time()
    base_rows = test_images(pipe, params, test_prompts)
    results["base_test_similarity"] = round(test_similarity(sim_model, processor, base_rows, references), 4)
    # the measurement's own noise: the base model scored with other generation seeds
    results["base_test_similarity_other_generation_seeds"] = [
        round(test_similarity(sim_model, processor, test_images(pipe, params, test_prompts, seed=s), references), 4)
        for s in (1, 2)
    ]
    grid_rows = [references, [row[0] for row in base_rows]]
    results["lora"] = []
    for seed in args.seeds:
        pipe = fresh_pipe()
        t = time.time()
        peft_model, losses = train_lora(pipe, params, latents, embeds, steps, lr, seed, params["batch_size"])
        train_seconds = time.time() - t
        rows_lora = test_images(pipe, params, test_prompts)
        score = test_similarity(sim_model, processor, rows_lora, references)
        drift_value, drift_base, drift_tuned = drift(pipe, peft_model, sim_model, processor, params, params["drift_image_prompts"])
        samples = [generate(pipe, params, p, torch.Generator().manual_seed(0)) for p in params["sample_image_prompts"]]
        results["lora"].append({
            "seed": seed, "test_similarity": round(score, 4), "drift": round(drift_value, 4),
            "train_seconds": round(train_seconds, 1), "final_loss_last50": round(sum(losses[-50:]) / len(losses[-50:]), 4),
        })
        print(json.dumps(results["lora"][-1]), flush=True)
        grid_rows.append([row[0] for row in rows_lora])
        image_grid([drift_base, drift_tuned]).save(args.out / f"drift_seed{seed}.png")
        image_grid([samples]).save(args.out / f"samples_seed{seed}.png")
        image_grid([[im for row in rows_lora for im in row]]).save(args.out / f"test_seed{seed}.png")
    image_grid(grid_rows).save(args.out / "test_grid.png")
    scores = [r["test_similarity"] for r in results["lora"]]
    results["lora_mean"] = round(sum(scores) / len(scores), 4)
    results["lora_sd"] = round(float(torch.tensor(scores).std()), 4) if len(scores) > 1 else None
    results["seconds"] = round(time.time() - started, 1)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
