"""Keep samples whose captions match their images under CLIP.

Why: the single best operator in the Better Synth challenge (min 0.32). The
score is the cosine of normalised CLIP embeddings per (chunk text, image),
reduced per chunk (avg/max/min); the stat ``image_text_similarity`` has one
value per chunk that has images (chunks without images get none, as in
Data-Juicer).

``hf_clip`` names a folder (relative to ``model_root``, or ``local-dir:/abs/path``
as open_clip spells it) holding either a HF ``CLIPModel`` (default
``openai/clip-vit-base-patch32``) or an open_clip model in its hub layout
(``open_clip_config.json`` + weights), e.g. a snapshot of
``timm/vit_large_patch14_clip_336.openai`` (ViT-L-14-336) or
``laion/CLIP-convnext_large_d_320.laion2B-s29B-b131K-ft-soup``; the folder's
contents pick the family, so a Data-Juicer recipe runs unchanged.

Example::

    - image_text_similarity_filter: {hf_clip: "local-dir:/models/ViT-L-14-336", min_score: 0.28}
"""

from __future__ import annotations

from pathlib import Path
from statistics import fmean
from typing import Any, Callable, Literal

from pydantic import model_validator

from bettersynth.core.sample import Sample
from bettersynth.engine import ClipSimilarityTask, Failure
from bettersynth.engine.inference import SampleResult
from bettersynth.ops.base import Filter, OpConfig, OpContext

REDUCERS: dict[str, Callable[[list[float]], float]] = {"avg": fmean, "max": max, "min": min}
LOCAL_DIR = "local-dir:"  # open_clip's prefix for a model folder; accepted on every model field


def model_dir(context: OpContext, name: str, field_name: str, op_name: str) -> Path:
    """The model folder an op field names, with or without open_clip's ``local-dir:`` prefix."""
    return context.model_path(name.removeprefix(LOCAL_DIR), field_name, op_name)


def per_chunk_stats(results: list[SampleResult], reduce_mode: str) -> list[list[float] | Failure]:
    """Row outputs keyed ``(chunk, image, k)`` reduced to one value per chunk with images."""
    reduce = REDUCERS[reduce_mode]
    stats: list[list[float] | Failure] = []
    for result in results:
        if isinstance(result, Failure):
            stats.append(result)
            continue
        per_chunk: dict[int, list[Any]] = {}
        for (chunk_idx, _image_idx, _k), score in sorted(result.items()):
            per_chunk.setdefault(chunk_idx, []).append(score)
        stats.append([reduce(scores) for _, scores in sorted(per_chunk.items())])
    return stats


class ImageTextSimilarityFilter(Filter):
    name = "image_text_similarity_filter"
    stat_key = "image_text_similarity"
    cacheable = True

    class Config(OpConfig):
        hf_clip: str = "openai/clip-vit-base-patch32"  # HF CLIP or open_clip folder, relative to model_root
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
        return [model_dir(self.context, self.config.hf_clip, "hf_clip", self.name)]

    def compute_stats(self, batch: list[Sample]) -> list[list[float] | Failure]:
        cfg = self.config
        task = ClipSimilarityTask(
            model_path=model_dir(self.context, cfg.hf_clip, "hf_clip", self.name),
            horizontal_flip=cfg.horizontal_flip,
            vertical_flip=cfg.vertical_flip,
        )
        return per_chunk_stats(self.context.engine.run(task, batch), cfg.reduce_mode)
