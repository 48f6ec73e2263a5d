"""What a model scores here without looking at the image: the floor every trained model must clear.

Why: on the proxy's TextVQA the answer is always one of the OCR tokens in the
prompt, so copying a random one already scores about 60; MMBench circular
with 2-4 options is passed by guessing letters about 1 time in 10. A table
without these floors makes 68 look better than it is. Each floor is an exact
expectation over the benchmark files, scored by the platform's own metric.

Example::

    floors = trivial_baselines(paths.world)
    floors["textvqa_random_ocr"], floors["mmbench_circular_chance"]
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from pathlib import Path

from bettersynth.eval.mmbench import load_mmbench
from bettersynth.eval.normalize import normalize_answer
from bettersynth.eval.textvqa import load_textvqa, vqa_accuracy
from bettersynth_demo.world import TextVQAPaths, WorldPaths

BASELINE_NAMES = {  # key -> how the table names it
    "textvqa_random_ocr": "TextVQA random OCR token",
    "textvqa_most_frequent": "TextVQA most frequent answer",
    "mmbench_circular_chance": "MMBench circular option-letter chance",
}


def textvqa_baselines(split: TextVQAPaths) -> dict[str, float]:
    """Expected accuracy (percent) of answering a uniformly random OCR token, and of one answer for all."""
    questions = load_textvqa(split.questions, split.annotations)
    if not questions:
        raise ValueError(f"{split.questions}: no questions")
    random_ocr = statistics.fmean(
        statistics.fmean(vqa_accuracy(token, q.answers) for token in q.ocr_tokens) if q.ocr_tokens else 0.0
        for q in questions)
    common = Counter(normalize_answer(a) for q in questions for a in q.answers).most_common(1)[0][0]
    frequent = statistics.fmean(vqa_accuracy(common, q.answers) for q in questions)
    return {"textvqa_random_ocr": 100 * random_ocr, "textvqa_most_frequent": 100 * frequent}


def mmbench_circular_chance(tsv: Path) -> float:
    """Expected CircularEval accuracy (percent) of a uniformly random letter: every pass right, (1/n)^n."""
    groups: dict[int, list[int]] = {}  # question -> options per pass
    for row in load_mmbench(tsv):
        groups.setdefault(row.group, []).append(len(row.options))
    if not groups:
        raise ValueError(f"{tsv}: no questions")
    return 100 * statistics.fmean(math.prod(1 / n for n in passes) for passes in groups.values())


def trivial_baselines(world: WorldPaths) -> dict[str, float]:
    """The floors on the eval split, keyed as ``BASELINE_NAMES``."""
    return {**textvqa_baselines(world.textvqa), "mmbench_circular_chance": mmbench_circular_chance(world.mmbench_tsv)}
