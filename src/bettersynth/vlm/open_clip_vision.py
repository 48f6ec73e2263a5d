"""An open_clip ViT image tower as a Hugging Face ``CLIPVisionModel`` (weights converted, math unchanged).

Why: users hold vision towers as open_clip checkpoints (``open_clip_config.json``
+ ``open_clip_model.safetensors``, loaded with ``local-dir:``) as often as HF
ones. ``LlavaForConditionalGeneration`` builds its tower from a ``CLIPVisionConfig``,
so converting the weights once at build time lets the trainer, freezing table,
processor and ``save_pretrained`` stay the LLaVA ones. The conversion is
exact for the standard open_clip ViT block (pre-LN, fused qkv, GELU or QuickGELU);
variants whose token path differs (layer scale, no pre-LN, custom blocks) are
refused by name rather than converted approximately.

Example::

    vision, image_processor = open_clip_vision_tower("local-dir:/models/ViT-L-14-336")
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

LOCAL_DIR = "local-dir:"
CONFIG_FILE = "open_clip_config.json"

# Vision-config keys whose non-default value changes per-token math the HF CLIP tower cannot express.
_UNSUPPORTED: dict[str, Any] = {
    "ls_init_value": None, "no_ln_pre": False, "pos_embed_type": "learnable", "block_type": None,
    "qk_norm": False, "scaled_cosine_attn": False, "scale_heads": False, "scale_attn_inner": False,
    "scale_attn": False, "scale_fc": False, "act_kwargs": None, "norm_kwargs": None,
}


def open_clip_dir(name: str | Path) -> Path | None:
    """The folder of an open_clip model named ``local-dir:<path>`` or given as a folder with its config; else None."""
    text = str(name)
    path = Path(text.removeprefix(LOCAL_DIR))
    if text.startswith(LOCAL_DIR) or (path / CONFIG_FILE).is_file():
        if not (path / CONFIG_FILE).is_file():
            raise ValueError(f"{text}: no {CONFIG_FILE} (not an open_clip model folder)")
        return path
    return None


def read_open_clip_config(folder: Path) -> dict[str, Any]:
    """``open_clip_config.json`` of a model folder (``model_cfg`` and ``preprocess_cfg``)."""
    config = json.loads((Path(folder) / CONFIG_FILE).read_text(encoding="utf-8"))
    if "model_cfg" not in config:
        raise ValueError(f"{folder / CONFIG_FILE}: no 'model_cfg'")
    return config


def open_clip_vision_tower(name: str | Path) -> tuple[CLIPVisionModel, CLIPImageProcessor]:
    """Load the open_clip model at ``name`` offline and convert its ViT image tower to HF CLIP."""
    import open_clip

    folder = open_clip_dir(name)
    if folder is None:
        raise ValueError(f"{name}: not an open_clip model folder (expected 'local-dir:<path>' with {CONFIG_FILE})")
    config = read_open_clip_config(folder)
    vision_cfg = config["model_cfg"].get("vision_cfg", {})
    if vision_cfg.get("timm_model_name"):
        raise ValueError(f"{folder}: image tower is timm {vision_cfg['timm_model_name']!r}, not a ViT; "
                         "a ConvNeXt belongs in the Mini-Gemini aux tower (AuxTowerSpec.from_open_clip_dir)")
    odd = {k: vision_cfg[k] for k, default in _UNSUPPORTED.items() if vision_cfg.get(k, default) != default}
    if odd:
        raise ValueError(f"{folder}: open_clip ViT settings {odd} have no Hugging Face CLIP equivalent")
    model = open_clip.create_model(f"{LOCAL_DIR}{folder}", device="cpu")  # weights from the folder, no download
    visual = model.visual
    hf_config = CLIPVisionConfig(
        hidden_size=visual.conv1.out_channels,
        intermediate_size=visual.transformer.resblocks[0].mlp.c_fc.out_features,
        num_hidden_layers=len(visual.transformer.resblocks),
        num_attention_heads=visual.transformer.resblocks[0].attn.num_heads,
        image_size=visual.image_size[0],
        patch_size=visual.patch_size[0],
        projection_dim=visual.output_dim,
        hidden_act="quick_gelu" if config["model_cfg"].get("quick_gelu") else "gelu",
        layer_norm_eps=visual.ln_pre.eps,
    )
    tower = CLIPVisionModel(hf_config)
    tower.load_state_dict(_convert(visual.state_dict(), hf_config.num_hidden_layers), strict=True)
    return tower.eval(), _image_processor(config.get("preprocess_cfg", {}), hf_config.image_size)


def _convert(sd: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """open_clip ``VisionTransformer`` state dict -> HF ``CLIPVisionModel`` state dict (v5 layout)."""
    out = {
        "embeddings.class_embedding": sd["class_embedding"],
        "embeddings.patch_embedding.weight": sd["conv1.weight"],
        "embeddings.position_embedding.weight": sd["positional_embedding"],
        "pre_layrnorm.weight": sd["ln_pre.weight"], "pre_layrnorm.bias": sd["ln_pre.bias"],
        "post_layernorm.weight": sd["ln_post.weight"], "post_layernorm.bias": sd["ln_post.bias"],
    }
    for i in range(layers):
        src, dst = f"transformer.resblocks.{i}.", f"encoder.layers.{i}."
        q, k, v = sd[src + "attn.in_proj_weight"].chunk(3)
        qb, kb, vb = sd[src + "attn.in_proj_bias"].chunk(3)
        out |= {
            dst + "self_attn.q_proj.weight": q, dst + "self_attn.q_proj.bias": qb,
            dst + "self_attn.k_proj.weight": k, dst + "self_attn.k_proj.bias": kb,
            dst + "self_attn.v_proj.weight": v, dst + "self_attn.v_proj.bias": vb,
            dst + "self_attn.out_proj.weight": sd[src + "attn.out_proj.weight"],
            dst + "self_attn.out_proj.bias": sd[src + "attn.out_proj.bias"],
            dst + "layer_norm1.weight": sd[src + "ln_1.weight"], dst + "layer_norm1.bias": sd[src + "ln_1.bias"],
            dst + "layer_norm2.weight": sd[src + "ln_2.weight"], dst + "layer_norm2.bias": sd[src + "ln_2.bias"],
            dst + "mlp.fc1.weight": sd[src + "mlp.c_fc.weight"], dst + "mlp.fc1.bias": sd[src + "mlp.c_fc.bias"],
            dst + "mlp.fc2.weight": sd[src + "mlp.c_proj.weight"], dst + "mlp.fc2.bias": sd[src + "mlp.c_proj.bias"],
        }
    return {k: v.clone() for k, v in out.items()}


def _image_processor(preprocess: dict[str, Any], image_size: int) -> CLIPImageProcessor:
    """open_clip's eval transform (resize shortest edge, center crop, normalise) as a CLIP image processor."""
    import open_clip

    size = preprocess.get("image_size", image_size)
    size = size[0] if isinstance(size, (list, tuple)) else size
    mode = preprocess.get("resize_mode", "shortest")
    if mode != "shortest":
        raise ValueError(f"open_clip resize_mode {mode!r}: only 'shortest' (resize + center crop) maps to CLIP's")
    return CLIPImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size},
        image_mean=list(preprocess.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        image_std=list(preprocess.get("std", open_clip.OPENAI_DATASET_STD)),
        resample=3 if preprocess.get("interpolation", "bicubic") == "bicubic" else 2,  # PIL BICUBIC / BILINEAR
        do_convert_rgb=True,
    )
