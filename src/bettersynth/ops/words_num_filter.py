"""Keep samples whose caption has between ``min_num`` and ``max_num`` words.

Why: one-word and run-on captions teach a small VLM little. Unlike
Data-Juicer, the special tokens ``<__dj__image>`` / ``<|__dj__eoc|>`` are
removed first, so they are not counted as words.
"""

from __future__ import annotations

import string
import sys
import unicodedata

from pydantic import model_validator

from bettersynth.core.sample import Sample, clean_text
from bettersynth.ops.base import Filter, OpConfig


def _is_punct(char: str) -> bool:
    return char in string.punctuation or unicodedata.category(char).startswith("P")


def _strip_punct(word: str) -> str:
    start, end = 0, len(word)
    while start < end and _is_punct(word[start]):
        start += 1
    while end > start and _is_punct(word[end - 1]):
        end -= 1
    return word[start:end]


def count_words(text: str) -> int:
    """Whitespace words of the caption, special tokens removed, edge punctuation stripped."""
    return sum(1 for word in clean_text(text).split() if _strip_punct(word))


class WordsNumFilter(Filter):
    name = "words_num_filter"
    stat_key = "num_words"
    min_field, max_field = "min_num", "max_num"

    class Config(OpConfig):
        min_num: int = 10  # fewest words kept (inclusive)
        max_num: int = sys.maxsize  # most words kept (inclusive)

        @model_validator(mode="after")
        def _ordered(self) -> "WordsNumFilter.Config":
            if self.min_num > self.max_num:
                raise ValueError(f"min_num ({self.min_num}) must be <= max_num ({self.max_num})")
            return self

    def compute_stats(self, batch: list[Sample]) -> list[int]:
        return [count_words(sample.text) for sample in batch]
