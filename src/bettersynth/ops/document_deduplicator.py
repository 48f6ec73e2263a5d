"""Drop samples whose caption text repeats an earlier one exactly (Data-Juicer's ``document_deduplicator``).

Why: repeated captions (boilerplate alt-text, copied records) weight a few
strings heavily in training. The hash is the md5 of the stripped text,
optionally lower-cased and with whitespace, digits and punctuation removed;
unlike Data-Juicer, the special tokens are removed first (two chunks
structured differently are still the same caption).

Example (recipe)::

    - document_deduplicator: {lowercase: true, ignore_non_character: true}
"""

from __future__ import annotations

import hashlib
import re
import string

from bettersynth.core.sample import Sample, clean_text
from bettersynth.ops.base import OpConfig
from bettersynth.ops.deduplicator import Deduplicator

NON_CHARACTER = re.compile(rf"\s+|\d+|[{re.escape(string.punctuation)}]")


def text_md5(text: str, lowercase: bool = False, ignore_non_character: bool = False) -> str:
    """md5 hex of the caption (special tokens removed), normalised as asked."""
    text = clean_text(text)
    if lowercase:
        text = text.lower()
    if ignore_non_character:
        text = NON_CHARACTER.sub("", text)
    return hashlib.md5(text.strip().encode("utf-8")).hexdigest()


class DocumentDeduplicator(Deduplicator):
    name = "document_deduplicator"
    stat_key = "text_md5"

    class Config(OpConfig):
        lowercase: bool = False  # compare lower-cased text
        ignore_non_character: bool = False  # ignore whitespace, digits and punctuation

    def compute_stats(self, batch: list[Sample]) -> list[str]:
        cfg = self.config
        return [text_md5(s.text, cfg.lowercase, cfg.ignore_non_character) for s in batch]
