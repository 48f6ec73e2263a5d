"""Rule-based option extraction for multiple-choice answers (no LLM judge).

Why: MMBench scores must not depend on an external judge model; a reply is
mapped to a letter only when the rules find exactly one candidate, and is
counted wrong (``None``) when they find none or several.

Example::

    extract_choice("The answer is B.", {"A": "dog", "B": "cat"})  # -> "B"
"""

from __future__ import annotations

import re

# A capital letter standing alone: not inside a word ("Based") or a contraction.
_LETTER = re.compile(r"(?<![A-Za-z0-9'])([A-Z])(?![A-Za-z0-9'])")
# "A" followed by a lower-case word reads as the article ("A cat sits"), not option A.
_ARTICLE_A = re.compile(r"A\s+(?!(?:and|or|nor)\b)[a-z]")
_NON_WORD = re.compile(r"[^\w\s]")


def _letters(output: str, options: dict[str, str]) -> set[str]:
    # Letters inside an option's own text ("B. Vitamin C") are not choices.
    quoted = [range(m.start(), m.end()) for text in options.values() if len(text.strip()) > 1
              for m in re.finditer(re.escape(text.strip()), output)]
    found = set()
    for match in _LETTER.finditer(output):
        letter = match.group(1)
        if letter not in options or any(match.start() in span for span in quoted):
            continue
        if letter == "A" and _ARTICLE_A.match(output, match.start()):
            continue
        found.add(letter)
    return found


def _squash(text: str) -> str:
    return " ".join(_NON_WORD.sub(" ", text.lower()).split())


def _text_match(output: str, options: dict[str, str]) -> str | None:
    said = _squash(output)
    texts = {letter: _squash(text) for letter, text in options.items() if _squash(text)}
    exact = [letter for letter, text in texts.items() if text == said]
    if len(exact) == 1:
        return exact[0]
    hits = [letter for letter, text in texts.items()
            if re.search(rf"(?<!\w){re.escape(text)}(?!\w)", said)]
    if len(hits) == 1:
        return hits[0]
    # "hot dog" also contains option "dog": keep the hit that contains all the others.
    longest = max(hits, key=lambda letter: len(texts[letter]), default=None)
    if longest and all(texts[h] in texts[longest] for h in hits) and \
            sum(texts[h] == texts[longest] for h in hits) == 1:
        return longest
    return None


def extract_choice(output: str, options: dict[str, str]) -> str | None:
    """The option letter a reply names, or ``None`` when it is absent or ambiguous.

    Rules, in order: exactly one option letter standing alone ("B", "B.",
    "(B)", "B) cat", "The answer is B."); two different letters give ``None``;
    with no letter, exactly one option text found in the reply.
    """
    letters = _letters(output, options)
    if len(letters) == 1:
        return letters.pop()
    if letters:
        return None
    return _text_match(output, options)
