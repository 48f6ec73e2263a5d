"""Keep samples whose images' width/height lies in [min_ratio, max_ratio].

Why: banners and slivers lose most of their content to the vision tower's
square crop. Stat ``aspect_ratios``: W/H per image, as in Data-Juicer.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from bettersynth.core.sample import Sample
from bettersynth.engine import Failure
from bettersynth.ops.base import Filter, OpConfig
from bettersynth.ops.image_header import dimensions


class ImageAspectRatioFilter(Filter):
    name = "image_aspect_ratio_filter"
    stat_key = "aspect_ratios"
    min_field, max_field = "min_ratio", "max_ratio"

    class Config(OpConfig):
        min_ratio: float = Field(0.333, ge=0)  # narrowest W/H kept (inclusive)
        max_ratio: float = Field(3.0, ge=0)  # widest W/H kept (inclusive)
        any_or_all: Literal["any", "all"] = "any"  # keep if any / all images are in bounds

    def compute_stats(self, batch: list[Sample]) -> list[list[float] | Failure]:
        out: list[list[float] | Failure] = []
        for sample in batch:
            dims = dimensions(self.context.engine.dataset_root, sample)
            out.append(dims if isinstance(dims, Failure) else [w / h for w, h in dims])
        return out
