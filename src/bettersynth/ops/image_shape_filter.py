"""Keep samples whose images' width and height both lie within bounds.

Why: too-small images carry no detail, too-large ones are slow to decode.
Stats ``image_width`` and ``image_height`` (one value per image), as in
Data-Juicer; an image passes when both are in their closed ranges.
"""

from __future__ import annotations

import sys
from typing import Literal

from bettersynth.core.sample import Sample
from bettersynth.engine import Failure
from bettersynth.ops.base import Decision, Filter, OpConfig
from bettersynth.ops.image_header import dimensions


class ImageShapeFilter(Filter):
    name = "image_shape_filter"
    stat_key = "image_width"  # and "image_height", stored next to it

    class Config(OpConfig):
        min_width: int = 1  # narrowest image kept, pixels (inclusive)
        max_width: int = sys.maxsize  # widest image kept, pixels (inclusive)
        min_height: int = 1  # shortest image kept, pixels (inclusive)
        max_height: int = sys.maxsize  # tallest image kept, pixels (inclusive)
        any_or_all: Literal["any", "all"] = "any"  # keep if any / all images are in bounds

    def compute_stats(self, batch: list[Sample]) -> list[dict[str, list[int]] | Failure]:
        out: list[dict[str, list[int]] | Failure] = []
        for sample in batch:
            dims = dimensions(self.context.engine.dataset_root, sample)
            out.append(dims if isinstance(dims, Failure) else {"image_width": [w for w, _ in dims], "image_height": [h for _, h in dims]})
        return out

    def process(self, batch: list[Sample]) -> list[Decision | Failure]:
        decisions: list[Decision | Failure] = []
        for sample, stat in zip(batch, self.scores(batch)):
            if isinstance(stat, Failure):
                decisions.append(stat)
                continue
            sample.stats.update(stat)
            decisions.append(self.keep(sample))
        return decisions

    def keep(self, sample: Sample) -> Decision:
        cfg = self.config
        widths, heights = sample.stats["image_width"], sample.stats["image_height"]
        if not widths:
            return Decision(True, "image_width", widths)
        fits = [(cfg.min_width <= w <= cfg.max_width, cfg.min_height <= h <= cfg.max_height) for w, h in zip(widths, heights)]
        ok = [a and b for a, b in fits]
        if any(ok) if cfg.any_or_all == "any" else all(ok):
            return Decision(True, "image_width", widths)
        width_ok, height_ok = fits[ok.index(False)]
        if not width_ok:
            w = widths[ok.index(False)]
            return Decision(False, "image_width", widths, f"min_width={cfg.min_width}" if w < cfg.min_width else f"max_width={cfg.max_width}")
        h = heights[ok.index(False)]
        return Decision(False, "image_height", heights, f"min_height={cfg.min_height}" if h < cfg.min_height else f"max_height={cfg.max_height}")
