"""Noun phrases of a caption, as Data-Juicer's ``phrase_grounding_recall_filter`` finds them.

Why: the recall is "phrases OWL-ViT finds / phrases in the caption", so the
phrases must be the same ones Data-Juicer extracts: lower-cased text, NLTK
word tokens, NLTK's averaged-perceptron POS tags, the GLIP noun-phrase grammar
``NP: {<DT>?<JJ.*>*<NN.*>+}``, punctuation removed, duplicates dropped.
Data-Juicer calls ``nltk.download`` at start-up; here nothing is downloaded:
the tagger is read from an NLTK data folder (``nltk_data``, else
``$NLTK_DATA`` and NLTK's standard folders), where an image build puts it with
``python -m nltk.downloader averaged_perceptron_tagger_eng``. Sentences are
split on end punctuation instead of with punkt, so punkt data is not needed.

Example::

    tagger = load_tagger(None)            # the standard NLTK data
    noun_phrases("A red bus on the street.", tagger)   # ['a red bus', 'the street']
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Any

TAGGER_RESOURCE = "taggers/averaged_perceptron_tagger_eng/"
GRAMMAR = "NP: {<DT>?<JJ.*>*<NN.*>+}"  # GLIP's, as Data-Juicer uses it
PUNCTUATION = "|:;@()[]{}^'\"’`?$%#!&*+,."  # what Data-Juicer strips from each phrase
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")

_TAGGERS: dict[Path, Any] = {}
_LOCK = threading.Lock()


class NltkDataError(ValueError):
    """The POS tagger is not installed where the op looks; the message says where and how."""


def tokenize(text: str) -> list[str]:
    """NLTK's word tokens (``word_tokenize``) of each sentence, sentences split on . ! ?."""
    from nltk.tokenize import NLTKWordTokenizer

    tokenizer = NLTKWordTokenizer()
    return [token for sentence in _SENTENCE_END.split(text.strip()) if sentence for token in tokenizer.tokenize(sentence)]


def search_paths(nltk_data: str | Path | None) -> list[str]:
    """``nltk_data`` alone when given; else ``$NLTK_DATA`` (read now, not at import) and NLTK's defaults."""
    import nltk

    if nltk_data is not None:
        return [str(nltk_data)]
    env = [p for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p]
    return list(dict.fromkeys(env + [str(p) for p in nltk.data.path]))


def tagger_dir(nltk_data: str | Path | None) -> Path:
    """The folder holding the ``averaged_perceptron_tagger_eng`` model; a clear error when it is missing."""
    import nltk

    paths = search_paths(nltk_data)
    try:
        location = nltk.data.find(TAGGER_RESOURCE, paths=paths)
    except LookupError:
        raise NltkDataError(
            f"NLTK POS tagger {TAGGER_RESOURCE!r} not found in {paths}; install it when building the "
            "image (python -m nltk.downloader -d <dir> averaged_perceptron_tagger_eng) and pass "
            "nltk_data or set NLTK_DATA (nothing is downloaded at run time)"
        ) from None
    return Path(location.path)


def load_tagger(nltk_data: str | Path | None) -> Any:
    """The ``averaged_perceptron_tagger_eng`` model from the NLTK data folders; cached per folder."""
    import nltk
    from nltk.tag.perceptron import PerceptronTagger

    folder = tagger_dir(nltk_data)
    with _LOCK:
        if folder not in _TAGGERS:
            # NLTK reads data only under its data path (its path sandbox): add the root we found it in.
            root = str(folder.parent.parent)
            if root not in nltk.data.path:
                nltk.data.path.append(root)
            tagger = PerceptronTagger(load=False)
            tagger.load_from_json("eng", loc=str(folder))
            _TAGGERS[folder] = tagger
        return _TAGGERS[folder]


def strip_punctuation(phrase: str) -> str:
    for mark in PUNCTUATION:
        phrase = phrase.replace(mark, "")
    return phrase.strip()


def noun_phrases(text: str, tagger: Any) -> list[str]:
    """Distinct noun phrases of ``text`` in order of first appearance (Data-Juicer's set, made stable)."""
    from nltk import RegexpParser

    tagged = tagger.tag(tokenize(text.lower()))
    if not tagged:
        return []
    phrases = []
    for subtree in RegexpParser(GRAMMAR).parse(tagged).subtrees():
        if subtree.label() == "NP":
            phrase = strip_punctuation(" ".join(word for word, _ in subtree.leaves()))
            if phrase:
                phrases.append(phrase)
    return list(dict.fromkeys(phrases))
