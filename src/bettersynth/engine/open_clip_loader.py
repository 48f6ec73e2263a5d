"""open_clip models from ``local-dir:`` folders (``open_clip_config.json`` + weights).

Why: the checkpoints users score with besides HF CLIP (OpenAI ViT-L-14-336 as
``timm/vit_large_patch14_clip_336.openai``, ``laion/CLIP-convnext_large_d_320.laion2B-s29B-b131K-ft-soup``)
are published in open_clip's own layout, and a hub snapshot of either repo is
exactly what open_clip's ``local-dir:`` schema loads. open_clip only *warns*
when a folder has no weights and then returns random ones, so the loader
refuses such a folder itself.

Example::

    bundle = load_model("open_clip", Path("/models/ViT-L-14-336"), "cuda", torch.bfloat16)
    pixels = bundle.processor.pixel_values(images)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from bettersynth.engine.models import MODEL_LOADERS, ModelBundle

CONFIG_FILE = "open_clip_config.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth")  # what open_clip looks for in a folder


def is_open_clip_dir(path: Path) -> bool:
    """A folder in open_clip's hub layout (what ``local-dir:`` loads)."""
    return (Path(path) / CONFIG_FILE).is_file()


@dataclass
class OpenClipProcessor:
    """open_clip's eval transform and tokenizer; picklable, so DataLoader workers can use it."""

    transform: Callable[[Any], torch.Tensor]  # PIL image -> normalised CHW tensor
    tokenizer: Callable[..., torch.Tensor]  # list of texts -> (n, context_length) token ids

    def pixel_values(self, images: list) -> torch.Tensor:
        return torch.stack([self.transform(image) for image in images])

    def tokens(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts)


@MODEL_LOADERS.register("open_clip")
def load_open_clip(path: Path, device: str, dtype: torch.dtype) -> ModelBundle:
    """An open_clip CLIP (any tower: ViT, timm ConvNeXt, ...) with its eval transform and tokenizer."""
    import open_clip

    if not is_open_clip_dir(path):
        raise ValueError(f"{str(path)!r} is not an open_clip folder: {CONFIG_FILE} is missing")
    if not any(p.suffix in WEIGHT_SUFFIXES for p in Path(path).iterdir()):
        raise ValueError(f"open_clip folder {str(path)!r} has no weights file (*.safetensors, *.bin, *.pth)")
    name = f"local-dir:{Path(path).resolve()}"
    model, _, transform = open_clip.create_model_and_transforms(name, device=device)
    model = model.to(device=device, dtype=dtype)
    return ModelBundle(model, OpenClipProcessor(transform, open_clip.get_tokenizer(name)))
