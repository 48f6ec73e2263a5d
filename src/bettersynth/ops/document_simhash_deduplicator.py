"""Drop captions that nearly repeat an earlier one, by SimHash (Data-Juicer's ``document_simhash_deduplicator``).

Why: templated or lightly edited captions ("a photo of a dog on grass" /
"a photo of the dog on grass") are near-duplicates that exact hashing misses.
As in Data-Juicer, the caption is cut into shingles of ``window_size`` tokens
(split on spaces, on punctuation, or characters), hashed into a 64-bit
SimHash, and samples whose hashes differ in at most ``hamming_distance`` bits
are duplicates. Data-Juicer clusters the whole dataset at once and keeps the
first sample of each cluster; in a stream a sample is a duplicate when it is
within ``hamming_distance`` of any earlier sample (kept or dropped), and it
names the kept sample of the earliest such group. The two differ only when
a later sample bridges two groups that were distinct so far. The stat is the
hash as a decimal string (Data-Juicer's form); special tokens are removed
from the text first, and short texts are not all hashed to 0 (see ``shingles``).

Example (recipe)::

    - document_simhash_deduplicator: {tokenization: space, window_size: 6, num_blocks: 6, hamming_distance: 4}
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from bettersynth.core.sample import Sample, clean_text
from bettersynth.ops.base import OpConfig
from bettersynth.ops.deduplicator import NearDeduplicator
from bettersynth.ops.simhash import SimhashIndex, compute, shingles, unsigned_hash


def split_on_punctuation(text: str) -> list[str]:
    """Pieces between Unicode punctuation characters (``regex.split(r"\\p{P}", text)``)."""
    pieces, current = [], []
    for char in text:
        if unicodedata.category(char).startswith("P"):
            pieces.append("".join(current))
            current = []
        else:
            current.append(char)
    pieces.append("".join(current))
    return pieces


class TokenizedTextConfig(OpConfig):
    """How Data-Juicer's text deduplicators cut a caption into tokens (``document_tokens``)."""

    tokenization: Literal["space", "punctuation", "character"] = "space"  # how text is cut into tokens
    lowercase: bool = True  # compare lower-cased text
    ignore_pattern: str | None = None  # regular expression (Python re) of text to drop before hashing

    @field_validator("ignore_pattern")
    @classmethod
    def _regex(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"ignore_pattern: not a valid regex ({exc})") from None
        return pattern


class DocumentSimhashDeduplicator(NearDeduplicator):
    name = "document_simhash_deduplicator"
    stat_key = "simhash"

    class Config(TokenizedTextConfig):
        window_size: int = Field(6, ge=1)  # tokens per shingle
        num_blocks: int = Field(6, ge=1, le=64)  # index blocks; must exceed hamming_distance
        hamming_distance: int = Field(4, ge=1)  # most differing bits between near-duplicates

        @model_validator(mode="after")
        def _blocks(self) -> DocumentSimhashDeduplicator.Config:
            if self.hamming_distance >= self.num_blocks:
                raise ValueError(f"hamming_distance ({self.hamming_distance}) must be < num_blocks ({self.num_blocks})")
            return self

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._pattern = re.compile(self.config.ignore_pattern) if self.config.ignore_pattern else None

    def new_index(self) -> SimhashIndex:
        return SimhashIndex(self.config.num_blocks, self.config.hamming_distance)

    def to_int(self, value: str) -> int:
        return int(value)

    def tokens(self, text: str) -> list[str]:
        return document_tokens(text, self.config.lowercase, self._pattern, self.config.tokenization)

    def simhash(self, text: str) -> int:
        sep = "" if self.config.tokenization == "character" else " "
        return compute(unsigned_hash(f) for f in shingles(self.tokens(text), self.config.window_size, sep))

    def compute_stats(self, batch: list[Sample]) -> list[str]:
        return [str(self.simhash(sample.text)) for sample in batch]


def document_tokens(text: str, lowercase: bool, pattern: re.Pattern | None, tokenization: str) -> list[str]:
    """A caption's tokens as Data-Juicer's text deduplicators cut them: special tokens out, then
    lowercased and ``pattern`` removed if asked, then characters, punctuation-split or space-split words."""
    text = clean_text(text)
    if lowercase:
        text = text.lower()
    if pattern is not None:
        text = pattern.sub("", text)
    if tokenization == "character":
        return list(text)
    parts = split_on_punctuation(text) if tokenization == "punctuation" else text.split(" ")
    return [p for p in parts if p]
