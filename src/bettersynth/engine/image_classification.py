"""Class probabilities of a HF image classifier, one value per distinct image of a sample.

Why: Data-Juicer's ``image_watermark_filter`` runs ``AutoModelForImageClassification``
on one sample's images at a time and keeps ``softmax(logits)[:, 1]``; here the
images of many samples share a batch. Like Data-Juicer, a sample's images are
scored once per distinct path (it loads them into a dict keyed by path).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from bettersynth.core.sample import Sample
from bettersynth.engine.models import MODEL_LOADERS, ModelBundle
from bettersynth.engine.task import InferenceTask, Row


@MODEL_LOADERS.register("hf_image_classifier")
def load_hf_image_classifier(path: Path, device: str, dtype: torch.dtype) -> ModelBundle:
    """Any ``AutoModelForImageClassification`` folder (ViT, ConvNeXt, ...) with its image processor."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
    model = AutoModelForImageClassification.from_pretrained(path, local_files_only=True, dtype=dtype).to(device)
    return ModelBundle(model, processor)


def distinct_image_rows(sample_idx: int, sample: Sample) -> list[Row]:
    """One row per distinct image path, in first-seen order, keyed by that position."""
    return [Row(sample_idx, i, image) for i, image in enumerate(dict.fromkeys(sample.images))]


class PerImageTask(InferenceTask):
    """A task that scores each distinct image once, from the processor's ``pixel_values``."""

    def rows(self, sample_idx: int, sample: Sample) -> list[Row]:
        return distinct_image_rows(sample_idx, sample)

    def prepare(self, row: Row, image: Image.Image | None, processor: Any, info: dict) -> dict[str, Any]:
        return {"image": image}

    def collate(self, prepared: list[dict[str, Any]], processor: Any, info: dict) -> dict[str, Any]:
        return {"pixel_values": processor(images=[p["image"] for p in prepared], return_tensors="pt")["pixel_values"]}


@dataclass
class ImageClassProbTask(PerImageTask):
    model_path: Path
    class_index: int = 1  # the probability returned, e.g. 1 = "watermark"
    loader: str = "hf_image_classifier"

    def forward(self, bundle: ModelBundle, inputs: dict[str, Any], rows: list[Row]) -> list[float]:
        logits = bundle.model(pixel_values=inputs["pixel_values"]).logits
        if not 0 <= self.class_index < logits.shape[-1]:
            raise ValueError(f"{self.model_path}: class index {self.class_index} out of range for {logits.shape[-1]} classes")
        return logits.float().softmax(dim=-1)[:, self.class_index].cpu().tolist()
