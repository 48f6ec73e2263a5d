"""Keep samples whose captions match their images under BLIP's image–text matching head.

Why: a second opinion to CLIP similarity that reads the caption word by word
against the image (cross-attention), catching captions that share a topic
but not the content. Score = softmax(ITM logits)[match] per (chunk text,
image), reduced per chunk (avg/max/min); stat ``image_text_matching_score``,
one value per chunk with images, as in Data-Juicer. Default model
``Salesforce/blip-itm-base-coco`` (any ``BlipForImageTextRetrieval`` folder).

Example::

    - image_text_matching_filter: {hf_blip: Salesforce/blip-itm-base-coco, min_score: 0.003}
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import model_validator

from bettersynth.core.sample import Sample
from bettersynth.engine import Failure
from bettersynth.engine.itm import ImageTextMatchingTask
from bettersynth.ops.base import Filter, OpConfig
from bettersynth.ops.image_text_similarity_filter import model_dir, per_chunk_stats


class ImageTextMatchingFilter(Filter):
    name = "image_text_matching_filter"
    stat_key = "image_text_matching_score"
    cacheable = True

    class Config(OpConfig):
        hf_blip: str = "Salesforce/blip-itm-base-coco"  # BLIP ITM model dir, relative to model_root
        min_score: float = 0.003  # lowest match probability kept (inclusive)
        max_score: float = 1.0  # highest match probability kept (inclusive)
        any_or_all: Literal["any", "all"] = "any"  # keep if any / all chunks are in bounds
        reduce_mode: Literal["avg", "max", "min"] = "avg"  # combine a chunk's images
        horizontal_flip: bool = False  # mirror images before scoring
        vertical_flip: bool = False  # flip images upside down before scoring

        @model_validator(mode="after")
        def _ordered(self) -> "ImageTextMatchingFilter.Config":
            if self.min_score > self.max_score:
                raise ValueError(f"min_score ({self.min_score}) must be <= max_score ({self.max_score})")
            return self

    def model_dirs(self) -> list[Path]:
        return [model_dir(self.context, self.config.hf_blip, "hf_blip", self.name)]

    def compute_stats(self, batch: list[Sample]) -> list[list[float] | Failure]:
        cfg = self.config
        task = ImageTextMatchingTask(
            model_path=self.model_dirs()[0], horizontal_flip=cfg.horizontal_flip, vertical_flip=cfg.vertical_flip
        )
        return per_chunk_stats(self.context.engine.run(task, batch), cfg.reduce_mode)
