"""64-bit SimHash over words, for picking the candidate caption closest to the original.

Why: ``keep_candidate_mode: similar_one_simhash`` (Data-Juicer) keeps the
re-caption nearest to the original text; a tiny local SimHash avoids a
dependency for one comparison.
"""

from __future__ import annotations

import hashlib
from collections import Counter

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
