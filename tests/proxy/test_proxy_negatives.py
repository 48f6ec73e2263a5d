"""Hard negatives for the proxy scorer: one attribute of one object (or the sign's word) swapped, nothing else."""

from __future__ import annotations

import random

from bettersynth_demo.proxy.audit import claims
from bettersynth_demo.proxy.negatives import hard_negatives, swap_attribute

CAPTION = "two red circles on the left and a blue square at the top, with a sign that reads CAT"


def test_a_swap_changes_exactly_one_claim() -> None:
    groups, word = claims(CAPTION)
    rng = random.Random(0)
    for _ in range(50):
        swapped = swap_attribute(CAPTION, rng)
        new_groups, new_word = claims(swapped)
        changed_groups = len(groups - new_groups)
        assert swapped != CAPTION
        assert (changed_groups, new_word == word) in {(1, True), (0, False)}, swapped
        if changed_groups:  # the position stays; colour, shape or count moved
            (old,), (new,) = groups - new_groups, new_groups - groups
            assert old[3] == new[3] and sum(a != b for a, b in zip(old[:3], new[:3])) == 1


def test_a_caption_without_objects_gets_another_caption() -> None:
    assert swap_attribute("a plain background", random.Random(0)) is None
    texts = ["a plain background", CAPTION]
    negatives = hard_negatives(texts, random.Random(0))
    assert negatives[0] == CAPTION and negatives[1] != CAPTION
