"""Pico synthesis models built offline from configs: BLIP-2 and GIT captioners, a Stable Diffusion pipeline.

Why: the synthesis ops must be tested through the real loading paths
(``AutoModelForImageTextToText.from_pretrained(dir)``,
``StableDiffusionPipeline.from_pretrained(dir)``) with no hub access. The
diffusion parts are sized as diffusers' own pipeline tests size them (a
two-block UNet and VAE, a small CLIP text encoder), with a tokenizer trained
here on local text. Random weights: outputs are noise, but shapes, seeding and
file handling are the real ones. The real defaults (``Salesforce/blip2-opt-2.7b``,
``CompVis/stable-diffusion-v1-4``) stay the documented choices.

Example::

    sd_dir = build_tiny_stable_diffusion(models / "sd", all_texts(world))
    blip2_dir = build_tiny_blip2(models / "blip2", all_texts(world))
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from bettersynth_demo.models import IMAGE_SIZE, PATCH_SIZE
from bettersynth_demo.tokenizers import (
    train_clip_tokenizer,
    train_lm_tokenizer,
    word_vocab_tokenizer,
)

DIFFUSION_IMAGE_SIZE = 32  # pixels the pico pipeline generates (latents are 16 x 16)


def _vision(**overrides) -> dict:
    return dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                image_size=IMAGE_SIZE, patch_size=PATCH_SIZE) | overrides


def build_tiny_blip2(out_dir: Path, texts: Sequence[str], seed: int = 0, num_query_tokens: int = 4) -> Path:
    """A pico ``Blip2ForConditionalGeneration`` (ViT + Q-Former + OPT) and its ``Blip2Processor``."""
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        BlipImageProcessor,
        OPTConfig,
        PreTrainedTokenizerFast,
    )

    torch.manual_seed(seed)
    trained = train_lm_tokenizer(texts, vocab_size=800)
    # Without an ``image_token`` attribute: Blip2Processor then registers ``<image>`` itself, as for OPT.
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=trained.backend_tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
    )
    config = Blip2Config(
        vision_config=_vision(),
        qformer_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            encoder_hidden_size=32, max_position_embeddings=64),
        text_config=OPTConfig(
            vocab_size=len(tokenizer), hidden_size=32, word_embed_proj_dim=32, num_hidden_layers=2, ffn_dim=64,
            num_attention_heads=2, max_position_embeddings=128, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        ),
        num_query_tokens=num_query_tokens,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )
    model = Blip2ForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    image_processor = BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    Blip2Processor(image_processor=image_processor, tokenizer=tokenizer, num_query_tokens=num_query_tokens).save_pretrained(out_dir)
    return out_dir


def build_tiny_git(out_dir: Path, texts: Sequence[str], seed: int = 0) -> Path:
    """A pico ``GitForCausalLM`` (CLIP-style image encoder + BERT-style decoder) and its ``GitProcessor``."""
    from transformers import CLIPImageProcessor, GitConfig, GitForCausalLM, GitProcessor

    torch.manual_seed(seed)
    tokenizer = word_vocab_tokenizer(texts)
    config = GitConfig(
        vision_config=_vision(),
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = GitForCausalLM(config)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    image_processor = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    GitProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out_dir)
    return out_dir


def build_tiny_stable_diffusion(out_dir: Path, texts: Sequence[str], seed: int = 0) -> Path:
    """A pico ``StableDiffusionPipeline`` folder (UNet, VAE, CLIP text encoder, tokenizer, DDIM scheduler).

    Loads with ``StableDiffusionPipeline.from_pretrained(out_dir)`` and, from the
    same folder, ``StableDiffusionImg2ImgPipeline``; no safety checker (as in
    diffusers' tests), so no image is blanked.
    """
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = train_clip_tokenizer(texts)
    tokenizer.model_max_length = 77  # the pipeline pads prompts to this length
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8), layers_per_block=1, sample_size=DIFFUSION_IMAGE_SIZE // 2, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, norm_num_groups=2,
    )
    vae = AutoencoderKL(
        block_out_channels=[4, 8], in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4, norm_num_groups=2,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipeline = StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False,
    )
    out_dir = Path(out_dir)
    pipeline.save_pretrained(out_dir)
    return out_dir


# The real default names the shipped recipes use, mapped to the pico stand-ins.
REAL_NAMES = {
    "clip": "openai/clip-vit-base-patch32",
    "blip2": "Salesforce/blip2-opt-2.7b",
    "llm": "Qwen/Qwen2.5-0.5B-Instruct",
    "diffusion": "CompVis/stable-diffusion-v1-4",
}


def build_pico_model_root(root: Path, texts: Sequence[str], clip_dir: Path, causal_lm_dir: Path) -> Path:
    """A ``model_root`` laid out under the real model names, each a link to a pico model.

    Why: shipped recipes name the real models; pointing ``model_root`` here runs
    them unchanged on pico stand-ins (BLIP-2 and Stable Diffusion are built
    into ``root/pico``, CLIP and the causal LM are linked from existing dirs).
    """
    root = Path(root)
    targets = {
        "clip": Path(clip_dir),
        "blip2": build_tiny_blip2(root / "pico" / "blip2", texts),
        "llm": Path(causal_lm_dir),
        "diffusion": build_tiny_stable_diffusion(root / "pico" / "sd", texts),
    }
    for key, name in REAL_NAMES.items():
        link = root / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(targets[key].resolve(), target_is_directory=True)
    return root
