"""Write demo TextVQA and MMBench splits in the official file formats.

Why: the evaluation code must run unchanged on the demo world and on the real
benchmarks, so the files here copy the official layouts: TextVQA's ``TextVQA_0.5.1_val.json``
plus LLaVA's OCR-prompt jsonl and JPEGs in ``train_images/``, and MMBench's base64 TSV
with circular copies (``index + k * 1_000_000``, options rotated by ``k``).

Example::

    write_textvqa(out / "textvqa", scenes, rng, split="eval", first_question_id=34602, image_size=64, seed=0)
    write_mmbench(out / "mmbench" / "mmbench_dev.tsv", scenes, rng, first_index=0, image_size=64)
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import os
import random
import re
from pathlib import Path
from typing import Any, Sequence

from bettersynth_demo.questions import OCR_DISTRACTORS, TEXTVQA_QUESTIONS, ask, ocr_tokens, textvqa_answers
from bettersynth_demo.render import encode_image, render_scene
from bettersynth_demo.scene import Scene

TEXTVQA_ANNOTATIONS = "TextVQA_0.5.1_val.json"
TEXTVQA_LLAVA_QUESTIONS = "llava_textvqa_val_v051_ocr.jsonl"
TEXTVQA_IMAGES = "train_images"  # the official val images live in the train_images folder
TEXTVQA_PROMPT_SUFFIX = "Answer the question using a single word or phrase."
MMBENCH_COLUMNS = ("index", "question", "hint", "A", "B", "C", "D", "answer", "category", "l2-category", "image")
MMBENCH_LETTERS = "ABCD"
CIRCULAR_STRIDE = 1_000_000  # MMBench's circular copies sit at index + k * stride
MMBENCH_KINDS = ("colour", "shape", "count", "position")
MMBENCH_CATEGORIES = {
    "colour": ("attribute_recognition", "finegrained_perception (single-instance)"),
    "shape": ("attribute_recognition", "finegrained_perception (single-instance)"),
    "count": ("object_counting", "finegrained_perception (cross-instance)"),
    "position": ("object_localization", "finegrained_perception (single-instance)"),
}
_HINTS = ("The picture shows simple flat shapes.", "Look at the shapes, not the sign.")


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


def image_id(split: str, number: int, seed: int) -> str:
    """A 16-hex-digit id like TextVQA's, derived from the split, number and seed."""
    return hashlib.sha1(f"{split}:{seed}:{number}".encode()).hexdigest()[:16]


def question_tokens(question: str) -> list[str]:
    """TextVQA's ``question_tokens``: lower-case words, punctuation dropped."""
    return re.findall(r"[a-z0-9']+", question.lower())


def write_textvqa(
    folder: Path,
    scenes: Sequence[Scene],
    rng: random.Random,
    *,
    split: str,
    first_question_id: int,
    image_size: int,
    seed: int,
    ocr_distractors: tuple[int, int] = OCR_DISTRACTORS,
) -> None:
    """One question per scene (each scene must carry a word) about the word on its sign.

    ``split`` and ``seed`` name the images, so two splits never share an image id.
    """
    images = folder / TEXTVQA_IMAGES
    images.mkdir(parents=True, exist_ok=True)
    data, prompts = [], []
    for number, scene in enumerate(scenes):
        if not scene.word:
            raise ValueError("scenes: every TextVQA scene needs a word")
        iid = image_id(split, number, seed)
        (images / f"{iid}.jpg").write_bytes(encode_image(render_scene(scene, image_size), "jpeg"))
        question = rng.choice(TEXTVQA_QUESTIONS)
        qid = first_question_id + number
        data.append(
            {
                "question": question,
                "image_id": iid,
                "image_classes": [],
                "flickr_original_url": "",
                "flickr_300k_url": "",
                "image_width": image_size,
                "image_height": image_size,
                "answers": textvqa_answers(scene.word, rng),
                "question_tokens": question_tokens(question),
                "question_id": qid,
                "set_name": "val",
            }
        )
        tokens = ", ".join(ocr_tokens(scene.word, rng, ocr_distractors))
        prompts.append(
            {
                "question_id": qid,
                "image": f"{iid}.jpg",
                "text": f"{question}\nReference OCR token: {tokens}\n{TEXTVQA_PROMPT_SUFFIX}",
                "category": "default",
            }
        )
    write_json(
        folder / TEXTVQA_ANNOTATIONS,
        {"dataset_type": "val", "dataset_name": "textvqa", "dataset_version": "0.5.1", "data": data},
    )
    tmp = folder / (TEXTVQA_LLAVA_QUESTIONS + ".partial")
    tmp.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in prompts), encoding="utf-8")
    os.replace(tmp, folder / TEXTVQA_LLAVA_QUESTIONS)


def circular_rows(row: dict[str, str], options: Sequence[str], answer: int) -> list[dict[str, str]]:
    """The row itself plus N−1 copies whose options are rotated left by k, answer letter following."""
    n = len(options)
    rows = []
    for k in range(n):
        rotated = [options[(i + k) % n] for i in range(n)]
        copy = dict(row, index=str(int(row["index"]) + k * CIRCULAR_STRIDE))
        copy.update({letter: "" for letter in MMBENCH_LETTERS})
        copy.update(dict(zip(MMBENCH_LETTERS, rotated)))
        copy["answer"] = MMBENCH_LETTERS[(answer - k) % n]
        rows.append(copy)
    return rows


def write_mmbench(
    path: Path, scenes: Sequence[Scene], rng: random.Random, *, first_index: int, image_size: int
) -> None:
    """One 2–4 option question per scene; originals first, then circular copies by k."""
    by_k: dict[int, list[dict[str, str]]] = {}
    for number, scene in enumerate(scenes):
        question = ask(scene, MMBENCH_KINDS, rng)
        n_options = rng.randint(2, min(4, len(question.choices)))
        distractors = rng.sample([c for c in question.choices if c != question.answer], n_options - 1)
        answer = rng.randrange(n_options)
        options = distractors[:answer] + [question.answer] + distractors[answer:]
        category, l2 = MMBENCH_CATEGORIES[question.kind]
        png = encode_image(render_scene(scene, image_size), "png")
        row = {
            "index": str(first_index + number),
            "question": question.text,
            "hint": rng.choice(_HINTS) if rng.random() < 0.15 else "",
            "category": category,
            "l2-category": l2,
            "image": base64.b64encode(png).decode("ascii"),
        }
        for k, copy in enumerate(circular_rows(row, options, answer)):
            by_k.setdefault(k, []).append(copy)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    with tmp.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MMBENCH_COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        for k in sorted(by_k):
            writer.writerows(by_k[k])
    os.replace(tmp, path)
