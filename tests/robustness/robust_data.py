"""Datasets for the robustness tests: good samples with every kind of bad input spread among them."""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bettersynth.core.sample import caption_text

CAPTION = "a small red bus parked on a quiet street"


def write_png(path: Path, seed: int, size: tuple[int, int] = (12, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.RandomState(seed).randint(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def good_record(i: int, caption: str = CAPTION) -> dict:
    return {"id": f"s{i:05d}", "text": caption_text(f"{caption} {i}"), "images": [f"imgs/{i:05d}.png"]}


def write_lines(path: Path, lines: list[bytes | dict]) -> Path:
    raw = [line if isinstance(line, bytes) else json.dumps(line).encode("utf-8") for line in lines]
    path.write_bytes(b"\n".join(raw) + b"\n")
    return path


def clean_dataset(root: Path, n: int, seed: int = 0) -> Path:
    """``n`` good samples with small distinct images; returns the jsonl path (``root/samples.jsonl``)."""
    for i in range(n):
        write_png(root / "imgs" / f"{i:05d}.png", seed=seed + i, size=(10 + i % 7, 8 + i % 5))
    records = [good_record(i) for i in range(n)]
    return write_lines(root / "samples.jsonl", records)


@dataclass(frozen=True)
class Bad:
    """What must happen to one bad line: its outcome id, status, op and a phrase of the reason."""

    id: str | None
    status: str
    op: str
    reason: str


def messy_dataset(root: Path, outside: Path, n_good: int = 30) -> tuple[Path, dict[str, Bad], list[str]]:
    """Good samples with one of each bad input spread among them.

    Returns the jsonl, the expected fate of each bad line keyed by a label,
    and the ids of the good samples (all must be kept).
    """
    for i in range(n_good):
        write_png(root / "imgs" / f"{i:05d}.png", seed=i)
    imgs = root / "imgs"
    (imgs / "corrupt.png").write_bytes(b"this is not a png at all" * 4)
    (imgs / "empty.png").write_bytes(b"")
    buffer = io.BytesIO()
    Image.fromarray(np.random.RandomState(1).randint(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    (imgs / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    Image.new("1", (8200, 8200)).save(imgs / "bomb.png")  # 67 Mpx in a small file: over the 64 Mpx limit
    write_png(outside / "secret.png", seed=99)
    os.symlink(outside / "secret.png", imgs / "link-out.png")

    def one(label: str, images: list[str], caption: str = CAPTION) -> dict:
        return {"id": label, "text": caption_text(caption, len(images)) if images else caption, "images": images}

    ingest = "ingest"  # every image is checked when its sample enters the run, before any op
    bad: dict[str, tuple[bytes | dict, Bad]] = {
        "corrupt": (one("corrupt", ["imgs/corrupt.png"]), Bad("corrupt", "rejected", ingest, "not a recognised image")),
        "truncated": (one("truncated", ["imgs/truncated.jpg"]), Bad("truncated", "rejected", ingest, "truncated")),
        "zero-byte": (one("zero-byte", ["imgs/empty.png"]), Bad("zero-byte", "rejected", ingest, "0 bytes")),
        "bomb": (one("bomb", ["imgs/bomb.png"]), Bad("bomb", "rejected", ingest, "decompression bomb")),
        "missing": (one("missing", ["imgs/nope.png"]), Bad("missing", "rejected", ingest, "not found")),
        "dotdot": (one("dotdot", ["../../etc/passwd"]), Bad("dotdot", "rejected", ingest, "escape the dataset root")),
        "absolute": (one("absolute", [str(outside / "secret.png")]), Bad("absolute", "rejected", ingest, "is absolute")),
        "symlink": (one("symlink", ["imgs/link-out.png"]), Bad("symlink", "rejected", ingest, "is a symlink")),
        "not-json": (b'{"id": "not-json", "text": ', Bad(None, "rejected", "reader", "not JSON")),
        "not-utf8": (b'{"id": "not-utf8", "text": "caf\xe9 au lait"}', Bad(None, "rejected", "reader", "not UTF-8")),
        "no-text": ({"id": "no-text", "images": []}, Bad("no-text", "rejected", "reader", "'text' missing")),
        "empty-caption": (one("empty-caption", ["imgs/00000.png"], ""), Bad("empty-caption", "filtered", "words_num_filter", "min_num=1")),
        "huge-caption": (one("huge-caption", ["imgs/00001.png"], "word " * 200_000), Bad("huge-caption", "filtered", "words_num_filter", "max_num=1000")),
        "duplicate": (good_record(3), Bad("s00003", "rejected", "reader", "duplicate id")),
        "token-mismatch": ({"id": "token-mismatch", "text": caption_text(CAPTION, 2), "images": ["imgs/00002.png"]},
                           Bad("token-mismatch", "rejected", "reader", "2 image tokens but 1 images")),
    }
    lines: list[bytes | dict] = []
    labels = list(bad)
    for i in range(n_good):
        lines.append(good_record(i))
        if i % 2 == 1 and labels:
            lines.append(bad[labels.pop(0)][0])
    assert not labels, "n_good too small to spread every bad line"
    jsonl = write_lines(root / "samples.jsonl", lines)
    return jsonl, {label: fate for label, (_, fate) in bad.items()}, [good_record(i)["id"] for i in range(n_good)]
