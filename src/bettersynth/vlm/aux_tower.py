"""The high-resolution auxiliary vision tower: an open_clip ConvNeXt, used as a feature map.

Why: Mini-Gemini reads fine detail from a convolutional tower at high
resolution (``convnext_large_d_320`` at 768 px), whose cost grows gently with
resolution. The tower is an open_clip model named by preset plus overrides
(open_clip's own config schema), or read from an open_clip ``local-dir:``
folder, so the real one and a pico one for tests come from the same code;
weights come from a local open_clip checkpoint, never the hub. Only the image
trunk is built (not the CLIP text tower the preset also describes).

Example::

    spec = AuxTowerSpec(preset="convnext_large_d_320", image_size=768, checkpoint="/models/convnext/open_clip_model.safetensors")
    spec = AuxTowerSpec.from_open_clip_dir("/models/convnext_large_d_320", image_size=768)  # the same, from its folder
    tower = build_aux_tower(spec)
    tower(pixels).shape  # (B, 1536, 24, 24)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn


class AuxTowerSpec(BaseModel):
    """Which open_clip ConvNeXt to build; stored in the MGM model config."""

    model_config = ConfigDict(extra="forbid")

    preset: str = "convnext_large_d_320"  # open_clip model config name (see open_clip.list_models())
    image_size: int = Field(768, gt=0)  # input resolution of the aux tower
    overrides: dict[str, Any] = Field(default_factory=dict)  # open_clip config keys replaced (e.g. a tiny vision_cfg)
    checkpoint: str | None = None  # local open_clip weights (.safetensors/.bin) to load; None: random init
    model_cfg: dict[str, Any] | None = None  # an explicit open_clip model config (a folder's); replaces the preset's

    @classmethod
    def from_open_clip_dir(cls, folder: str | Path, image_size: int = 768) -> "AuxTowerSpec":
        """The tower of an open_clip model folder (``local-dir:<path>`` or the path): its config and weights."""
        from bettersynth.vlm.open_clip_vision import open_clip_dir, read_open_clip_config

        path = open_clip_dir(folder) or Path(str(folder).removeprefix("local-dir:"))
        model_cfg = read_open_clip_config(path)["model_cfg"]
        weights = sorted(path.glob("open_clip_model.safetensors")) or sorted(path.glob("*.safetensors")) or sorted(
            path.glob("*.bin")) or sorted(path.glob("*.pt*"))
        if not weights:
            raise ValueError(f"{path}: open_clip folder without weights (.safetensors/.bin/.pt)")
        return cls(preset=f"local-dir:{path.name}", image_size=image_size, model_cfg=model_cfg,
                   checkpoint=str(weights[0]))


class ConvNextFeatures(nn.Module):
    """The ConvNeXt trunk without pooling or head: pixels -> last-stage feature map."""

    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk

    @property
    def channels(self) -> int:
        return int(self.trunk.num_features)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.trunk.forward_features(pixel_values)


def build_aux_tower(spec: AuxTowerSpec) -> ConvNextFeatures:
    """Build the image trunk offline (never pretrained from the hub), then load ``spec.checkpoint`` if given."""
    from open_clip import get_model_config
    from open_clip.factory import load_state_dict
    from open_clip.model import _build_vision_tower

    base = spec.model_cfg if spec.model_cfg is not None else get_model_config(spec.preset)
    vision_cfg = dict(base or {}).get("vision_cfg")
    if vision_cfg is None:
        raise ValueError(f"aux tower preset {spec.preset!r} is not an open_clip model config")
    vision_cfg = {**vision_cfg, **spec.overrides.get("vision_cfg", {}), "image_size": spec.image_size,
                  "timm_model_pretrained": False}
    if not vision_cfg.get("timm_model_name"):
        raise ValueError(f"aux tower preset {spec.preset!r} is not a timm (ConvNeXt) tower")
    embed_dim = spec.overrides.get("embed_dim", base.get("embed_dim", 512))
    trunk = _build_vision_tower(embed_dim, vision_cfg).trunk  # the head (pool + proj) is not used
    if spec.checkpoint:
        # A full open_clip checkpoint or one holding just visual.trunk.* both do.
        state = load_state_dict(spec.checkpoint)
        weights = {k.removeprefix("visual.trunk."): v for k, v in state.items() if k.startswith("visual.trunk.")}
        result = trunk.load_state_dict(weights, strict=False)
        if not weights or result.missing_keys or result.unexpected_keys:
            raise ValueError(
                f"{spec.checkpoint}: does not fit aux tower {spec.preset!r} "
                f"(no visual.trunk.* weights, or missing {result.missing_keys[:3]}, "
                f"unexpected {result.unexpected_keys[:3]})"
            )
    return ConvNextFeatures(trunk)
