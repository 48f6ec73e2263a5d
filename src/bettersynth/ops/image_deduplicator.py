"""Drop samples whose images repeat an earlier sample's, by perceptual hash (Data-Juicer's ``image_deduplicator``).

Why: the same picture re-encoded, resized or re-uploaded under another name is
the same training example; a perceptual hash (``phash``, ``dhash``,
``whash``, ``ahash``) survives those changes where a byte hash does not. As in
Data-Juicer, a sample's key is the concatenation of its images' hashes (and,
with ``consider_text``, the md5 of its caption), and two samples are
duplicates when their keys are equal; a sample without images is kept unless
``consider_text`` is on. Hashes come from ``imagehash`` (Data-Juicer uses
``imagededup``: same methods, 64-bit hashes, not bit-identical values).
Decoding is the cost, so hashes go through the score cache.

``hamming_distance`` (ours; 0, Data-Juicer's equality, by default) also drops
near-duplicates: a single-image sample whose hash is within that many bits of
an earlier one, found through a multi-index (``ops.simhash.SimhashIndex``)
rather than a scan, so the whole seed set is compared in one pass. Samples
with several images still compare their joined hashes exactly.

Example (recipe)::

    - image_deduplicator: {method: phash, consider_text: false}
    - image_deduplicator: {method: phash, hamming_distance: 4}   # re-encoded, resized, slightly cropped copies too
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from PIL import Image
from pydantic import Field, model_validator

from bettersynth.core.images import ImageError, load_image, resolve_image
from bettersynth.core.sample import Sample
from bettersynth.engine import Failure
from bettersynth.ops.base import OpConfig
from bettersynth.ops.deduplicator import Deduplicator, NearDeduplicator
from bettersynth.ops.document_deduplicator import text_md5
from bettersynth.ops.simhash import SimhashIndex

HASH_HEX = 16  # one 64-bit image hash as imagehash prints it


def hash_functions() -> dict[str, Callable[[Image.Image], object]]:
    import imagehash

    return {"phash": imagehash.phash, "dhash": imagehash.dhash, "whash": imagehash.whash, "ahash": imagehash.average_hash}


class ImageDeduplicator(NearDeduplicator):
    name = "image_deduplicator"
    stat_key = "image_hash"
    cacheable = True

    class Config(OpConfig):
        method: Literal["phash", "dhash", "whash", "ahash"] = "phash"  # perceptual hash of each image
        consider_text: bool = False  # duplicates must also have the same caption (md5)
        hamming_distance: int = Field(0, ge=0, le=16)  # most differing bits between near-duplicate images

        @model_validator(mode="after")
        def _near_or_text(self) -> ImageDeduplicator.Config:
            if self.hamming_distance and self.consider_text:
                raise ValueError("hamming_distance > 0 compares images alone: set consider_text: false")
            return self

    def new_index(self) -> SimhashIndex:
        return SimhashIndex(self.config.hamming_distance + 1, self.config.hamming_distance)

    def to_int(self, value: str) -> int:
        return int(value, 16)

    def _near(self, value: Any) -> bool:
        """Near matching applies to one image's hash; joined hashes (several images) and text keys match exactly."""
        return bool(self.config.hamming_distance) and len(value) == HASH_HEX

    def match(self, value: Any) -> str | None:
        return super().match(value) if self._near(value) else Deduplicator.match(self, value)

    def remember(self, value: Any, sample_id: str) -> None:
        if self._near(value):
            super().remember(value, sample_id)
        else:
            Deduplicator.remember(self, value, sample_id)

    def remember_duplicate(self, value: Any, first_id: str) -> None:
        if self._near(value):
            super().remember_duplicate(value, first_id)

    def compute_stats(self, batch: list[Sample]) -> list[str | Failure]:
        digest = hash_functions()[self.config.method]
        root, max_pixels = self.context.engine.dataset_root, self.context.engine.settings.max_pixels
        stats: list[str | Failure] = []
        for sample in batch:
            try:
                key = "".join(str(digest(load_image(resolve_image(root, rel), max_pixels))) for rel in sample.images)
            except (ImageError, OSError, ValueError) as exc:
                stats.append(Failure(f"{self.name}: sample {sample.id!r}: {exc}"))
                continue
            stats.append(f"{key}|{text_md5(sample.text)}" if self.config.consider_text else key)
        return stats
