"""The trivial baselines printed beside every model: exact expectations, checked against brute force."""

from __future__ import annotations

import base64
import csv
import itertools

import pytest

from bettersynth.eval.textvqa import load_textvqa, vqa_accuracy
from bettersynth_demo.benchmarks import MMBENCH_COLUMNS, circular_rows
from bettersynth_demo.proxy.baselines import mmbench_circular_chance, textvqa_baselines, trivial_baselines
from bettersynth_demo.render import encode_image, render_scene
from bettersynth_demo.scene import ObjectGroup, Scene


def test_random_ocr_token_is_the_mean_over_every_token_choice(proxy) -> None:
    split = proxy.world.textvqa
    questions = load_textvqa(split.questions, split.annotations)
    # every way of picking one token per question, scored and averaged: the expectation by enumeration
    picks = list(itertools.product(*(q.ocr_tokens for q in questions)))
    by_pick = [sum(vqa_accuracy(t, q.answers) for t, q in zip(pick, questions)) / len(questions) for pick in picks]
    floors = textvqa_baselines(split)
    assert floors["textvqa_random_ocr"] == pytest.approx(100 * sum(by_pick) / len(by_pick))
    assert 0 < floors["textvqa_most_frequent"] < floors["textvqa_random_ocr"] < 100
    assert set(trivial_baselines(proxy.world)) == {"textvqa_random_ocr", "textvqa_most_frequent",
                                                   "mmbench_circular_chance"}


def test_circular_chance_counts_every_rotation(tmp_path) -> None:
    """A 2-option and a 4-option question: a random letter passes them 1/4 and 1/256 of the time."""
    image = base64.b64encode(encode_image(render_scene(Scene((ObjectGroup("circle", "red", 1, "left"),), "white")),
                                          "png")).decode()
    rows = []
    for index, options in ((0, ["red", "blue"]), (1, ["red", "blue", "green", "yellow"])):
        row = {"index": str(index), "question": "What colour is the circle?", "hint": "", "category": "c",
               "l2-category": "l2", "image": image}
        rows += circular_rows(row, options, answer=0)
    tsv = tmp_path / "mmbench.tsv"
    with tsv.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MMBENCH_COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    assert mmbench_circular_chance(tsv) == pytest.approx(100 * (1 / 4 + 1 / 256) / 2)
