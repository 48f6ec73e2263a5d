"""A tiny NLTK POS tagger trained offline on demo-world captions, saved as NLTK data.

Why: ``phrase_grounding_recall_filter`` needs NLTK's averaged-perceptron
tagger, which is data (not in the ``nltk`` package) and may not be
downloaded. The demo captions come from a small grammar (``demo.captions``),
so their tags are known word by word; a ``PerceptronTagger`` trained on them
is saved in the exact layout ``nltk.data.find`` and
``PerceptronTagger.load_from_json`` read
(``<nltk_data>/taggers/averaged_perceptron_tagger_eng/averaged_perceptron_tagger_eng.{weights,tagdict,classes}.json``),
so the op loads it through the same path as the real model.

Example::

    nltk_data = build_demo_pos_tagger(models / "nltk_data")
    # recipe: phrase_grounding_recall_filter: {nltk_data: <that folder>, ...}
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from bettersynth.ops.noun_phrases import TAGGER_RESOURCE, tokenize
from bettersynth_demo.captions import CORRUPTIONS, caption
from bettersynth_demo.scene import (
    BACKGROUNDS,
    COLOURS,
    POSITIONS,
    SHAPES,
    WORDS,
    random_scene,
)

# Penn Treebank tags of the caption grammar's closed-class and template words.
TEMPLATE_TAGS = {
    "a": "DT", "an": "DT", "the": "DT", "this": "DT",
    "on": "IN", "in": "IN", "with": "IN", "at": "IN", "of": "IN",
    "and": "CC", ",": ",", ".": ".", "that": "WDT", "we": "PRP", "can": "MD", "see": "VB",
    "showing": "VBG", "contains": "VBZ", "reads": "VBZ", "drawn": "VBN", "placed": "VBN", "written": "VBN",
    "simple": "JJ", "small": "JJ", "flat": "JJ", "plain": "JJ", "little": "JJ", "white": "JJ",
    "picture": "NN", "image": "NN", "illustration": "NN", "drawing": "NN", "style": "NN",
    "background": "NN", "sign": "NN", "word": "NN",
    "two": "CD", "three": "CD", "four": "CD",
}  # fmt: skip


def lexicon() -> dict[str, str]:
    """Every word the caption grammar can produce (lower-cased), with its tag."""
    tags = dict(TEMPLATE_TAGS)
    tags.update({colour: "JJ" for colour in COLOURS})
    tags.update({word: "JJ" for name in BACKGROUNDS for word in name.split()})  # "a light grey background"
    tags.update({shape: "NN" for shape in SHAPES} | {f"{shape}s": "NNS" for shape in SHAPES})
    tags.update({position: "NN" for position in POSITIONS})  # "on the left", "at the top"
    tags.update({word.lower(): "NN" for word in WORDS})  # "the word cat"
    return tags


def training_sentences(n: int = 400, seed: int = 0) -> list[list[tuple[str, str]]]:
    """Tagged captions drawn from the grammar: truthful ones and the short corrupted ones."""
    rng = random.Random(f"pos-tagger:{seed}")
    tags = lexicon()
    sentences = []
    for i in range(n):
        scene = random_scene(rng, word_prob=0.5)
        text = CORRUPTIONS.get("too_short")(scene, rng, []).caption if i % 4 == 3 else caption(scene, rng)
        tokens = tokenize(text.lower())
        unknown = [t for t in tokens if t not in tags]
        if unknown:
            raise ValueError(f"caption grammar produced words without a tag: {unknown} (in {text!r}); add them to TEMPLATE_TAGS")
        sentences.append([(t, tags[t]) for t in tokens])
    return sentences


def build_demo_pos_tagger(nltk_data: Path, n_sentences: int = 400, seed: int = 0) -> Path:
    """Train on ``n_sentences`` demo captions and save under ``nltk_data``; returns ``nltk_data``."""
    from nltk.tag.perceptron import PerceptronTagger

    tagger = PerceptronTagger(load=False)
    state = random.getstate()  # NLTK's training shuffles with the global RNG
    random.seed(seed)
    try:
        tagger.train(training_sentences(n_sentences, seed), nr_iter=5)
    finally:
        random.setstate(state)
    folder = Path(nltk_data) / TAGGER_RESOURCE
    folder.mkdir(parents=True, exist_ok=True)
    folder.parent.parent.chmod(0o700)  # NLTK refuses data folders other accounts can write to
    for param, name in zip(tagger.encode_json_obj(), tagger.param_files("eng")):
        (folder / name).write_text(json.dumps(param), encoding="utf-8")
    return Path(nltk_data)
