"""Questions about a ``Scene`` with exact answers: for instruction tuning, MMBench and TextVQA.

Why: one question kind (colour, shape, count, position, word) feeds every benchmark, so
the instruction set and the evaluation sets ask the same things in the same words, and
the answer is always computed from the scene, never guessed.

Example::

    question = QUESTIONS.get("colour")(scene, rng)   # None when the scene cannot answer it
    question.text, question.answer                   # 'What colour is the circle?', 'red'
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from bettersynth.core.registry import Registry
from bettersynth_demo.scene import COLOURS, POSITIONS, SHAPES, WORDS, ObjectGroup, Scene

COUNTS: tuple[str, ...] = ("1", "2", "3", "4")


@dataclass(frozen=True)
class Question:
    """A question, its answer, and every value of its kind (distractors come from these)."""

    kind: str
    text: str
    answer: str
    choices: tuple[str, ...]


QuestionKind = Callable[[Scene, random.Random], "Question | None"]
QUESTIONS: Registry[QuestionKind] = Registry("question kind")


def _noun(group: ObjectGroup) -> tuple[str, str]:
    """('circle', 'is') or ('circles', 'are')."""
    return (group.shape, "is") if group.count == 1 else (f"{group.shape}s", "are")


@QUESTIONS.register("colour")
def colour_question(scene: Scene, rng: random.Random) -> Question:
    group = rng.choice(scene.objects)
    noun, verb = _noun(group)
    text = rng.choice((f"What colour {verb} the {noun}?", f"What color {verb} the {noun} in the image?"))
    return Question("colour", text, group.colour, tuple(COLOURS))


@QUESTIONS.register("shape")
def shape_question(scene: Scene, rng: random.Random) -> Question:
    group = rng.choice(scene.objects)
    noun, verb = ("object", "is") if group.count == 1 else ("objects", "are")
    text = rng.choice((f"What shape {verb} the {group.colour} {noun}?", f"Which shape is drawn in {group.colour}?"))
    return Question("shape", text, group.shape, SHAPES)


@QUESTIONS.register("count")
def count_question(scene: Scene, rng: random.Random) -> Question:
    group = rng.choice(scene.objects)
    text = rng.choice(
        (f"How many {group.shape}s are there?", f"How many {group.shape}s can you see in the image?")
    )
    return Question("count", text, str(group.count), COUNTS)


@QUESTIONS.register("position")
def position_question(scene: Scene, rng: random.Random) -> Question:
    group = rng.choice(scene.objects)
    noun, verb = _noun(group)
    text = rng.choice(
        (f"Where {verb} the {group.colour} {noun}?", f"In which part of the image {verb} the {group.colour} {noun}?")
    )
    return Question("position", text, group.position, POSITIONS)


@QUESTIONS.register("word")
def word_question(scene: Scene, rng: random.Random) -> Question | None:
    if not scene.word:
        return None
    text = rng.choice(("What word is written in the image?", "What does the sign say?"))
    return Question("word", text, scene.word, WORDS)


def ask(scene: Scene, kinds: tuple[str, ...], rng: random.Random) -> Question:
    """One question of a randomly chosen kind among ``kinds`` that the scene can answer."""
    for kind in rng.sample(kinds, len(kinds)):
        question = QUESTIONS.get(kind)(scene, rng)
        if question is not None:
            return question
    raise ValueError(f"kinds: none of {kinds} applies to this scene")


# --- TextVQA: ten human answers with realistic disagreement, and OCR tokens -------------

TEXTVQA_QUESTIONS = (
    "what word is written in the image?",
    "what does the sign say?",
    "what is written on the sign?",
    "what word appears on the white sign?",
    "what text is shown in this picture?",
)
_SYNONYMS = {
    "CAT": "kitty", "DOG": "puppy", "STOP": "halt", "SHOP": "store", "TAXI": "cab",
    "CAFE": "coffee shop", "EXIT": "way out", "SALE": "discount", "BOOK": "books",
    "BUS": "bus stop", "PARK": "parking", "BANK": "atm", "ZOO": "animals",
}  # fmt: skip
_OCR_NOISE = ("A", "12", "No.", "7", "II", "OK")
MAX_OCR_DISTRACTORS = len(WORDS) - 1 + len(_OCR_NOISE)  # every other word and every noise token
N_ANSWERS = 10  # TextVQA collects ten human answers per question


def textvqa_answers(word: str, rng: random.Random) -> list[str]:
    """Ten answers, most of them the word (in some case), the rest as annotators err.

    At least five match the word, so the exact word always scores 1.0 under VQA accuracy.
    """
    answers = [_exact_form(word, rng) for _ in range(rng.randint(5, N_ANSWERS - 1))]
    while len(answers) < N_ANSWERS:
        answers.append(_variant(word, rng))
    rng.shuffle(answers)
    return answers


def _exact_form(word: str, rng: random.Random) -> str:
    return rng.choices((word.lower(), word.upper(), word.title()), weights=(7, 2, 1))[0]


def _variant(word: str, rng: random.Random) -> str:
    kind = rng.choice(("article", "typo", "synonym", "unanswerable"))
    if kind == "article":
        return f"the {word.lower()}"
    if kind == "synonym" and word in _SYNONYMS:
        return _SYNONYMS[word]
    if kind == "unanswerable":
        return "unanswerable"
    return _typo(word.lower(), rng)


def _typo(word: str, rng: random.Random) -> str:
    """Drop one letter or swap two neighbours, whichever changes the word."""
    i = rng.randrange(len(word) - 1)
    swapped = word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    return swapped if swapped != word else word[:i] + word[i + 1 :]


OCR_DISTRACTORS = (0, 2)  # the demo world's fewest and most distractor tokens beside the word


def ocr_tokens(word: str, rng: random.Random, distractors: tuple[int, int] = OCR_DISTRACTORS) -> list[str]:
    """The word as an OCR engine reads it, plus ``distractors`` (fewest, most) other tokens, in random order."""
    pool = [w.title() for w in WORDS if w != word] + list(_OCR_NOISE)
    tokens = [word] + rng.sample(pool, rng.randint(*distractors))
    rng.shuffle(tokens)
    return tokens
