"""Tiny TextVQA and MMBench files in the official formats (helpers for the eval tests)."""

from __future__ import annotations

import base64
import csv
import io
from pathlib import Path

from PIL import Image

MMB_COLUMNS = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "l2-category", "image"]


def png_b64(colour: tuple[int, int, int] = (200, 30, 30), size: int = 32) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def write_tsv(path: Path, rows: list[dict], columns: list[str] = MMB_COLUMNS) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, delimiter="\t", extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({name: row.get(name, "") for name in columns})
    return path


def rotations(index: int, question: str, options: list[str], answer: int, category: str,
              l2: str, hint: str = "") -> list[dict]:
    """The CircularEval copies of one question: options rotated, answer letter follows."""
    rows = []
    letters = "ABCD"
    for k in range(len(options)):
        rotated = options[k:] + options[:k]
        rows.append({
            "index": index + k * 1_000_000, "question": question, "hint": hint,
            **{letters[i]: text for i, text in enumerate(rotated)},
            "answer": letters[rotated.index(options[answer])], "category": category,
            "l2-category": l2, "image": png_b64((10 * index % 255, 80, 120)),
        })
    return rows


TEXTVQA_ANNOTATIONS = [
    # question_id, image_id, question, answers
    (34602, "img0", "what is the brand of this camera?", ["dakota"] * 3 + ["nikon"] * 7),
    (34603, "img0", "what does the small white text say?", ["copenhagen"] * 1 + ["cph"] * 9),
    (34604, "img1", "what number is on the bus?", ["two"] * 2 + ["2"] * 2 + ["22"] * 6),
]
TEXTVQA_OCR = {34602: ["DAKOTA", "DIGITAL"], 34603: [], 34604: ["22", "BUS"]}


def textvqa_line(qid: int, image_id: str, question: str, tokens: list[str]) -> dict:
    ocr = f"\nReference OCR token: {', '.join(tokens)}" if tokens else ""
    return {"question_id": image_id, "image": f"{image_id}.jpg",
            "text": f"{question}{ocr}\nAnswer the question using a single word or phrase.",
            "category": "default"}
