"""Phrase grounding recall with OWL-ViT: the share of a caption's noun phrases found in its image.

Why: Data-Juicer runs OWL-ViT per chunk, all images of a chunk sharing one
query list. Here (chunk, image) rows from many samples share a batch: query
lists are padded to the longest (as ``OwlViTProcessor`` pads them) and the
padded queries are masked out before the per-box arg-max, so each row's
detections equal those of its own unpadded call. The recall rule is
Data-Juicer's: boxes scoring above ``conf_thr``, best first, at most one per
phrase; a box covering more than ``large_area_ratio_thr`` of the image is
skipped, and one overlapping an already matched box by IoU > ``iou_thr`` too.

Example::

    task = PhraseGroundingTask(model_path=Path("models/owlvit"), phrases=[{0: ["a red bus", "the street"]}])
    engine.run(task, [sample])   # [{(0, 0, 0): 0.5}]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageOps

from bettersynth.core.sample import Sample
from bettersynth.engine.models import ModelBundle
from bettersynth.engine.task import InferenceTask, Row

Box = Sequence[float]  # x0, y0, x1, y1 in pixels


@dataclass(frozen=True)
class PhraseRow(Row):
    """An image of a chunk, with the chunk's noun phrases as the detector's queries."""

    phrases: tuple[str, ...] = ()


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two corner boxes; 0 when both are empty."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def grounding_recall(
    scores: Sequence[float], labels: Sequence[int], boxes: Sequence[Box], n_phrases: int,
    image_area: float, conf_thr: float, iou_thr: float, large_area_ratio_thr: float,
) -> float:
    """Share of the ``n_phrases`` phrases matched by a box (one detection per box, as scored)."""
    order = sorted((i for i in range(len(scores)) if scores[i] > conf_thr), key=lambda i: -scores[i])[:n_phrases]
    hit: dict[int, Box] = {}
    for i in order:
        box = boxes[i]
        if labels[i] in hit:
            continue
        if (box[2] - box[0]) * (box[3] - box[1]) / image_area > large_area_ratio_thr:
            continue
        if any(iou(box, other) > iou_thr for other in hit.values()):
            continue
        hit[labels[i]] = box
    return len(hit) / n_phrases


@dataclass
class PhraseGroundingTask(InferenceTask):
    """Rows for every image of every chunk that has phrases; ``phrases[i]`` maps the i-th
    sample's chunk index to its noun phrases (chunks without phrases get no row)."""

    model_path: Path
    phrases: list[dict[int, list[str]]]
    conf_thr: float = 0.0
    iou_thr: float = 0.5
    large_area_ratio_thr: float = 0.95
    horizontal_flip: bool = False
    vertical_flip: bool = False
    loader: str = "hf_owlvit"

    def rows(self, sample_idx: int, sample: Sample) -> list[Row]:
        rows: list[Row] = []
        for chunk_idx, (text, images) in enumerate(sample.chunks()):
            phrases = tuple(self.phrases[sample_idx].get(chunk_idx, ()))
            if phrases:
                rows.extend(PhraseRow(sample_idx, (chunk_idx, i, 0), image, text, phrases=phrases) for i, image in enumerate(images))
        return rows

    def transform_image(self, row: Row, image: Image.Image) -> Image.Image:
        if self.horizontal_flip:
            image = ImageOps.mirror(image)
        if self.vertical_flip:
            image = ImageOps.flip(image)
        return image

    def prepare(self, row: Row, image: Image.Image | None, processor: Any, info: dict) -> dict[str, Any]:
        phrases = row.phrases if isinstance(row, PhraseRow) else ()
        return {"image": image, "phrases": phrases}

    def collate(self, prepared: list[dict[str, Any]], processor: Any, info: dict) -> dict[str, Any]:
        images = [p["image"] for p in prepared]
        n_queries = max(len(p["phrases"]) for p in prepared)
        queries = [q for p in prepared for q in (*p["phrases"], *[" "] * (n_queries - len(p["phrases"])))]
        length = info.get("max_text_len", processor.tokenizer.model_max_length)
        tokens = processor.tokenizer(queries, padding="max_length", truncation=True, max_length=length, return_tensors="pt")
        return {
            "pixel_values": processor.image_processor(images=images, return_tensors="pt")["pixel_values"],
            "input_ids": tokens["input_ids"],
            "attention_mask": tokens["attention_mask"],
            "query_valid": torch.tensor([[q < len(p["phrases"]) for q in range(n_queries)] for p in prepared]),
            "sizes": torch.tensor([[image.height, image.width] for image in images]),  # target sizes (h, w)
        }

    def forward(self, bundle: ModelBundle, inputs: dict[str, Any], rows: list[Row]) -> list[float]:
        out = bundle.model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], pixel_values=inputs["pixel_values"])
        logits = out.logits.float().masked_fill(~inputs["query_valid"][:, None, :], float("-inf"))
        best = logits.max(dim=-1)
        scores, labels = torch.sigmoid(best.values), best.indices
        cx, cy, w, h = out.pred_boxes.float().unbind(-1)
        corners = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)
        height, width = inputs["sizes"].float().unbind(-1)
        corners = corners * torch.stack([width, height, width, height], dim=-1)[:, None, :]
        recalls = []
        for row, s, lab, box, size in zip(rows, scores.tolist(), labels.tolist(), corners.tolist(), inputs["sizes"].tolist()):
            n_phrases = len(row.phrases) if isinstance(row, PhraseRow) else 0
            recalls.append(grounding_recall(s, lab, box, n_phrases, size[0] * size[1], self.conf_thr, self.iou_thr, self.large_area_ratio_thr))
        return recalls
