"""Fixtures: tiny TextVQA and MMBench files in the official formats, written per test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from tests.eval.eval_data import TEXTVQA_ANNOTATIONS, TEXTVQA_OCR, rotations, textvqa_line, write_tsv


@pytest.fixture
def mmbench_rows() -> list[dict]:
    return (
        rotations(0, "What colour is the circle?", ["red", "blue", "green", "yellow"], 0, "colour", "perception")
        + rotations(1, "Is there a sign?", ["yes", "no"], 1, "ocr", "perception", hint="Look at the top.")
        + rotations(2, "How many squares?", ["1", "2", "3"], 2, "count", "reasoning")
    )


@pytest.fixture
def mmbench_tsv(tmp_path: Path, mmbench_rows: list[dict]) -> Path:
    return write_tsv(tmp_path / "mmbench_dev_en.tsv", mmbench_rows)


@pytest.fixture
def textvqa_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    annotations = tmp_path / "TextVQA_0.5.1_val.json"
    data = [{"question_id": q, "image_id": i, "question": text, "answers": a,
             "image_classes": [], "set_name": "val"} for q, i, text, a in TEXTVQA_ANNOTATIONS]
    annotations.write_text(json.dumps({"dataset_name": "textvqa", "data": data}))
    questions = tmp_path / "llava_textvqa_val_v051_ocr.jsonl"
    lines = [textvqa_line(q, i, text.capitalize() if q == 34604 else text, TEXTVQA_OCR[q])
             for q, i, text, _ in TEXTVQA_ANNOTATIONS]
    questions.write_text("".join(json.dumps(line) + "\n" for line in lines))
    image_dir = tmp_path / "train_images"
    image_dir.mkdir()
    for k, image_id in enumerate(["img0", "img1"]):
        Image.new("RGB", (40, 30), (50 * k, 100, 200)).save(image_dir / f"{image_id}.jpg")
    return questions, annotations, image_dir
