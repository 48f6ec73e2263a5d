"""BLIP image–text matching: P(match) per (chunk text, image) row.

Why: Data-Juicer's ``image_text_matching_filter`` calls
``BlipForImageTextRetrieval`` one chunk at a time and takes
``softmax(itm_score)[:, 1]``. Here rows from many samples share one batch; the
forward is the model's own ITM path (vision encoder, text encoder
cross-attending to the image tokens, ITM head), written out so the image
attention mask lives on the model's device (transformers builds it on the CPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from bettersynth.core.sample import Sample
from bettersynth.engine.clip_similarity import flip
from bettersynth.engine.models import MODEL_LOADERS, ModelBundle
from bettersynth.engine.task import InferenceTask, Row, image_rows


@MODEL_LOADERS.register("hf_blip_itm")
def load_hf_blip_itm(path: Path, device: str, dtype: torch.dtype) -> ModelBundle:
    """A ``BlipForImageTextRetrieval`` folder (e.g. ``Salesforce/blip-itm-base-coco``) with its processor."""
    from transformers import AutoProcessor, BlipForImageTextRetrieval

    processor = AutoProcessor.from_pretrained(path, local_files_only=True)
    model = BlipForImageTextRetrieval.from_pretrained(path, local_files_only=True, dtype=dtype).to(device)
    return ModelBundle(model, processor, {"max_text_len": model.config.text_config.max_position_embeddings})


@dataclass
class ImageTextMatchingTask(InferenceTask):
    model_path: Path
    horizontal_flip: bool = False
    vertical_flip: bool = False
    loader: str = "hf_blip_itm"

    def rows(self, sample_idx: int, sample: Sample) -> list[Row]:
        return image_rows(sample_idx, sample)

    def transform_image(self, row: Row, image: Image.Image) -> Image.Image:
        return flip(image, self.horizontal_flip, self.vertical_flip)

    def prepare(self, row: Row, image: Image.Image | None, processor: Any, info: dict) -> dict[str, Any]:
        return {"image": image, "text": row.text}

    def collate(self, prepared: list[dict[str, Any]], processor: Any, info: dict) -> dict[str, Any]:
        pixels = processor.image_processor(images=[p["image"] for p in prepared], return_tensors="pt")["pixel_values"]
        # The text cross-attends to its own image, so every row carries its own tokens.
        tokens = processor.tokenizer(
            [p["text"] for p in prepared], padding=True, truncation=True, max_length=info.get("max_text_len", 512), return_tensors="pt"
        )
        return {"pixel_values": pixels, "input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}

    def forward(self, bundle: ModelBundle, inputs: dict[str, Any], rows: list[Row]) -> list[float]:
        model = bundle.model
        image_embeds = model.vision_model(pixel_values=inputs["pixel_values"]).last_hidden_state
        image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        text = model.text_encoder(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=image_mask,
        ).last_hidden_state
        logits = model.itm_head(text[:, 0, :])
        return logits.float().softmax(dim=-1)[:, 1].cpu().tolist()
