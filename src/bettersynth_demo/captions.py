"""Truthful template captions for a ``Scene``, and the ways a caption gets corrupted.

Why: filters are judged by whether they drop the pairs whose text lies about the image,
so each corruption changes exactly one known thing (a colour, a shape, a count, a position,
the whole caption, or its length) and says what it changed.

Example::

    text = caption(scene, rng)                      # "a picture showing two red circles ..."
    bad = CORRUPTIONS.get("wrong_colour")(scene, rng, pool)
    bad.caption, bad.detail                         # caption and {"group": 0, "true": ..., "claimed": ...}
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

from bettersynth.core.registry import Registry
from bettersynth_demo.scene import COLOURS, POSITIONS, SHAPES, ObjectGroup, Scene

MIN_WORDS = 10  # words_num_filter's default minimum; clean captions always reach it
POSITION_PHRASES = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}
COUNT_WORDS = {2: "two", 3: "three", 4: "four"}
_FRAMES = (
    "a simple picture showing {groups} on a {bg} background{word}",
    "this small image contains {groups}, drawn in a flat style{word}",
    "an illustration of {groups} placed on a plain {bg} background{word}",
    "in this little drawing we can see {groups}{word}",
    "a flat drawing on a {bg} background with {groups}{word}",
)
_WORD_CLAUSES = (
    " and the word {word} written on a sign",
    ", with a sign that reads {word}",
    " and a white sign showing the word {word}",
)
_SHORT_FRAMES = ("{objects}", "a picture of {first}", "{first} on {bg}")


def count_words(text: str) -> int:
    """Words as ``words_num_filter`` counts them: punctuation stripped, split on whitespace."""
    return len(re.sub(r"[^\w\s]", " ", text).split())


def object_phrase(group: ObjectGroup) -> str:
    """'two red circles', 'an orange square'."""
    if group.count == 1:
        article = "an" if group.colour[0] in "aeiou" else "a"
        return f"{article} {group.colour} {group.shape}"
    return f"{COUNT_WORDS[group.count]} {group.colour} {group.shape}s"


def group_phrase(group: ObjectGroup) -> str:
    """'two red circles on the left'."""
    return f"{object_phrase(group)} {POSITION_PHRASES[group.position]}"


def caption(scene: Scene, rng: random.Random) -> str:
    """A truthful caption of at least ``MIN_WORDS`` words, phrased by one of a few templates."""
    groups = " and ".join(group_phrase(group) for group in scene.objects)
    word = rng.choice(_WORD_CLAUSES).format(word=scene.word) if scene.word else ""
    return rng.choice(_FRAMES).format(groups=groups, bg=scene.background, word=word)


@dataclass(frozen=True)
class Corrupted:
    """A corrupted caption and what it got wrong (for ``world_labels.json`` only)."""

    caption: str
    detail: dict[str, Any]


# (scene, rng, pool of (sample id, scene) for captions of other images) -> corrupted caption
Corruption = Callable[[Scene, random.Random, Sequence[tuple[str, Scene]]], Corrupted]
CORRUPTIONS: Registry[Corruption] = Registry("caption corruption")


def _with_group(scene: Scene, index: int, group: ObjectGroup) -> Scene:
    objects = list(scene.objects)
    objects[index] = group
    return replace(scene, objects=tuple(objects))


@CORRUPTIONS.register("wrong_colour")
def wrong_colour(scene: Scene, rng: random.Random, pool: Sequence[tuple[str, Scene]]) -> Corrupted:
    """One group gets a colour that no group in the image has."""
    index = rng.randrange(len(scene.objects))
    group = scene.objects[index]
    used = {g.colour for g in scene.objects}
    claimed = rng.choice([c for c in COLOURS if c not in used])
    lie = _with_group(scene, index, replace(group, colour=claimed))
    return Corrupted(caption(lie, rng), {"group": index, "true": group.colour, "claimed": claimed})


@CORRUPTIONS.register("wrong_shape")
def wrong_shape(scene: Scene, rng: random.Random, pool: Sequence[tuple[str, Scene]]) -> Corrupted:
    """One group gets a shape that no group in the image has."""
    index = rng.randrange(len(scene.objects))
    group = scene.objects[index]
    used = {g.shape for g in scene.objects}
    claimed = rng.choice([s for s in SHAPES if s not in used])
    lie = _with_group(scene, index, replace(group, shape=claimed))
    return Corrupted(caption(lie, rng), {"group": index, "true": group.shape, "claimed": claimed})


@CORRUPTIONS.register("wrong_count")
def wrong_count(scene: Scene, rng: random.Random, pool: Sequence[tuple[str, Scene]]) -> Corrupted:
    """One group is said to hold a different number of shapes (1–4)."""
    index = rng.randrange(len(scene.objects))
    group = scene.objects[index]
    claimed = rng.choice([n for n in (1, 2, 3, 4) if n != group.count])
    lie = _with_group(scene, index, replace(group, count=claimed))
    return Corrupted(caption(lie, rng), {"group": index, "true": group.count, "claimed": claimed})


@CORRUPTIONS.register("wrong_position")
def wrong_position(scene: Scene, rng: random.Random, pool: Sequence[tuple[str, Scene]]) -> Corrupted:
    """One group is said to sit where nothing is drawn (no group, no sign).

    Why: the proxy scorer's hard negatives swap colours, shapes, counts and words but
    never positions, so this is the corruption its filter meets without having been taught it.
    """
    index = rng.randrange(len(scene.objects))
    group = scene.objects[index]
    taken = {g.position for g in scene.objects} | ({scene.sign_band} if scene.word else set())
    claimed = rng.choice([p for p in POSITIONS if p not in taken])
    lie = _with_group(scene, index, replace(group, position=claimed))
    return Corrupted(caption(lie, rng), {"group": index, "true": group.position, "claimed": claimed})


@CORRUPTIONS.register("unrelated")
def unrelated(scene: Scene, rng: random.Random, pool: Sequence[tuple[str, Scene]]) -> Corrupted:
    """A truthful caption of another image whose shapes differ from this one's."""
    others = [(sid, other) for sid, other in pool if other.objects != scene.objects]
    if not others:
        raise ValueError("pool: no other image with different objects to borrow a caption from")
    source_id, other = rng.choice(others)
    return Corrupted(caption(other, rng), {"source_id": source_id})


@CORRUPTIONS.register("too_short")
def too_short(scene: Scene, rng: random.Random, pool: Sequence[tuple[str, Scene]]) -> Corrupted:
    """A truthful but terse caption, under ``MIN_WORDS`` words."""
    objects = " and ".join(object_phrase(group) for group in scene.objects)
    text = rng.choice(_SHORT_FRAMES).format(
        objects=objects, first=object_phrase(scene.objects[0]), bg=scene.background
    )
    if count_words(text) >= MIN_WORDS:  # unreachable with the current frames; kept as a guard
        text = object_phrase(scene.objects[0])
    return Corrupted(text, {"words": count_words(text)})
