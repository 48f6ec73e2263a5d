"""Multiple-choice answer extraction by VLMEvalKit's rules, with an optional LLM-judge hook.

Why: MMBench numbers are compared with VLMEvalKit's, so a reply must map to the
letter VLMEvalKit's exact-matching path gives it, or to no answer where that path
finds none (``can_infer`` in ``vlmeval/utils/matching_util.py`` and its use in
``extract_answer_from_item``, ``vlmeval/dataset/utils/multiple_choice.py``; read at
open-compass/VLMEvalKit commit e8e78f05). The LLM judge that VLMEvalKit may ask when
the rules fail is a hook here (``Judge``), used only when a caller passes one.

The rules, in order; the first that decides gives the verdict:

0. A reply holding VLMEvalKit's API-failure marker skips rules 1-4 (only rule 5 may answer).
1. Refusal: a reply holding one of VLMEvalKit's refusal phrases is decided as no answer.
2. Letter: each of ``.()[],:;!*#{}`` becomes a space and the reply is cut at whitespace.
   When exactly one option letter (a capital: ``b`` is not ``B``) is a whole token, it is
   the answer if its first occurrence is among the last four tokens; else go on to rule 4.
   Two or more option letters also go on to rule 4.
3. "Z": no option letter is a token but ``Z`` is: decided as no answer.
4. "answer is": the first ``answer is <a-d>`` (any case, ``*`` allowed before the letter,
   no word boundary after it, so "answer is clearly" reads "c") gives that letter if it is
   an option.
5. Text: if the lower-cased reply is at most twice as long as all option texts together,
   the one option whose lower-cased text occurs in it (anywhere, even inside a word) is
   the answer; none or several give no answer.

VLMEvalKit's ``VERBOSE`` switch (off by default) adds an "A may be an article" check;
it is off here too, so "A cat is shown." is option A.

Example::

    extract_choice("The answer is B.", {"A": "dog", "B": "cat"})  # -> "B"
    extract_choice("hot dog", {"A": "dog", "B": "hot dog"})      # -> None (both texts occur)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

__all__ = [
    "API_FAILURE",
    "JUDGE_ATTEMPTS",
    "NO_ANSWER",
    "REFUSALS",
    "Judge",
    "extract_choice",
    "infer_choice",
    "judge_choice",
    "option_by_letter",
    "option_by_text",
]

NO_ANSWER = "Z"  # VLMEvalKit's letter for a decided non-answer (refusal, "Z")
# Replies VLMEvalKit reads as a refusal, and the marker of a failed API call (data, matched verbatim).
REFUSALS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)
API_FAILURE = "Failed to obtain answer via API"
JUDGE_ATTEMPTS = 3  # VLMEvalKit asks its judge up to three times

_SEPARATORS = str.maketrans(dict.fromkeys(".()[],:;!*#{}", " "))
_LAST_TOKENS = 4  # a lone letter counts only among the reply's last four tokens
_ANSWER_IS = re.compile(r"answer\s+is\s+\**([a-d])", re.IGNORECASE)

# question, options (letter -> text), the model's reply -> the judge's own reply, read by the rules
Judge = Callable[[str, Mapping[str, str], str], str]


def option_by_letter(output: str, options: Mapping[str, str]) -> str | None:
    """Rules 0-4: an option letter, ``NO_ANSWER`` when decided as none, ``None`` when undecided."""
    if API_FAILURE in output:
        return None
    if any(phrase in output for phrase in REFUSALS):
        return NO_ANSWER
    tokens = output.translate(_SEPARATORS).split()
    named = [letter for letter in options if letter in tokens]
    if len(named) == 1:
        if tokens.index(named[0]) >= len(tokens) - _LAST_TOKENS:
            return named[0]
    elif not named and NO_ANSWER in tokens:
        return NO_ANSWER
    said = _ANSWER_IS.search(output)
    if said and said.group(1).upper() in options:
        return said.group(1).upper()
    return None


def option_by_text(output: str, options: Mapping[str, str]) -> str | None:
    """Rule 5: the only option whose text occurs in a reply not over twice the options' length."""
    said = output.lower()
    if len(said) > 2 * sum(len(text) for text in options.values()):
        return None
    found = [letter for letter, text in options.items() if text.lower() in said]
    return found[0] if len(found) == 1 else None


def infer_choice(output: str, options: Mapping[str, str]) -> str | None:
    """VLMEvalKit's ``can_infer``: a letter, ``NO_ANSWER`` (decided, no judge is asked) or ``None``."""
    choice = option_by_letter(output, options)
    return choice if choice is not None else option_by_text(output, options)


def judge_choice(judge: Judge, question: str, options: Mapping[str, str], output: str,
                 attempts: int = JUDGE_ATTEMPTS) -> str | None:
    """Ask ``judge`` up to ``attempts`` times and read each reply with the same rules.

    A reply holding ``API_FAILURE`` or that the rules cannot read is a failed attempt.
    After the last failure VLMEvalKit draws a random letter; here the answer is
    ``None`` (counted wrong), so a score never depends on chance.
    """
    for _ in range(attempts):
        reply = judge(question, dict(options), output)
        if API_FAILURE in reply:
            continue
        choice = infer_choice(reply, options)
        if choice is not None:
            return None if choice == NO_ANSWER else choice
    return None


def extract_choice(output: str, options: Mapping[str, str], *, judge: Judge | None = None,
                   question: str = "") -> str | None:
    """The option letter a reply names by VLMEvalKit's rules, or ``None`` for no answer.

    ``judge`` (off by default) is asked only when the rules leave the reply
    undecided; a refusal or a ``Z`` is decided and never goes to the judge.
    """
    choice = infer_choice(output, options)
    if choice is None and judge is not None:
        return judge_choice(judge, question, options, output)
    return None if choice == NO_ANSWER else choice
