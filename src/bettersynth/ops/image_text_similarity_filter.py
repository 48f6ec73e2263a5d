"""Keep samples whose captions match their images under CLIP.

Why: the single best operator in the Better Synth challenge (min 0.32). The
score is the cosine of normalised CLIP embeddings per (chunk text, image),
reduced per chunk (avg/max/min); the stat ``image_text_similarity`` has one
value per chunk that has images (chunks without images get none, as in
Data-Juicer).
"""

from __future__ import annotations

from pathlib import Path
from statistics import fmean
from typing import Literal

from pydantic import model_validator

from bettersynth.data.sample import Sample
from bettersynth.engine import ClipSimilarityTask, Failure
from bettersynth.ops.base import Filter, OpConfig

REDUCERS = {"avg": fmean, "max": max, "min": min}


class ImageTextSimilarityFilter(Filter):
    name = "image_text_similarity_filter"
    stat_key = "image_text_similarity"
    cacheable = True

    class Config(OpConfig):
        hf_clip: str = "openai/clip-vit-base-patch32"  # CLIP model dir, relative to model_root
        min_score: float = 0.1  # lowest similarity kept (inclusive)
        max_score: float = 1.0  # highest similarity kept (inclusive)
        any_or_all: Literal["any", "all"] = "any"  # keep if any / all chunks are in bounds
        reduce_mode: Literal["avg", "max", "min"] = "avg"  # combine a chunk's images
        horizontal_flip: bool = False  # mirror images before scoring
        vertical_flip: bool = False  # flip images upside down before scoring

        @model_validator(mode="after")
        def _ordered(self) -> "ImageTextSimilarityFilter.Config":
            if self.min_score > self.max_score:
                raise ValueError(f"min_score ({self.min_score}) must be <= max_score ({self.max_score})")
            return self

    def model_dirs(self) -> list[Path]:
        return [self.context.model_path(self.config.hf_clip, "hf_clip", self.name)]

    def compute_stats(self, batch: list[Sample]) -> list[list[float] | Failure]:
        cfg = self.config
        task = ClipSimilarityTask(
            model_path=self.context.model_path(cfg.hf_clip, "hf_clip", self.name),
            horizontal_flip=cfg.horizontal_flip,
            vertical_flip=cfg.vertical_flip,
        )
        reduce = REDUCERS[cfg.reduce_mode]
        stats: list[list[float] | Failure] = []
        for result in self.context.engine.run(task, batch):
            if isinstance(result, Failure):
                stats.append(result)
                continue
            per_chunk: dict[int, list[float]] = {}
            for (chunk_idx, _image_idx, _k), score in sorted(result.items()):
                per_chunk.setdefault(chunk_idx, []).append(score)
            stats.append([reduce(scores) for _, scores in sorted(per_chunk.items())])
        return stats
