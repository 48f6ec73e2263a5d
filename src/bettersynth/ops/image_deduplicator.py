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

Example (recipe)::

    - image_deduplicator: {method: phash, consider_text: false}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from PIL import Image

from bettersynth.core.images import ImageError, load_image, resolve_image
from bettersynth.core.sample import Sample
from bettersynth.engine import Failure
from bettersynth.ops.base import OpConfig
from bettersynth.ops.deduplicator import Deduplicator
from bettersynth.ops.document_deduplicator import text_md5


def hash_functions() -> dict[str, Callable[[Image.Image], object]]:
    import imagehash

    return {"phash": imagehash.phash, "dhash": imagehash.dhash, "whash": imagehash.whash, "ahash": imagehash.average_hash}


class ImageDeduplicator(Deduplicator):
    name = "image_deduplicator"
    stat_key = "image_hash"
    cacheable = True

    class Config(OpConfig):
        method: Literal["phash", "dhash", "whash", "ahash"] = "phash"  # perceptual hash of each image
        consider_text: bool = False  # duplicates must also have the same caption (md5)

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
