"""Keep samples whose image files are between ``min_size`` and ``max_size`` bytes.

Why: tiny files are thumbnails or error pages, huge ones stall decoding.
Sizes read as Data-Juicer's ("10KB", "1MB", "1TB"; K/M/G... = powers of 1024,
bare numbers are bytes), except that decimals mean what they say: Data-Juicer
drops the point, reading "1.5MB" as 15 MB.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import field_validator

from bettersynth.core.sample import Sample
from bettersynth.engine import Failure
from bettersynth.ops.base import Filter, OpConfig
from bettersynth.ops.image_header import file_sizes

_UNITS = {"": 0, "b": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5, "e": 6, "z": 7, "y": 8}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*([kmgtpezy]?)(?:i?b)?\s*$", re.IGNORECASE)


def size_to_bytes(size: str | int) -> int:
    """``"10KB"`` → 10240; ``"1.5MiB"`` → 1572864; ``"300"`` → 300."""
    if isinstance(size, int):
        return size
    match = _SIZE.match(str(size))
    if not match:
        raise ValueError(f"{size!r} is not a size like '500', '10KB' or '1.5MB'")
    number, unit = match.groups()
    return int(float(number) * 1024 ** _UNITS[unit.lower()])


class ImageSizeFilter(Filter):
    name = "image_size_filter"
    stat_key = "image_sizes"
    min_field, max_field = "min_size", "max_size"

    class Config(OpConfig):
        min_size: str = "0"  # smallest file kept, e.g. "10KB" (inclusive)
        max_size: str = "1TB"  # largest file kept, e.g. "5MB" (inclusive)
        any_or_all: Literal["any", "all"] = "any"  # keep if any / all images are in bounds

        @field_validator("min_size", "max_size", mode="before")
        @classmethod
        def _parse(cls, value: object) -> str:
            size_to_bytes(value if isinstance(value, int) else str(value))
            return str(value)

    def bounds(self) -> tuple[int, int]:
        return size_to_bytes(self.config.min_size), size_to_bytes(self.config.max_size)

    def compute_stats(self, batch: list[Sample]) -> list[list[int] | Failure]:
        return [file_sizes(self.context.engine.dataset_root, sample) for sample in batch]
