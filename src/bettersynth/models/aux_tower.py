"""The high-resolution auxiliary vision tower: an open_clip ConvNeXt, used as a feature map.

Why: Mini-Gemini reads fine detail from a convolutional tower at high
resolution (``convnext_large_d_320`` at 768 px), whose cost grows gently with
resolution. The tower is an open_clip model named by preset plus overrides
(open_clip's own config schema), so the real one and a pico one for tests come
from the same code; weights come from a local open_clip checkpoint, never the hub.

Example::

    spec = AuxTowerSpec(preset="convnext_large_d_320", image_size=768, checkpoint="/models/convnext/open_clip_model.safetensors")
    tower = build_aux_tower(spec)
    tower(pixels).shape  # (B, 1536, 24, 24)
"""

from __future__ import annotations

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
    """Build the tower offline (``pretrained=None``), then load ``spec.checkpoint`` if given."""
    import open_clip

    overrides = dict(spec.overrides)
    vision_cfg = dict(open_clip.get_model_config(spec.preset) or {}).get("vision_cfg")
    if vision_cfg is None:
        raise ValueError(f"aux tower preset {spec.preset!r} is not an open_clip model config")
    overrides["vision_cfg"] = {**vision_cfg, **overrides.get("vision_cfg", {}), "image_size": spec.image_size,
                               "timm_model_pretrained": False}
    if "timm_model_name" not in overrides["vision_cfg"]:
        raise ValueError(f"aux tower preset {spec.preset!r} is not a timm (ConvNeXt) tower")
    device = torch.empty(0).device  # the device tensors are created on now (meta inside from_pretrained)
    model = open_clip.create_model(spec.preset, pretrained=None, load_weights=False, device=device, **overrides)
    if spec.checkpoint:
        # Only the image trunk is used: a full open_clip checkpoint or one holding just visual.trunk.* both do.
        result = open_clip.load_checkpoint(model, spec.checkpoint, strict=False)
        missing = [k for k in result.missing_keys if k.startswith("visual.trunk.")]
        if missing or result.unexpected_keys:
            raise ValueError(
                f"{spec.checkpoint}: does not fit preset {spec.preset!r} "
                f"(missing {missing[:3]}, unexpected {result.unexpected_keys[:3]})"
            )
    return ConvNextFeatures(model.visual.trunk)
