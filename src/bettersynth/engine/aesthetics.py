"""LAION-style aesthetics: a head on the normalised CLIP image embedding, one score per image.

Why: Data-Juicer's ``image_aesthetics_filter`` needs the ``simple-aesthetics-predictor``
package, whose classes (``AestheticsPredictorV1``, ``AestheticsPredictorV2Linear``,
``AestheticsPredictorV2ReLU``) are a ``CLIPVisionModelWithProjection`` plus a
head: ``predictor`` (one linear, V1) or ``layers`` (a stack of linears with
dropouts between, ReLUs in the ReLU variant). Their hub folders
(``shunk031/aesthetics-predictor-v2-sac-logos-ava1-l14-linearMSE`` and kin)
hold ``config.json`` (a CLIP vision config, ``architectures`` naming the class),
the weights under those key names, and a CLIP preprocessor. This loader reads
that layout directly: the tower through transformers, the head rebuilt from
the weights' own shapes, so no extra package (and no remote code) is needed.

Example::

    bundle = load_model("hf_aesthetics", Path("/models/aesthetics-v2-linear"), "cpu", torch.float32)
    scores = bundle.model(pixel_values)   # predictor output, LAION scale 0..10
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bettersynth.engine.image_classification import PerImageTask
from bettersynth.engine.models import MODEL_LOADERS, ModelBundle
from bettersynth.engine.task import Row

HEAD_KEY = re.compile(r"^(?:layers\.(\d+)|predictor)\.(weight|bias)$")  # V2 stack / V1 linear
LAION_SCALE = 10.0  # LAION predictors rate 0..10; Data-Juicer divides by this to get 0..1


class LinearStackHead(nn.Module):
    """The predictor head at inference: linears in order (dropouts are no-ops), optional ReLUs between."""

    def __init__(self, linears: list[nn.Linear], relu: bool):
        super().__init__()
        self.linears = nn.ModuleList(linears)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, linear in enumerate(self.linears):
            x = linear(x)
            if self.relu and i < len(self.linears) - 1:
                x = torch.relu(x)
        return x


class AestheticsScorer(nn.Module):
    """CLIP image embedding, L2-normalised, through the head: one raw score per image."""

    def __init__(self, vision: nn.Module, head: LinearStackHead):
        super().__init__()
        self.vision, self.head = vision, head

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        embeds = self.vision(pixel_values=pixel_values).image_embeds
        embeds = embeds / embeds.norm(dim=-1, keepdim=True)
        return self.head(embeds).squeeze(-1)


def _weight_files(path: Path) -> list[Path]:
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (path / index).is_file():
            shards = json.loads((path / index).read_text())["weight_map"].values()
            return [path / name for name in dict.fromkeys(shards)]
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (path / name).is_file():
            return [path / name]
    raise ValueError(f"aesthetics predictor {str(path)!r}: no model.safetensors or pytorch_model.bin")


def _head_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Only the head's tensors (the tower's are loaded by transformers)."""
    found: dict[str, torch.Tensor] = {}
    for file in _weight_files(path):
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(file), framework="pt") as handle:
                found |= {k: handle.get_tensor(k) for k in handle.keys() if HEAD_KEY.match(k)}
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
            found |= {k: v for k, v in state.items() if HEAD_KEY.match(k)}
    return found


def build_head(tensors: dict[str, torch.Tensor], relu: bool, in_dim: int, where: Path) -> LinearStackHead:
    """Linears ordered by their index in ``layers`` (or the single ``predictor``), checked to chain up."""
    order = sorted({int(m.group(1) or -1) for m in map(HEAD_KEY.match, tensors)})
    linears, width = [], in_dim
    for i in order:
        prefix = "predictor" if i < 0 else f"layers.{i}"
        weight, bias = tensors.get(f"{prefix}.weight"), tensors.get(f"{prefix}.bias")
        if weight is None or weight.ndim != 2 or weight.shape[1] != width:
            raise ValueError(f"aesthetics predictor {str(where)!r}: head layer {prefix!r} does not take width {width}")
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        linear.load_state_dict({"weight": weight} | ({"bias": bias} if bias is not None else {}))
        linears.append(linear)
        width = weight.shape[0]
    if not linears or width != 1:
        raise ValueError(f"aesthetics predictor {str(where)!r}: no 'layers.*' or 'predictor' head ending in one output")
    return LinearStackHead(linears, relu)


@MODEL_LOADERS.register("hf_aesthetics")
def load_hf_aesthetics(path: Path, device: str, dtype: torch.dtype) -> ModelBundle:
    """A simple-aesthetics-predictor folder; ``info["score_scale"]`` is 10 for LAION predictors."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    class _Tower(CLIPVisionModelWithProjection):
        _keys_to_ignore_on_load_unexpected = [HEAD_KEY.pattern]  # the head is rebuilt below

    raw = json.loads((path / "config.json").read_text())
    architecture = (raw.get("architectures") or [""])[0]
    config = CLIPVisionConfig.from_dict({k: v for k, v in raw.items() if k not in ("model_type", "architectures", "auto_map")})
    vision = _Tower.from_pretrained(path, config=config, local_files_only=True, dtype=dtype)
    head = build_head(_head_tensors(path), "relu" in architecture.lower(), config.projection_dim, path)
    model = AestheticsScorer(vision, head).to(device=device, dtype=dtype)
    processor = CLIPImageProcessor.from_pretrained(path, local_files_only=True)
    scale = LAION_SCALE if architecture.startswith("AestheticsPredictor") else 1.0
    return ModelBundle(model, processor, {"score_scale": scale})


@dataclass
class AestheticsTask(PerImageTask):
    model_path: Path
    loader: str = "hf_aesthetics"

    def forward(self, bundle: ModelBundle, inputs: dict[str, Any], rows: list[Row]) -> list[float]:
        scores = bundle.model(inputs["pixel_values"]).float() / bundle.info.get("score_scale", 1.0)
        return scores.cpu().tolist()
