"""Tiny open_clip models built offline, saved in the layout open_clip's ``local-dir:`` schema loads.

Why: users score with open_clip checkpoints (ViT-L-14-336, ``convnext_large_d_320``)
published as ``open_clip_config.json`` + ``open_clip_model.safetensors`` on the
hub; the tests and the quickstart must load that same layout through
``open_clip.create_model_and_transforms("local-dir:...")`` with no download. The
stand-ins share the real architectures (a ViT, or a timm ConvNeXt tower) at pico
size, random weights; the tokenizer is open_clip's bundled BPE, which ships in
the wheel.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import open_clip
import safetensors.torch
import torch

TowerKind = Literal["vit", "convnext"]

_TEXT_CFG = {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}
_VISION_CFG: dict[TowerKind, dict] = {
    "vit": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    # the real recipe's aux tower family (timm ConvNeXt), at the smallest timm config
    "convnext": {
        "timm_model_name": "convnext_atto", "timm_model_pretrained": False, "timm_pool": "",
        "timm_proj": "mlp", "timm_drop": 0.0, "timm_drop_path": 0.0, "image_size": 64,
    },
}


def build_tiny_open_clip(out_dir: Path, kind: TowerKind = "vit", seed: int = 0) -> Path:
    """Write a pico open_clip model: ``open_clip_config.json`` (``model_cfg`` + ``preprocess_cfg``)
    and ``open_clip_model.safetensors``, exactly as ``open_clip.push_to_hf_hub.save_for_hf`` does."""
    torch.manual_seed(seed)
    model_cfg = {"embed_dim": 32, "vision_cfg": dict(_VISION_CFG[kind]), "text_cfg": dict(_TEXT_CFG)}
    model = open_clip.CLIP(**model_cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(model.state_dict(), out_dir / "open_clip_model.safetensors")
    preprocess_cfg = {
        "image_size": model_cfg["vision_cfg"]["image_size"],
        "mean": list(open_clip.OPENAI_DATASET_MEAN),
        "std": list(open_clip.OPENAI_DATASET_STD),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}
    (out_dir / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    return out_dir
