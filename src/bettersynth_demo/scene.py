"""What a demo image shows: a few groups of coloured shapes and maybe a word on a sign.

Why: every caption, question and answer in the demo world is derived from one ``Scene``,
so the ground truth is exact and a test can check any text against it.

Example::

    rng = random.Random("demo:0")
    scene = random_scene(rng, word_prob=0.5)
    scene.objects[0].colour  # e.g. 'red'
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Literal

Shape = Literal["circle", "square", "triangle"]
Position = Literal["left", "right", "top", "bottom", "center"]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 60, 220),
    "yellow": (235, 200, 20),
    "purple": (140, 50, 180),
    "orange": (245, 130, 20),
}
# Background names avoid object colour words so captions stay unambiguous.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "light grey": (228, 228, 228),
    "cream": (250, 244, 224),
    "beige": (236, 226, 205),
}
POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom", "center")
# Short words: the bitmap font is 6 px a letter, and a sign must fit a third of 64 px.
WORDS: tuple[str, ...] = (
    "CAT", "DOG", "STOP", "OPEN", "SALE", "BUS", "TAXI", "EXIT", "PARK",
    "CAFE", "BOOK", "FISH", "MILK", "BANK", "SHOP", "ZOO", "SUN", "RAIN",
)  # fmt: skip
SignBand = Literal["top", "bottom"]
MAX_OBJECTS = 3  # shapes drawn in one image, all groups together


@dataclass(frozen=True)
class ObjectGroup:
    """``count`` identical shapes of one colour, drawn together at one position."""

    shape: str
    colour: str
    count: int
    position: str

    def to_json(self) -> dict[str, Any]:
        return {"shape": self.shape, "colour": self.colour, "count": self.count, "position": self.position}


@dataclass(frozen=True)
class Scene:
    """One image's content; groups differ in both shape and colour, so questions are unambiguous."""

    objects: tuple[ObjectGroup, ...]
    background: str
    word: str | None = None
    sign_band: SignBand = "top"  # where the word's sign sits when there is a word

    def to_json(self) -> dict[str, Any]:
        return {
            "objects": [group.to_json() for group in self.objects],
            "background": self.background,
            "word": self.word,
            "sign_band": self.sign_band if self.word else None,
        }

    def key(self) -> tuple:
        """Identity of the content, used to keep evaluation splits disjoint."""
        return (self.objects, self.background, self.word, self.sign_band if self.word else None)


def random_scene(rng: random.Random, word_prob: float) -> Scene:
    """Draw 1–2 groups holding 1–3 shapes in total, and a word with probability ``word_prob``."""
    n_groups = rng.choice((1, 1, 2))
    counts = [rng.randint(1, MAX_OBJECTS)] if n_groups == 1 else rng.choice(([1, 1], [1, 2], [2, 1]))
    shapes = rng.sample(SHAPES, n_groups)
    colours = rng.sample(list(COLOURS), n_groups)
    has_word = rng.random() < word_prob
    sign_band: SignBand = rng.choice(("top", "bottom"))
    free = [p for p in POSITIONS if not (has_word and p == sign_band)]
    positions = rng.sample(free, n_groups)
    objects = tuple(
        ObjectGroup(shape, colour, count, position)
        for shape, colour, count, position in zip(shapes, colours, counts, positions)
    )
    return Scene(
        objects=objects,
        background=rng.choice(list(BACKGROUNDS)),
        word=rng.choice(WORDS) if has_word else None,
        sign_band=sign_band,
    )
