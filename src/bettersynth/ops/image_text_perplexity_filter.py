"""Keep the image–caption pairs a trained VLM finds least surprising (POINTS' perplexity filter).

Why: POINTS (arXiv 2409.04828) scores every pretraining pair by the
perplexity of its caption given its image under a trained LLaVA-style model
and keeps the lowest 20 %: high-perplexity pairs are mostly obscure facts a
small model cannot learn from. Data-Juicer has no such op; the name follows
its pattern (``image_text_*_filter``), and the score is exactly the stage-1
training loss of the pair (``<image>caption</s>``, caption and end token
scored), exponentiated. One value per (chunk, image), reduced per chunk.

"Keep the lowest fraction" needs every score before any decision:

* ``keep_ratio`` r: the threshold is the ceil(r·n)-th smallest of the n chunk
  scores of the run (ties at it are kept), combined with ``max_ppl`` (the
  smaller wins). Scores go through the score cache, so choosing another ratio
  recomputes nothing.
* With ``keep_ratio`` the op is built as ``LowestFractionPerplexityFilter``,
  which implements ``ops.stream.NeedsDatasetPass``: the streaming runner
  first calls ``observe(chunk)`` for every chunk (scores, cached), then
  ``end_observation()`` (threshold), then ``process(chunk)`` as usual. Given
  the whole dataset in one ``process`` call it needs no first pass; a second
  call without one fails rather than thresholding each chunk alone. Without
  ``keep_ratio`` there is no first pass (it would re-run the ops before).
* The chosen threshold is in ``extra_counts()`` (for the step's counts), in
  the log, and in the bound of every sample it filtered.

Example (recipe)::

    - image_text_perplexity_filter: {hf_llava: align-stage1, keep_ratio: 0.2}
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path
from statistics import fmean
from typing import Any, Literal, Self

from pydantic import Field, model_validator

from bettersynth.core.sample import Sample
from bettersynth.engine import Failure
from bettersynth.engine.perplexity import CaptionPerplexityTask
from bettersynth.ops.base import Decision, Filter, OpConfig

log = logging.getLogger(__name__)

REDUCERS = {"avg": fmean, "max": max, "min": min}


def ratio_threshold(values: list[float], keep_ratio: float) -> float | None:
    """The ceil(keep_ratio * n)-th smallest value (at least the smallest); None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(keep_ratio * len(ordered))) - 1]


class ImageTextPerplexityFilter(Filter):
    name = "image_text_perplexity_filter"
    stat_key = "image_text_perplexity"
    min_field, max_field = "min_ppl", "max_ppl"
    cacheable = True
    decision_fields = ("keep_ratio",)

    class Config(OpConfig):
        hf_llava: str = "llava-hf/llava-1.5-7b-hf"  # trained LLaVA-style model dir, relative to model_root
        keep_ratio: float | None = Field(0.2, gt=0.0, le=1.0)  # keep the lowest fraction of scores (POINTS: 0.2); None = bounds only
        min_ppl: float = 0.0  # lowest perplexity kept (inclusive)
        max_ppl: float = math.inf  # highest perplexity kept (inclusive)
        any_or_all: Literal["any", "all"] = "any"  # keep if any / all chunks are in bounds
        reduce_mode: Literal["avg", "max", "min"] = "avg"  # combine a chunk's images
        image_aspect_ratio: Literal["crop", "pad"] = "crop"  # as the model was trained ("pad" = LLaVA's pad)
        max_length: int = Field(2048, ge=2)  # tokens per (caption, image), image tokens included

        @model_validator(mode="after")
        def _ordered(self) -> ImageTextPerplexityFilter.Config:
            if self.min_ppl > self.max_ppl:
                raise ValueError(f"min_ppl ({self.min_ppl}) must be <= max_ppl ({self.max_ppl})")
            return self

    def __new__(cls, config: OpConfig | None = None, context: Any = None) -> Self:
        # Only an instance with keep_ratio offers observe/end_observation: the runner gives such
        # ops (ops.stream.NeedsDatasetPass) a first pass, which re-runs the ops before them.
        ratio = cls is ImageTextPerplexityFilter and getattr(config or cls.Config(), "keep_ratio", None) is not None
        return super().__new__(LowestFractionPerplexityFilter if ratio else cls)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.threshold: float | None = None  # chosen from the run's scores when keep_ratio is set
        self._scored = 0  # chunk scores the threshold was chosen from
        self._fitted = False  # the threshold has been chosen
        self._observed: dict[bytes, list[float] | Failure] = {}  # first pass: stat by sample
        self._decided_alone = False  # process() thresholded a batch with no first pass

    @property
    def needs_full_pass(self) -> bool:
        """True when decisions need every score of the run first (``keep_ratio`` set)."""
        return self.config.keep_ratio is not None

    def model_dirs(self) -> list[Path]:
        return [self.context.model_path(self.config.hf_llava, "hf_llava", self.name)]

    def compute_stats(self, batch: list[Sample]) -> list[list[float] | Failure]:
        cfg = self.config
        task = CaptionPerplexityTask(model_path=self.model_dirs()[0], max_length=cfg.max_length, image_aspect_ratio=cfg.image_aspect_ratio)
        reduce = REDUCERS[cfg.reduce_mode]
        stats: list[list[float] | Failure] = []
        for result in self.context.engine.run(task, batch):
            if isinstance(result, Failure):
                stats.append(result)
                continue
            per_chunk: dict[int, list[float]] = {}
            for (chunk_idx, _image_idx, _k), ppl in sorted(result.items()):
                per_chunk.setdefault(chunk_idx, []).append(ppl)
            stats.append([reduce(values) for _, values in sorted(per_chunk.items())])
        return stats

    def process(self, batch: list[Sample]) -> list[Decision | Failure]:
        if not self.needs_full_pass:
            return super().process(batch)
        if self._fitted and not self._decided_alone:  # after a first pass: its scores, else the cache
            missing = [s for s in batch if _memo_key(s) not in self._observed]
            fresh = dict(zip(map(_memo_key, missing), self.scores(missing))) if missing else {}
            stats = [self._observed[k] if k in self._observed else fresh[k] for k in map(_memo_key, batch)]
            misses = self.cache_misses if missing else 0
            self.cache_hits, self.cache_misses = len(batch) - misses, misses  # first-pass scores count as hits
        elif not self._decided_alone:  # no first pass: this batch is the whole dataset
            stats = self.scores(batch)
            self._decided_alone = True
            self._choose_threshold(stats)
        else:
            raise RuntimeError(
                f"{self.name}: keep_ratio needs every score before deciding, but process() was called again "
                "without a first pass (observe() on every chunk, then end_observation())"
            )
        return self.decide(batch, stats)

    def _choose_threshold(self, stats: list[Any]) -> None:
        values = [v for stat in stats if not isinstance(stat, Failure) for v in stat if v is not None and not math.isnan(v)]
        self._scored, self._fitted = len(values), True
        self.threshold = ratio_threshold(values, self.config.keep_ratio)
        log.info("%s: keep_ratio %s of %d scores -> perplexity threshold %s", self.name, self.config.keep_ratio, len(values), self.threshold)

    def bounds(self) -> tuple[float, float]:
        low, high = super().bounds()
        return (low, high) if self.threshold is None else (low, min(high, self.threshold))

    def keep(self, sample: Sample) -> Decision:
        decision = super().keep(sample)
        by_ratio = self.threshold is not None and self.threshold < self.config.max_ppl
        if by_ratio and not decision.keep and (decision.bound or "").startswith(f"{self.max_field}="):
            return Decision(False, decision.stat, decision.value, f"keep_ratio_ppl={self.threshold}")
        return decision

    def extra_counts(self) -> dict[str, Any]:
        """For the step's counts: the threshold keep_ratio chose and how many scores it came from."""
        if not self.needs_full_pass:
            return {}
        return {"keep_ratio": self.config.keep_ratio, "ppl_threshold": self.threshold, "ppl_scores": self._scored}


class LowestFractionPerplexityFilter(ImageTextPerplexityFilter):
    """The op with ``keep_ratio`` set: it takes the runner's first pass (``ops.stream.NeedsDatasetPass``)."""

    def observe(self, batch: list[Sample]) -> None:
        """First pass: score (through the cache) and remember; nothing is decided."""
        if self._fitted:
            raise RuntimeError(f"{self.name}: observe() after the threshold was chosen")
        for sample, stat in zip(batch, self.scores(batch)):
            self._observed[_memo_key(sample)] = stat

    def end_observation(self) -> None:
        """Every sample has been observed: choose the threshold."""
        self._choose_threshold(list(self._observed.values()))
        self.cache_hits = self.cache_misses = 0  # the first pass's; the real pass counts its own


def _memo_key(sample: Sample) -> bytes:
    """A short key for a sample's content (ids may repeat across inputs; text and images decide the score)."""
    payload = json.dumps([sample.id, sample.text, sample.images], ensure_ascii=True).encode("utf-8")
    return hashlib.blake2b(payload, digest_size=16).digest()
