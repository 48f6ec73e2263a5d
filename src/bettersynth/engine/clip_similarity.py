"""Image–text cosine similarity with a CLIP model, one value per (chunk text, image) row.

Why: Data-Juicer's score is ``logits_per_text / 100``, which equals the cosine
only when ``logit_scale`` is exactly 100; computing the cosine of the
normalised embeddings directly is exact for every checkpoint and skips the
full text x image logits matrix. HF ``CLIPModel`` folders and open_clip
folders (ViT-L-14-336, ``convnext_large_d_320``) score the same way; the
folder's contents pick the family, so one recipe line works for either.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from bettersynth.core.registry import Registry
from bettersynth.core.sample import Sample
from bettersynth.engine.models import ModelBundle
from bettersynth.engine.open_clip_loader import is_open_clip_dir
from bettersynth.engine.task import InferenceTask, Row, image_rows


def _pooled(features: Any) -> torch.Tensor:
    """transformers 5 returns a model output whose pooler_output is the projection."""
    return features if isinstance(features, torch.Tensor) else features.pooler_output


class HfClipEncoder:
    """``CLIPModel`` + ``CLIPProcessor``: padded tokens with an attention mask."""

    @staticmethod
    def inputs(processor: Any, images: list[Image.Image] | None, texts: list[str], info: dict) -> dict[str, torch.Tensor]:
        """Model inputs; without ``images`` (decoded on the device later) the text's only."""
        tokens = processor.tokenizer(texts, padding=True, truncation=True, max_length=info.get("max_text_len", 77), return_tensors="pt")
        inputs = {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}
        if images is not None:
            inputs["pixel_values"] = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
        return inputs

    @staticmethod
    def decodes_on_device(processor: Any) -> bool:
        """The torchvision image processor (transformers' default) takes device tensors and resizes them there."""
        return getattr(processor.image_processor, "backend", None) == "torchvision"

    @staticmethod
    def device_pixels(processor: Any, images: list[torch.Tensor]) -> torch.Tensor:
        """The same processor, its settings read from the model folder, run where the tensors are: as the
        CPU path only with the PIL decode swapped for the device's."""
        device = images[0].device
        return processor.image_processor(images=images, return_tensors="pt", input_data_format="channels_first",
                                         device=device)["pixel_values"]

    @staticmethod
    def image_features(model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        return _pooled(model.get_image_features(pixel_values=inputs["pixel_values"]))

    @staticmethod
    def text_features(model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        return _pooled(model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]))


class OpenClipEncoder:
    """open_clip model + ``OpenClipProcessor``: fixed-length tokens (the model pools at EOT)."""

    @staticmethod
    def inputs(processor: Any, images: list[Image.Image], texts: list[str], info: dict) -> dict[str, torch.Tensor]:
        return {"pixel_values": processor.pixel_values(images), "input_ids": processor.tokens(texts)}

    @staticmethod
    def decodes_on_device(processor: Any) -> bool:
        return False  # its transforms are PIL's

    @staticmethod
    def image_features(model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        return model.encode_image(inputs["pixel_values"])

    @staticmethod
    def text_features(model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        return model.encode_text(inputs["input_ids"])


CLIP_ENCODERS: Registry[type] = Registry("CLIP family")  # keyed by the MODEL_LOADERS name
CLIP_ENCODERS.register("hf_clip")(HfClipEncoder)
CLIP_ENCODERS.register("open_clip")(OpenClipEncoder)


def clip_loader_for(path: Path) -> str:
    """``open_clip`` for a folder with ``open_clip_config.json``, else ``hf_clip``."""
    return "open_clip" if is_open_clip_dir(path) else "hf_clip"


@dataclass
class ClipSimilarityTask(InferenceTask):
    model_path: Path
    horizontal_flip: bool = False
    vertical_flip: bool = False
    loader: str = "auto"  # "auto": chosen from the folder's contents (clip_loader_for)

    def __post_init__(self) -> None:
        if self.loader == "auto":
            self.loader = clip_loader_for(self.model_path)
        CLIP_ENCODERS.get(self.loader)  # fail now on a loader with no encoder

    def rows(self, sample_idx: int, sample: Sample) -> list[Row]:
        return image_rows(sample_idx, sample)

    def transform_image(self, row: Row, image: Image.Image) -> Image.Image:
        return flip(image, self.horizontal_flip, self.vertical_flip)

    def prepare(self, row: Row, image: Image.Image | None, processor: Any, info: dict) -> dict[str, Any]:
        # Decoding happens per row (a bad file must fail alone); resizing and
        # tokenising are cheaper per batch, so they wait for ``collate``.
        return {"image": image, "text": row.text}

    def collate(self, prepared: list[dict[str, Any]], processor: Any, info: dict) -> dict[str, Any]:
        # A chunk with several images repeats its text: encode each distinct text once.
        texts = list(dict.fromkeys(p["text"] for p in prepared))
        index = {text: i for i, text in enumerate(texts)}
        images = [p["image"] for p in prepared]
        on_device = all(image is None for image in images)  # decoded on the device: pixels come in device_inputs
        inputs = CLIP_ENCODERS.get(self.loader).inputs(processor, None if on_device else images, texts, info)
        return inputs | {"text_index": torch.tensor([index[p["text"]] for p in prepared])}

    def decodes_on_device(self, processor: Any) -> bool:
        return CLIP_ENCODERS.get(self.loader).decodes_on_device(processor)

    def device_inputs(self, bundle: ModelBundle, inputs: dict[str, Any], images: list[Any], rows: list[Row]) -> dict[str, Any]:
        images = [flip_tensor(image, self.horizontal_flip, self.vertical_flip) for image in images]
        return inputs | {"pixel_values": CLIP_ENCODERS.get(self.loader).device_pixels(bundle.processor, images)}

    def forward(self, bundle: ModelBundle, inputs: dict[str, Any], rows: list[Row]) -> list[float]:
        encoder = CLIP_ENCODERS.get(self.loader)
        image = encoder.image_features(bundle.model, inputs)
        text = encoder.text_features(bundle.model, inputs)[inputs["text_index"]]
        cosine = (F.normalize(image.float(), dim=-1) * F.normalize(text.float(), dim=-1)).sum(-1)
        return cosine.cpu().tolist()


def flip(image: Image.Image, horizontal: bool, vertical: bool) -> Image.Image:
    """Data-Juicer's flip options: mirror left-right, then upside down."""
    if horizontal:
        image = ImageOps.mirror(image)
    if vertical:
        image = ImageOps.flip(image)
    return image


def flip_tensor(image: torch.Tensor, horizontal: bool, vertical: bool) -> torch.Tensor:
    """``flip`` for a CHW tensor: the same pixels as mirroring / flipping the PIL image."""
    dims = [d for d, on in ((-1, horizontal), (-2, vertical)) if on]
    return torch.flip(image, dims) if dims else image
