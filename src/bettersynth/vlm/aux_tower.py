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
    tower(pixels).shape  # (B, 2880, 192, 192): MGM's map, all four stages at stage 0's stride 4

The feature map is MGM's (dvlab-research/MGM, ``openclip_encoder.py``): every
ConvNeXt stage, each upsampled to the first stage's grid and concatenated along
channels, so the mining weights of an MGM checkpoint fit ours. Models built
before this read only the last stage; ``AUX_FEATURES`` keeps both readings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

AuxFeatures = Literal["mgm", "last_stage"]  # how the trunk's stages become the map the mining reads


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


def _all_stages(trunk: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """MGM's map: stem, then each stage's output, upsampled to stage 0's grid, concatenated in stage order."""
    maps, x = [], trunk.stem(pixels)
    for stage in trunk.stages:
        x = stage(x)
        maps.append(x)
    size = maps[0].shape[-2:]  # MGM upsamples in float32 (bilinear, align_corners=False), then casts back
    up = [F.interpolate(m.float(), size=size, mode="bilinear", align_corners=False).to(m.dtype) for m in maps[1:]]
    return torch.cat([maps[0], *up], dim=1)


def _last_stage(trunk: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """The map of models built before MGM's reading: the last stage only (stride 32)."""
    return trunk.forward_features(pixels)


@dataclass(frozen=True)
class FeatureReading:
    """One way to read the trunk: the map it computes, which stages it holds, how the low-res image is made."""

    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    stages: slice  # the trunk.feature_info entries in the map (channels: their sum; grid: the first one's)
    antialias: bool  # whether the CLIP tower's low-res input is downsampled with antialiasing


AUX_FEATURES: dict[str, FeatureReading] = {
    # MGM downsamples the aux image for CLIP with plain bilinear (align_corners=False): train.py, model_vqa.py.
    "mgm": FeatureReading(_all_stages, slice(None), antialias=False),
    "last_stage": FeatureReading(_last_stage, slice(-1, None), antialias=True),
}


class ConvNextFeatures(nn.Module):
    """The ConvNeXt trunk without pooling or head: pixels -> the feature map ``features`` names."""

    def __init__(self, trunk: nn.Module, features: AuxFeatures = "mgm") -> None:
        super().__init__()
        if features not in AUX_FEATURES:
            raise ValueError(f"aux_features {features!r}: expected one of {sorted(AUX_FEATURES)}")
        self.trunk = trunk
        self.features = features
        self.reading = AUX_FEATURES[features]

    @property
    def channels(self) -> int:
        return sum(int(info["num_chs"]) for info in self.trunk.feature_info[self.reading.stages])

    def grid(self, image_size: int) -> int:
        """Side of the map for a square ``image_size`` input (ConvNeXt's stem and downsamples floor)."""
        return image_size // int(self.trunk.feature_info[self.reading.stages][0]["reduction"])

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.reading.forward(self.trunk, pixel_values)


def build_aux_tower(spec: AuxTowerSpec, features: AuxFeatures = "mgm") -> ConvNextFeatures:
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
    return ConvNextFeatures(trunk, features)


def aux_grid(spec: AuxTowerSpec, features: AuxFeatures = "mgm") -> int:
    """Side of the tower's map at ``spec.image_size``, read off a weightless (meta-device) build."""
    with torch.device("meta"):
        tower = build_aux_tower(spec.model_copy(update={"checkpoint": None}), features)
    return tower.grid(spec.image_size)
