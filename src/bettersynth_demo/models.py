"""Tiny models built offline from configs, saved exactly as ``save_pretrained`` writes them.

Why: the quickstart and the tests must exercise the real loading path
(``AutoModel*.from_pretrained(local_dir)``) with no hub access. The real
defaults (``openai/clip-vit-base-patch32``, ``Salesforce/blip2-opt-2.7b``,
gemma-2b-it + CLIP ViT-L/14-336) stay the documented choices for users who have
them; these stand-ins share their architectures at pico size, random weights.

Example::

    texts = all_texts(world)
    clip_dir = build_tiny_clip(models / "clip", texts)
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from transformers import (
    BlipConfig,
    BlipForConditionalGeneration,
    BlipImageProcessor,
    BlipProcessor,
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)

from bettersynth_demo.tokenizers import train_clip_tokenizer, train_lm_tokenizer, word_vocab_tokenizer

IMAGE_SIZE = 32  # pixels fed to every tiny vision tower
PATCH_SIZE = 8  # -> 16 patch tokens per image


def _vision_config(**overrides) -> dict:
    base = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=32,
    )
    return base | overrides


def _clip_image_processor() -> CLIPImageProcessor:
    size = {"shortest_edge": IMAGE_SIZE}
    crop = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    return CLIPImageProcessor(size=size, crop_size=crop)


def build_tiny_clip(out_dir: Path, texts: Sequence[str], seed: int = 0) -> Path:
    """A pico ``CLIPModel`` + ``CLIPProcessor`` (the similarity filter's scorer)."""
    torch.manual_seed(seed)
    tokenizer = train_clip_tokenizer(texts)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=77, projection_dim=32,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=_vision_config(),
        projection_dim=32,
    )
    model = CLIPModel(config)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    CLIPProcessor(image_processor=_clip_image_processor(), tokenizer=tokenizer).save_pretrained(out_dir)
    return out_dir


def tiny_blip_config(tokenizer) -> BlipConfig:
    """The pico BLIP shared by the captioner and the ITM scorer."""
    return BlipConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, encoder_hidden_size=32, max_position_embeddings=64,
            bos_token_id=tokenizer.cls_token_id, sep_token_id=tokenizer.sep_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        # BLIP's vision default (1e-10) makes image features ~0, so captions would ignore the image.
        vision_config=_vision_config(initializer_range=0.02),
        projection_dim=32,
        image_text_hidden_size=32,
    )


def build_tiny_captioner(out_dir: Path, texts: Sequence[str], seed: int = 0) -> Path:
    """A pico ``BlipForConditionalGeneration`` + ``BlipProcessor`` (the re-captioner)."""
    torch.manual_seed(seed)
    tokenizer = word_vocab_tokenizer(texts)
    config = tiny_blip_config(tokenizer)
    model = BlipForConditionalGeneration(config)
    model.generation_config.max_new_tokens = 20
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    image_processor = BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out_dir)
    return out_dir


def build_tiny_llava(out_dir: Path, texts: Sequence[str], seed: int = 0) -> Path:
    """A pico ``LlavaForConditionalGeneration`` (CLIP tower + mlp2x_gelu + Llama) and its processor.

    Layout follows LLaVA-1.5: ``vision_feature_layer=-2``, CLS dropped
    (strategy ``default``), a two-layer GELU projector.
    """
    torch.manual_seed(seed)
    tokenizer = train_lm_tokenizer(texts, vocab_size=800)
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**_vision_config()),
        text_config=LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
        ),
        image_token_index=image_token_id,
        image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    processor = LlavaProcessor(
        image_processor=_clip_image_processor(),
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        chat_template=tokenizer.chat_template,
        image_token="<image>",
        num_additional_image_tokens=1,
    )
    processor.save_pretrained(out_dir)
    return out_dir


def build_tiny_causal_lm(out_dir: Path, texts: Sequence[str], seed: int = 0) -> Path:
    """A pico ``LlamaForCausalLM`` + tokenizer (with chat template): the stand-in for the
    perplexity scorer and the CapFusion fuser, loaded back through ``AutoModelForCausalLM``."""
    torch.manual_seed(seed)
    tokenizer = train_lm_tokenizer(texts, vocab_size=800)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def build_tiny_mini_gemini(out_dir: Path, texts: Sequence[str], seed: int = 0) -> Path:
    """A pico Mini-Gemini: HF CLIP tower (32 px), open_clip ConvNeXt aux tower (64 px), Llama LM, patch-info mining.

    Built from its parts the way a user builds MGM-2B (``bettersynth.vlm.builder.build_mini_gemini``);
    the parts are written beside ``out_dir`` in ``<out_dir>-parts/`` in the layouts users download.
    """
    from bettersynth.vlm.aux_tower import AuxTowerSpec
    from bettersynth.vlm.builder import build_mini_gemini
    from bettersynth_demo.open_clip_models import build_tiny_open_clip

    out_dir = Path(out_dir)
    parts = out_dir.parent / f"{out_dir.name}-parts"
    torch.manual_seed(seed)
    vision = parts / "clip-vision"
    CLIPVisionModel(CLIPVisionConfig(**_vision_config())).save_pretrained(vision)
    _clip_image_processor().save_pretrained(vision)
    lm = build_tiny_causal_lm(parts / "lm", texts, seed=seed)
    aux = AuxTowerSpec.from_open_clip_dir(build_tiny_open_clip(parts / "convnext", kind="convnext", seed=seed),
                                          image_size=2 * IMAGE_SIZE)
    return build_mini_gemini(vision, lm, aux, out_dir, seed=seed)  # window 4: 16x16 stage-0 cells over 4x4 tokens


BASE_MODELS = {"llava": build_tiny_llava, "mgm": build_tiny_mini_gemini}  # --arch: the pico base VLM to train
