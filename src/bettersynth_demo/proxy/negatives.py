"""Hard negative captions for the proxy scorer: one object's colour, shape or count, or the sign's word, swapped.

Why: with in-batch negatives alone, a small CLIP learns the cheapest cue that
tells a batch's captions apart (colour) and stays blind to shape and count, as
real CLIPs behave like bags of words (Yuksekgonul et al. 2023, "When and why
vision-language models behave like bags-of-words"). NegCLIP's remedy is to add,
for every image, its own caption with one attribute swapped as an extra
negative. The swaps here are made from the clean captions' text alone (a
regular expression over object phrases), never from seed data or its answer key.

Example::

    rng = random.Random(0)
    swap_attribute("two red circles on the left", rng)  # e.g. "two red squares on the left"
"""

from __future__ import annotations

import random
import re
from dataclasses import replace

from bettersynth_demo.captions import COUNT_WORDS, object_phrase
from bettersynth_demo.scene import COLOURS, SHAPES, WORDS, ObjectGroup

COUNTS = {"a": 1, "an": 1, **{word: n for n, word in COUNT_WORDS.items()}}
OBJECT_PHRASE = re.compile(
    rf"\b({'|'.join(COUNTS)}) ({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})s?\b"
)  # "a red circle", "two blue squares"
WORD_PHRASE = re.compile(rf"\b({'|'.join(WORDS)})\b")  # the sign's word, upper case in every caption
_VALUES: dict[str, tuple] = {"colour": tuple(COLOURS), "shape": SHAPES, "count": tuple(COUNT_WORDS) + (1,)}


def swap_attribute(text: str, rng: random.Random) -> str | None:
    """``text`` with one object's colour, shape or count, or the sign's word, changed; None if it names neither."""
    matches = list(OBJECT_PHRASE.finditer(text)) + list(WORD_PHRASE.finditer(text))
    if not matches:
        return None
    match = rng.choice(matches)
    if match.re is WORD_PHRASE:
        word = rng.choice([w for w in WORDS if w != match[1]])
        return text[: match.start()] + word + text[match.end():]
    group = ObjectGroup(shape=match[3], colour=match[2], count=COUNTS[match[1]], position="center")
    attribute = rng.choice(tuple(_VALUES))
    value = rng.choice([v for v in sorted(_VALUES[attribute]) if v != getattr(group, attribute)])
    return text[: match.start()] + object_phrase(replace(group, **{attribute: value})) + text[match.end():]


def hard_negatives(texts: list[str], rng: random.Random) -> list[str]:
    """One swapped caption per text; a text naming no object gets another text of the list instead."""
    negatives = []
    for i, text in enumerate(texts):
        swapped = swap_attribute(text, rng)
        negatives.append(swapped if swapped is not None else texts[(i + 1 + rng.randrange(max(1, len(texts) - 1))) % len(texts)])
    return negatives
