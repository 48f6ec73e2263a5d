"""Keep samples whose caption's noun phrases an open-vocabulary detector finds in the image.

Why: a caption naming things the image does not show (a hallucinated
re-caption, a caption of another image) grounds few of its phrases. Data-Juicer
semantics: noun phrases per chunk (``ops.noun_phrases``), OWL-ViT detections
per image, recall = phrases matched / phrases; a chunk with images but no
phrase scores 1.0; images of a chunk reduce by ``reduce_mode``; the stat
``phrase_grounding_recall`` has one value per chunk with images. Unlike
Data-Juicer, chunks after a phrase-less chunk still get their own images
(Data-Juicer's image offset skips that chunk's images), nothing is downloaded
(the POS tagger comes from ``nltk_data``), and rows of many samples share
a batch.

Example (recipe)::

    - phrase_grounding_recall_filter: {hf_owlvit: owlvit-base-patch32, min_recall: 0.5, nltk_data: /opt/nltk_data}
"""

from __future__ import annotations

from pathlib import Path
from statistics import fmean
from typing import Literal

from pydantic import Field, model_validator

from bettersynth.core.sample import Sample
from bettersynth.engine import Failure
from bettersynth.engine.grounding import PhraseGroundingTask
from bettersynth.ops.base import Filter, OpConfig
from bettersynth.ops.noun_phrases import load_tagger, noun_phrases, tagger_dir

REDUCERS = {"avg": fmean, "max": max, "min": min}


class PhraseGroundingRecallFilter(Filter):
    name = "phrase_grounding_recall_filter"
    stat_key = "phrase_grounding_recall"
    min_field, max_field = "min_recall", "max_recall"
    cacheable = True

    class Config(OpConfig):
        hf_owlvit: str = "google/owlvit-base-patch32"  # OWL-ViT dir, relative to model_root
        trust_remote_code: Literal[False] = False  # Data-Juicer option; only built-in model code is run
        min_recall: float = 0.1  # lowest recall kept (inclusive)
        max_recall: float = 1.0  # highest recall kept (inclusive)
        horizontal_flip: bool = False  # mirror images before detecting
        vertical_flip: bool = False  # flip images upside down before detecting
        any_or_all: Literal["any", "all"] = "any"  # keep if any / all chunks are in bounds
        reduce_mode: Literal["avg", "max", "min"] = "avg"  # combine a chunk's images
        iou_thr: float = Field(0.5, ge=0.0, le=1.0)  # a box overlapping a matched one by more is dropped
        large_area_ratio_thr: float = Field(0.95, ge=0.0, le=1.0)  # a box covering more of the image is dropped
        conf_thr: float = Field(0.0, ge=0.0, le=1.0)  # boxes must score above this
        nltk_data: str | None = None  # NLTK data folder with the POS tagger; None = $NLTK_DATA, NLTK's defaults

        @model_validator(mode="after")
        def _ordered(self) -> PhraseGroundingRecallFilter.Config:
            if self.min_recall > self.max_recall:
                raise ValueError(f"min_recall ({self.min_recall}) must be <= max_recall ({self.max_recall})")
            return self

    def model_dirs(self) -> list[Path]:
        """The detector and the POS tagger: retraining either changes the phrases or boxes."""
        owlvit = self.context.model_path(self.config.hf_owlvit, "hf_owlvit", self.name)
        return [owlvit, tagger_dir(self.config.nltk_data)]

    def compute_stats(self, batch: list[Sample]) -> list[list[float] | Failure]:
        cfg = self.config
        tagger = load_tagger(cfg.nltk_data)
        phrases = [{i: noun_phrases(text, tagger) for i, (text, images) in enumerate(s.chunks()) if images} for s in batch]
        task = PhraseGroundingTask(
            model_path=self.model_dirs()[0], phrases=phrases, conf_thr=cfg.conf_thr, iou_thr=cfg.iou_thr,
            large_area_ratio_thr=cfg.large_area_ratio_thr, horizontal_flip=cfg.horizontal_flip, vertical_flip=cfg.vertical_flip,
        )
        reduce = REDUCERS[cfg.reduce_mode]
        stats: list[list[float] | Failure] = []
        for chunks, result in zip(phrases, self.context.engine.run(task, batch)):
            if isinstance(result, Failure):
                stats.append(result)
                continue
            per_chunk: dict[int, list[float]] = {}
            for (chunk_idx, _image_idx, _k), recall in sorted(result.items()):
                per_chunk.setdefault(chunk_idx, []).append(recall)
            # a chunk with images but no phrase has nothing to miss: recall 1.0, as in Data-Juicer
            stats.append([reduce(per_chunk[i]) if chunk_phrases else 1.0 for i, chunk_phrases in sorted(chunks.items())])
        return stats
