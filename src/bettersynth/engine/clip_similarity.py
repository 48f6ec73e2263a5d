"""Image–text cosine similarity with a CLIP model, one value per (chunk text, image) row.

Why: Data-Juicer's score is ``logits_per_text / 100``, which equals the cosine
only when ``logit_scale`` is exactly 100; computing the cosine of the
normalised embeddings directly is exact for every checkpoint and skips the
full text x image logits matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from bettersynth.data.sample import Sample
from bettersynth.engine.models import ModelBundle
from bettersynth.engine.task import InferenceTask, Row, image_rows


def _pooled(features: Any) -> torch.Tensor:
    """transformers 5 returns a model output whose pooler_output is the projection."""
    return features if isinstance(features, torch.Tensor) else features.pooler_output


@dataclass
class ClipSimilarityTask(InferenceTask):
    model_path: Path
    horizontal_flip: bool = False
    vertical_flip: bool = False
    loader: str = "hf_clip"

    def rows(self, sample_idx: int, sample: Sample) -> list[Row]:
        return image_rows(sample_idx, sample)

    def transform_image(self, row: Row, image: Image.Image) -> Image.Image:
        if self.horizontal_flip:
            image = ImageOps.mirror(image)
        if self.vertical_flip:
            image = ImageOps.flip(image)
        return image

    def prepare(self, row: Row, image: Image.Image | None, processor: Any, info: dict) -> dict[str, Any]:
        # Decoding happens per row (a bad file must fail alone); resizing and
        # tokenising are cheaper per batch, so they wait for ``collate``.
        return {"image": image, "text": row.text}

    def collate(self, prepared: list[dict[str, Any]], processor: Any, info: dict) -> dict[str, Any]:
        pixels = processor.image_processor(images=[p["image"] for p in prepared], return_tensors="pt")["pixel_values"]
        # A chunk with several images repeats its text: encode each distinct text once.
        texts = list(dict.fromkeys(p["text"] for p in prepared))
        index = {text: i for i, text in enumerate(texts)}
        tokens = processor.tokenizer(texts, padding=True, truncation=True, max_length=info.get("max_text_len", 77), return_tensors="pt")
        return {
            "pixel_values": pixels,
            "input_ids": tokens["input_ids"],
            "attention_mask": tokens["attention_mask"],
            "text_index": torch.tensor([index[p["text"]] for p in prepared]),
        }

    def forward(self, bundle: ModelBundle, inputs: dict[str, Any], rows: list[Row]) -> list[float]:
        model = bundle.model
        image = _pooled(model.get_image_features(pixel_values=inputs["pixel_values"]))
        text = _pooled(model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]))
        text = text[inputs["text_index"]]
        cosine = (F.normalize(image.float(), dim=-1) * F.normalize(text.float(), dim=-1)).sum(-1)
        return cosine.cpu().tolist()
