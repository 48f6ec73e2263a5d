"""Pico stand-ins for the scoring operators' models, saved in their real hub layouts.

Why: the ops must load users' checkpoints (``Salesforce/blip-itm-base-coco``,
``shunk031/aesthetics-predictor-v2-sac-logos-ava1-l14-linearMSE``,
``amrul-hzz/watermark_detector``) through the real loading path with nothing
downloaded; these builders write the same files and weight names at pico size
with random weights, so tests and demos exercise that path offline.

Example::

    itm_dir = build_tiny_blip_itm(models / "blip-itm", texts)
    aesthetics_dir = build_tiny_aesthetics_predictor(models / "aesthetics")
    watermark_dir = build_tiny_watermark_detector(models / "watermark")
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from transformers import (
    BlipForImageTextRetrieval,
    BlipImageProcessor,
    BlipProcessor,
    CLIPImageProcessor,
    CLIPProcessor,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessor,
)

from bettersynth_demo.models import IMAGE_SIZE, PATCH_SIZE, tiny_blip_config
from bettersynth_demo.tokenizers import train_clip_tokenizer, word_vocab_tokenizer

LAION_V2_WIDTHS = (1024, 128, 64, 16, 1)  # improved-aesthetic-predictor's MLP, kept at full width
HEAD_SPREAD = 8.0  # random embeddings of a pico tower are near-collinear; widen the scores' spread


def build_tiny_blip_itm(out_dir: Path, texts: Sequence[str], seed: int = 0) -> Path:
    """A pico ``BlipForImageTextRetrieval`` + ``BlipProcessor`` (the image–text matching scorer)."""
    torch.manual_seed(seed)
    tokenizer = word_vocab_tokenizer(texts)
    config = tiny_blip_config(tokenizer)
    model = BlipForImageTextRetrieval(config)
    _unit_layer_norms(model)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    image_processor = BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out_dir)
    return out_dir


def _unit_layer_norms(model: nn.Module) -> None:
    """BLIP's weight init zeroes LayerNorm scales, which makes a random model ignore its
    input; real checkpoints have trained scales, so the stand-in gets the usual 1s."""
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class AestheticsPredictorConfig(CLIPVisionConfig):
    """simple-aesthetics-predictor's config: a CLIP vision config under its own model type."""

    model_type = "aesthetics_predictor"


class AestheticsPredictorV2Linear(CLIPVisionModelWithProjection):
    """The layout of simple-aesthetics-predictor's class of this name: tower + ``layers`` head
    (linears with dropouts between, no activations), so ``save_pretrained`` writes its key names."""

    config_class = AestheticsPredictorConfig

    def __init__(self, config: AestheticsPredictorConfig, widths: Sequence[int] = LAION_V2_WIDTHS):
        super().__init__(config)
        dims = [config.projection_dim, *widths]
        dropouts = (0.2, 0.2, 0.1)
        modules: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(zip(dims, dims[1:])):
            modules.append(nn.Linear(d_in, d_out))
            if i < len(dropouts):
                modules.append(nn.Dropout(dropouts[i]))
        self.layers = nn.Sequential(*modules)  # keys layers.0, .2, .4, .6, .7 as in the LAION checkpoint
        self.post_init()


def build_tiny_aesthetics_predictor(out_dir: Path, seed: int = 0) -> Path:
    """A pico ``AestheticsPredictorV2Linear`` folder: config, weights, and a ``CLIPProcessor`` as on the hub."""
    torch.manual_seed(seed)
    config = AestheticsPredictorConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=32,
    )
    model = AestheticsPredictorV2Linear(config)
    with torch.no_grad():  # variance-keeping head, rescaled so scores spread around 5 of LAION's 0..10
        linears = [m for m in model.layers if isinstance(m, nn.Linear)]
        for linear in linears:
            nn.init.normal_(linear.weight, std=linear.in_features ** -0.5)
            nn.init.zeros_(linear.bias)
        linears[-1].weight.mul_(HEAD_SPREAD)
        linears[-1].bias.fill_(5.0)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    image_processor = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    CLIPProcessor(image_processor=image_processor, tokenizer=train_clip_tokenizer(["a photo"])).save_pretrained(out_dir)
    return out_dir


def build_tiny_watermark_detector(out_dir: Path, seed: int = 0) -> Path:
    """A pico two-class ``ViTForImageClassification`` (label 1 = watermark, as Data-Juicer reads it)."""
    torch.manual_seed(seed)
    config = ViTConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=IMAGE_SIZE, patch_size=PATCH_SIZE,
        id2label={0: "no_watermark", 1: "watermark"}, label2id={"no_watermark": 0, "watermark": 1},
    )
    out_dir = Path(out_dir)
    ViTForImageClassification(config).save_pretrained(out_dir)
    ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(out_dir)
    return out_dir
