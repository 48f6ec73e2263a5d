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


def test_more_ocr_distractors_lower_the_random_token_floor(tmp_path) -> None:
    """The quickstart's prompts list 4-6 OCR tokens (the word among them, same case), instruction turns too."""
    import json
    from dataclasses import replace

    from bettersynth_demo.proxy.quickstart import QUICKSTART_OCR_DISTRACTORS
    from bettersynth_demo.proxy.world import build_proxy_world
    from tests.proxy.conftest import TINY

    config = replace(TINY, world=replace(TINY.world, n_textvqa=12, ocr_distractors=QUICKSTART_OCR_DISTRACTORS))
    paths = build_proxy_world(tmp_path / "proxy", config)
    questions = load_textvqa(paths.world.textvqa.questions, paths.world.textvqa.annotations)
    fewest, most = QUICKSTART_OCR_DISTRACTORS
    assert all(fewest + 1 <= len(q.ocr_tokens) <= most + 1 for q in questions)
    assert all(max(vqa_accuracy(t, q.answers) for t in q.ocr_tokens) == 1.0 for q in questions)
    assert all(t == t.upper() for q in questions for t in q.ocr_tokens)
    turns = [turn["value"] for r in json.loads(paths.world.instruct_json.read_text()) for turn in r["conversations"]]
    listed = [line.split(": ", 1)[1].split(", ") for turn in turns for line in turn.splitlines()
              if line.startswith("Reference OCR token: ")]
    assert listed and all(fewest + 1 <= len(tokens) <= most + 1 for tokens in listed)
    assert textvqa_baselines(paths.world.textvqa)["textvqa_random_ocr"] < 100 / (fewest + 1)


@pytest.mark.parametrize("bad", [(3, 2), (-1, 2), (0, 99)])
def test_ocr_distractors_out_of_range_are_refused(bad) -> None:
    from bettersynth_demo.world import WorldConfig

    with pytest.raises(ValueError, match="ocr_distractors"):
        WorldConfig(ocr_distractors=bad)
