"""The offline image world and the shipped tiny-image folder: formats the image-gen task loads, PEFT's rules."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from peftbench.tiny_image import assets, concept, models, similarity, world

FIXTURES = Path(__file__).parent / "fixtures" / "peft-image-gen-configs"
ASSET_DIR = assets.ASSET_DIR


def shipped_defaults() -> dict:
    return json.loads((ASSET_DIR / assets.DEFAULTS_FILE).read_text())


def test_world_is_deterministic_and_captions_say_what_is_drawn():
    first = world.pretraining_examples(50, seed=3)
    again = world.pretraining_examples(50, seed=3)
    other = world.pretraining_examples(50, seed=4)
    assert [np.asarray(a[1]).tobytes() for a in first] == [np.asarray(b[1]).tobytes() for b in again]
    assert [a[2] for a in first] != [b[2] for b in other]
    for scene, image, text in first:
        assert image.size == (world.IMAGE_SIZE, world.IMAGE_SIZE)
        assert scene.shape in text.split()  # the shape is never left out
        assert scene.colour != scene.background
        # the background colour fills the corner farthest from the object (objects never reach all corners)
        corners = [image.getpixel((0, 0)), image.getpixel((31, 31)), image.getpixel((0, 31)), image.getpixel((31, 0))]
        assert world.PALETTE[scene.background] in corners
    full = world.caption(world.Scene("ring", "orange", "striped", "large", "left", "orange"))
    assert full == "a large orange striped ring on the left on an orange background"


def test_concept_never_appears_in_the_world():
    assert concept.SHAPE not in world.SHAPES
    # its colours are the world's (the VAE must decode them), but no world object pairs them
    assert set(concept.COLOURS) <= set(world.PALETTE.values())
    for colour in world.PALETTE:
        for texture in world.TEXTURES:
            fill = {tuple(pixel) for pixel in np.asarray(world.object_fill(colour, texture)).reshape(-1, 3).tolist()}
            assert not set(concept.COLOURS) <= fill, (colour, texture)
    images, captions = concept.concept_examples()
    # the toy is never on a background of its own colours, where half of its checkerboard would vanish
    assert not set(concept.COLOUR_NAMES) & {word for text in captions for word in text.split()}
    assert len(images) == len(captions) == 20
    assert all(concept.TRIGGER in text for text in captions)
    assert not any("sks" in text for text in concept.DRIFT_PROMPTS)
    # the concept's colours are what its pictures show
    pixels = {tuple(pixel) for image in images for pixel in np.asarray(image).reshape(-1, 3).tolist()}
    assert set(concept.COLOURS) <= pixels


def test_tokenizer_knows_every_prompt_word_and_never_truncates():
    tokenizer = models.build_tokenizer(world.vocabulary() + concept.prompt_words())
    _, captions = concept.concept_examples()
    longest_world = "a large orange checkered triangle in the center on an orange background"
    texts = captions + concept.SAMPLE_PROMPTS + concept.DRIFT_PROMPTS + [longest_world, ""]
    for text in texts:
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True, enable_thinking=False
        )
        ids = tokenizer(rendered)["input_ids"]
        assert tokenizer.unk_token_id not in ids, text
        assert len(ids) <= models.MAX_SEQUENCE_LENGTH, text
        assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_roc_auc_matches_its_definition():
    assert similarity.roc_auc(np.array([0.9, 0.8]), np.array([0.1, 0.2])) == 1.0
    assert similarity.roc_auc(np.array([0.1]), np.array([0.9])) == 0.0
    assert similarity.roc_auc(np.array([0.5, 0.9]), np.array([0.5, 0.1])) == pytest.approx((0.5 + 1 + 1 + 1) / 4)


def test_shipped_defaults_have_exactly_peft_s_keys_and_point_inside_the_folder():
    defaults = shipped_defaults()
    peft_defaults = json.loads((FIXTURES / "default_training_params.json").read_text())
    assert set(defaults) == set(peft_defaults)
    for key in ("model_id", "dataset_id", "dino_model_id"):
        assert (ASSET_DIR / defaults[key]).is_dir(), key
    assert defaults["instance_prompts"] == concept.concept_examples()[1]
    assert defaults["valid_size"] + defaults["test_size"] < len(defaults["instance_prompts"])


def test_shipped_dataset_loads_as_the_task_loads_it():
    import datasets

    defaults = shipped_defaults()
    rows = datasets.load_dataset(str(ASSET_DIR / defaults["dataset_id"]), split=defaults["dataset_split"])
    assert len(rows) == len(defaults["instance_prompts"])
    images, _ = concept.concept_examples()
    for row, image in zip(rows, images):
        assert np.array_equal(np.asarray(row[defaults["image_column"]].convert("RGB")), np.asarray(image))


def test_shipped_weights_fit_the_budget():
    weights = sum(path.stat().st_size for path in ASSET_DIR.rglob("*.safetensors"))
    assert 0 < weights <= 20 * 1024 * 1024


def test_shipped_pipeline_generates_from_the_defaults():
    from diffusers import Flux2KleinPipeline

    defaults = shipped_defaults()
    pipe = Flux2KleinPipeline.from_pretrained(ASSET_DIR / defaults["model_id"])
    pipe.set_progress_bar_config(disable=True)
    image = pipe(
        prompt=concept.DRIFT_PROMPTS[2], height=defaults["resolution"], width=defaults["resolution"],
        num_inference_steps=4, guidance_scale=defaults["guidance_scale"],
        max_sequence_length=defaults["max_sequence_length"],
        text_encoder_out_layers=tuple(defaults["text_encoder_out_layers"]),
        generator=torch.Generator().manual_seed(0),
    ).images[0]
    assert image.size == (defaults["resolution"], defaults["resolution"])
    bn = pipe.vae.bn
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))  # set from the latents


def test_shipped_vae_keeps_the_concept_s_colours():
    """Every generated picture passes through the frozen VAE: the concept's checkerboard must come back in its
    own colours (pink and teal, not the averaged greys and blues of a VAE that never saw two hues side by side)."""
    from diffusers import AutoencoderKLFlux2

    from peftbench.tiny_image import pretraining

    vae = AutoencoderKLFlux2.from_pretrained(ASSET_DIR / shipped_defaults()["model_id"] / "vae").eval()
    drawn = pretraining.to_tensor(concept.concept_examples()[0])
    with torch.no_grad():
        decoded = vae.decode(vae.encode(drawn).latent_dist.mode()).sample.clamp(-1, 1)
    drawn_rgb = ((drawn + 1) * 127.5).permute(0, 2, 3, 1).reshape(-1, 3)
    decoded_rgb = ((decoded + 1) * 127.5).permute(0, 2, 3, 1).reshape(-1, 3)
    for name, rgb in zip(concept.COLOUR_NAMES, concept.COLOURS):
        mean = decoded_rgb[(drawn_rgb - torch.tensor(rgb)).abs().sum(-1) < 3].mean(0)
        # RGB distance (0-255) under 40: about a third of the distance from pink or teal to the nearest other
        # palette colour (115-126)
        assert (mean - torch.tensor(rgb, dtype=torch.float32)).norm() < 40, (name, mean.tolist())


def test_shipped_similarity_model_separates_objects():
    from transformers import AutoImageProcessor, AutoModel

    defaults = shipped_defaults()
    model = AutoModel.from_pretrained(ASSET_DIR / defaults["dino_model_id"]).eval()
    processor = AutoImageProcessor.from_pretrained(ASSET_DIR / defaults["dino_model_id"])
    assert type(model).__name__ == "Dinov2Model"
    result = similarity.validate(model, processor, seed=777, objects=30, scenes_per_object=2)
    assert result["world_auc"] >= 0.9, result


def test_every_peft_image_gen_config_applies_to_the_shipped_transformer():
    """The widths were chosen for this (tiny_image/models.py): each config wraps the shipped transformer
    and leaves a trainable adapter; a forward pass runs."""
    import warnings

    from diffusers import Flux2Transformer2DModel
    from peft import PeftConfig, get_peft_model

    defaults = shipped_defaults()
    transformer = Flux2Transformer2DModel.from_pretrained(ASSET_DIR / defaults["model_id"] / "transformer")
    folders = sorted(path.parent for path in (FIXTURES / "experiments").glob("*/*/adapter_config.json"))
    assert len(folders) == 32  # every adapter folder of PEFT's image-gen experiments (full fine-tuning has none)
    hidden = torch.randn(1, 64, transformer.config.in_channels)
    text = torch.randn(1, 4, transformer.config.joint_attention_dim)
    from peftbench.tiny_image.pretraining import position_ids

    image_ids, text_ids = position_ids(1, 8, 4)
    for folder in folders:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = get_peft_model(copy.deepcopy(transformer), PeftConfig.from_pretrained(folder))
        assert sum(p.numel() for p in model.parameters() if p.requires_grad) > 0, folder
        with torch.no_grad():
            out = model(hidden_states=hidden, encoder_hidden_states=text, timestep=torch.tensor([0.5]),
                        img_ids=image_ids, txt_ids=text_ids, return_dict=False)[0]
        assert out.shape == hidden.shape and torch.isfinite(out).all(), folder


def test_pretraining_pieces_run_briefly():
    """The rebuild script's training functions on a handful of images (seconds), so that a broken change
    shows here rather than 25 minutes into a rebuild."""
    from peftbench.tiny_image import pretraining

    torch.manual_seed(0)
    examples = world.pretraining_examples(16, seed=0)
    images = pretraining.to_tensor([image for _, image, _ in examples])
    vae_images = pretraining.vae_training_images(images, seed=0, fraction=0.25)
    assert torch.equal(vae_images[4:], images[4:]) and not torch.equal(vae_images[:4], images[:4])
    vae = models.build_vae()
    log = pretraining.train_vae(vae, vae_images, steps=2, batch_size=4, lr=1e-3, seed=0)
    assert len(log.curve) == 2
    latents = pretraining.fit_latent_batchnorm(vae, pretraining.encode_latents(vae, images))
    assert latents.shape == (16, 4 * models.LATENT_CHANNELS, 8, 8)
    assert torch.allclose(latents.mean(dim=(0, 2, 3)), torch.zeros(latents.shape[1]), atol=1e-4)
    tokenizer = models.build_tokenizer(world.vocabulary() + concept.prompt_words())
    ids, mask = pretraining.tokenize(tokenizer, [text for _, _, text in examples])
    empty = pretraining.tokenize(tokenizer, [""])
    text_encoder = models.build_text_encoder(len(tokenizer), tokenizer.pad_token_id)
    log = pretraining.train_generator(
        models.build_transformer(), text_encoder, models.build_scheduler(), latents, ids, mask,
        (empty[0][0], empty[1][0]), steps=2, batch_size=4, lr=1e-3, seed=0,
    )
    assert all(np.isfinite(point["loss"]) for point in log.curve)
    processor = models.build_similarity_processor()
    pixels, labels = pretraining.similarity_training_data(8, seed=0, processor=processor)
    sim_log, heads = pretraining.train_similarity(models.build_similarity_model(), pixels, labels, 2, 4, 1e-3, 0)
    assert set(heads) == set(pretraining.ATTRIBUTES)


def test_peft_s_lora_folder_runs_unchanged_with_task_image_tiny(tmp_path):
    """image-tiny is image-gen with the shipped defaults: PEFT's folder, no --set but a shorter run."""
    from typer.testing import CliRunner

    from peftbench.cli import app

    folder = FIXTURES / "experiments" / "lora" / "flux2-klein-default"
    results = tmp_path / "results"
    outcome = CliRunner().invoke(app, ["run", str(folder), "--task", "image-tiny", "--results", str(results),
                                       "--set", "max_steps=4", "--set", "eval_steps=4", "--set", "num_inference_steps=2"])
    assert outcome.exit_code == 0, outcome.output
    result = json.loads((results / "lora--flux2-klein-default.json").read_text())
    assert result["peftbench"]["status"] == "success", result["peftbench"]["error_msg"]
    assert result["peftbench"]["task"] == "image-tiny"
    train_config = result["run_info"]["train_config"]
    assert train_config["model_id"] == str((ASSET_DIR / "generator").resolve())
    assert train_config["resolution"] == shipped_defaults()["resolution"]
    last = result["train_info"]["metrics"][-1]
    assert math.isfinite(last["test dino_similarity"]) and last["drift"] >= 0


def test_quick_image_suite_holds_peft_s_folders_unchanged_for_image_tiny():
    from peftbench.builtin_suites import SUITE_TASKS, available_suites, suite_experiments

    assert "quick-image" in available_suites() and SUITE_TASKS["quick-image"] == "image-tiny"
    experiments = suite_experiments("quick-image")
    methods = {path.parent.name for path in experiments}
    assert len(experiments) >= 8
    assert {"lora", "oft", "ia3", "ln_tuning", "full-finetuning"} <= methods and methods & {"loha", "lokr"}
    for path in experiments:  # byte-identical to PEFT's folders (the fixture copies)
        original = FIXTURES / "experiments" / path.parent.name / path.name
        for file in path.iterdir():
            assert file.read_bytes() == (original / file.name).read_bytes(), file
