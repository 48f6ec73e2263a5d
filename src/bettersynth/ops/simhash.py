"""64-bit SimHash: over words, for picking the candidate caption closest to the original,
and over shingles, for ``document_simhash_deduplicator``.

Why: ``keep_candidate_mode: similar_one_simhash`` (Data-Juicer) keeps the
re-caption nearest to the original text, and near-duplicate captions are found
by Hamming distance between shingle SimHashes; a small local SimHash (the
same feature hash and vote as simhash-py, which Data-Juicer uses) avoids a
compiled dependency.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import pairwise

import numpy as np

BITS = 64


def simhash(text: str) -> int:
    """Weighted bitwise vote of word hashes (weight = word count); 0 for empty text."""
    weights = [0] * BITS
    for word, count in Counter(text.lower().split()).items():
        h = int.from_bytes(hashlib.md5(word.encode("utf-8")).digest()[:8], "big")
        for bit in range(BITS):
            weights[bit] += count if (h >> bit) & 1 else -count
    return sum(1 << bit for bit in range(BITS) if weights[bit] > 0)


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


# --- Data-Juicer's document_simhash_deduplicator: shingles, simhash-py's compute, block index ---


def unsigned_hash(feature: bytes) -> int:
    """simhash-py's feature hash: the first 8 bytes of the md5, big-endian."""
    return int.from_bytes(hashlib.md5(feature).digest()[:8], "big")


def compute(hashes: Iterable[int]) -> int:
    """simhash-py's ``compute``: bit i is set when more hashes have it set than not; 0 for none."""
    values = np.fromiter(hashes, dtype=np.uint64)
    if not len(values):
        return 0
    ones = ((values[:, None] >> np.arange(BITS, dtype=np.uint64)) & np.uint64(1)).sum(axis=0)
    return sum(1 << bit for bit in range(BITS) if 2 * int(ones[bit]) > len(values))


def shingles(tokens: Sequence[str], window_size: int, sep: str = " ") -> list[bytes]:
    """Every run of ``window_size`` consecutive tokens joined by ``sep``; a shorter text is one shingle.

    (Data-Juicer's ``range(len(tokens) - window_size)`` drops the last shingle and gives texts
    of up to ``window_size`` tokens no shingle at all, so all short texts hash to 0 and
    count as duplicates of each other; that is not copied.)
    """
    if not tokens:
        return []
    if len(tokens) <= window_size:
        return [sep.join(tokens).encode("utf-8")]
    return [sep.join(tokens[i : i + window_size]).encode("utf-8") for i in range(len(tokens) - window_size + 1)]


class SimhashIndex:
    """Finds earlier hashes within ``max_distance`` bits of a new one.

    The 64 bits are cut into ``num_blocks`` blocks; hashes that differ in at most
    ``max_distance`` < ``num_blocks`` bits agree exactly on at least one block, so
    a lookup per block finds every candidate (simhash-py's ``find_all`` idea),
    and the true distance is checked on those alone.
    """

    def __init__(self, num_blocks: int, max_distance: int):
        if not 0 <= max_distance < num_blocks <= BITS:
            raise ValueError(f"need 0 <= max_distance ({max_distance}) < num_blocks ({num_blocks}) <= {BITS}")
        edges = [round(i * BITS / num_blocks) for i in range(num_blocks + 1)]
        self.masks = [((1 << (hi - lo)) - 1) << lo for lo, hi in pairwise(edges)]
        self.max_distance = max_distance
        self.tables: list[dict[int, list[int]]] = [{} for _ in self.masks]

    def near(self, h: int) -> list[int]:
        """Earlier hashes within ``max_distance`` of ``h``, in insertion order."""
        found: dict[int, None] = {}
        for mask, table in zip(self.masks, self.tables):
            for other in table.get(h & mask, ()):
                if other not in found and hamming(h, other) <= self.max_distance:
                    found[other] = None
        return list(found)

    def add(self, h: int) -> None:
        for mask, table in zip(self.masks, self.tables):
            bucket = table.setdefault(h & mask, [])
            if h not in bucket:
                bucket.append(h)
