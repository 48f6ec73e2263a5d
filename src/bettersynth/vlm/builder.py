"""Assemble a trainable VLM from a local CLIP vision tower and a local HF causal LM.

Why: users pick the parts (CLIP ViT-L/14-336 + gemma-2b-it in the recipe, or
whatever their fleet has offline; the CLIP tower as a Hugging Face checkpoint
or an open_clip ``local-dir:`` one, converted exactly); stage 1 then needs a model directory with
both parts' weights, a fresh ``mlp2x_gelu`` projector, an ``<image>`` token and
a processor. LLaVA-1.5 layout: ``vision_feature_layer=-2``, CLS dropped.

Example::

    build_llava(Path("/models/clip-vit-large-patch14-336"), Path("/models/gemma-2b-it"), Path("/models/llava-base"))
    build_llava("local-dir:/models/open_clip-ViT-L-14-336", Path("/models/gemma-2b-it"), Path("/models/llava-oc"))
    build_mini_gemini(clip_dir, lm_dir, AuxTowerSpec.from_open_clip_dir("/models/convnext_large_d_320"), out)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    CLIPImageProcessor,
    CLIPVisionModel,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)

from bettersynth.vlm.aux_tower import AuxTowerSpec, build_aux_tower
from bettersynth.vlm.open_clip_vision import open_clip_dir, open_clip_vision_tower

logger = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"


def build_llava(vision_dir: Path | str, lm_dir: Path, out_dir: Path, seed: int = 0) -> Path:
    """A ``LlavaForConditionalGeneration`` with the given tower (HF CLIP, or open_clip ViT) and LM, saved with its processor."""
    return _build(vision_dir, lm_dir, out_dir, seed, aux=None)


def build_mini_gemini(vision_dir: Path | str, lm_dir: Path, aux: AuxTowerSpec, out_dir: Path, seed: int = 0) -> Path:
    """A Mini-Gemini-style model: the LLaVA parts plus the aux ConvNeXt (``aux.checkpoint``) and fresh mining.

    The mining window is MGM's, fixed by the towers: the aux stage-0 grid over the CLIP token grid (a
    ValueError when it does not divide), so the model reads its aux map as MGM's code would.
    """
    return _build(vision_dir, lm_dir, out_dir, seed, aux=aux)


def _build(vision_dir: Path | str, lm_dir: Path, out_dir: Path, seed: int, aux: AuxTowerSpec | None) -> Path:
    torch.manual_seed(seed)  # the fresh projector (and mining) initialisation
    vision, image_processor = load_vision_tower(vision_dir)
    lm = AutoModelForCausalLM.from_pretrained(lm_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(lm_dir)
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    if len(tokenizer) > lm.get_input_embeddings().num_embeddings:
        lm.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    vcfg = vision.config
    fields: dict[str, Any] = dict(
        vision_config=vcfg, text_config=lm.config,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=(vcfg.image_size // vcfg.patch_size) ** 2,
        vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act="gelu",
        tie_word_embeddings=bool(getattr(lm.config, "tie_word_embeddings", False)),
    )
    patch_size = vcfg.patch_size
    if aux is None:
        model = LlavaForConditionalGeneration(LlavaConfig(**fields))
    else:
        from bettersynth.vlm.mgm import MiniGeminiConfig, MiniGeminiForConditionalGeneration, mgm_mining_window

        if aux.image_size % vcfg.image_size:
            raise ValueError(f"aux image_size {aux.image_size} must be a multiple of the CLIP tower's {vcfg.image_size}")
        model = MiniGeminiForConditionalGeneration(
            MiniGeminiConfig(aux_tower=aux.model_copy(update={"checkpoint": None}).model_dump(), aux_features="mgm",
                             mining_window=mgm_mining_window(vcfg, aux), **fields)
        )
        model.model.aux_tower.load_state_dict(build_aux_tower(aux).state_dict())
        # One processor at the aux size; the model downsamples for CLIP, so scale the patch to keep the token count.
        patch_size = vcfg.patch_size * aux.image_size // vcfg.image_size
        image_processor = CLIPImageProcessor.from_dict(
            image_processor.to_dict(), size={"shortest_edge": aux.image_size},
            crop_size={"height": aux.image_size, "width": aux.image_size},
        )
    model.model.vision_tower.load_state_dict(vision.state_dict())
    model.model.language_model.load_state_dict(lm.get_decoder().state_dict())
    model.lm_head.load_state_dict(lm.get_output_embeddings().state_dict())
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=patch_size,
        vision_feature_select_strategy="default", chat_template=tokenizer.chat_template,
        image_token=IMAGE_TOKEN, num_additional_image_tokens=1,
    ).save_pretrained(out_dir)
    logger.info("built %s from %s + %s into %s", type(model).__name__, vision_dir, lm_dir, out_dir)
    return out_dir


def load_vision_tower(vision_dir: Path | str) -> tuple[CLIPVisionModel, CLIPImageProcessor]:
    """The CLIP vision tower and its image processor: an HF CLIP checkpoint (``CLIPModel`` or
    ``CLIPVisionModel``), or an open_clip ViT folder (``local-dir:<path>``, or a folder holding
    ``open_clip_config.json``), converted to HF CLIP."""
    if open_clip_dir(vision_dir) is not None:
        return open_clip_vision_tower(vision_dir)
    try:
        vision = CLIPVisionModel.from_pretrained(vision_dir, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"{vision_dir}: neither a Hugging Face CLIP checkpoint nor an open_clip model folder ({exc})"
        ) from exc
    return vision, CLIPImageProcessor.from_pretrained(vision_dir)
