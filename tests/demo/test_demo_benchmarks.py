"""Demo TextVQA and MMBench files follow the official formats; eval and held-out are disjoint."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import re
from collections import Counter, defaultdict

import numpy as np
import pytest
from PIL import Image

from bettersynth_demo.benchmarks import circular_rows
from bettersynth_demo.scene import WORDS
from bettersynth_demo.world import TextVQAPaths, WorldConfig, WorldPaths, build_world

PROMPT_RE = re.compile(
    r"^(?P<q>[^\n]+)\nReference OCR token: (?P<ocr>[^\n]+)\nAnswer the question using a single word or phrase\.$"
)
HEADER = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "l2-category", "image"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> WorldPaths:
    return build_world(tmp_path_factory.mktemp("world"), WorldConfig(seed=5, n_seed_samples=10, n_instruct=0))


def _read_tsv(path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        return list(reader.fieldnames or []), list(reader)


def _textvqa(paths: TextVQAPaths) -> tuple[dict, list[dict]]:
    annotations = json.loads(paths.annotations.read_text(encoding="utf-8"))
    prompts = [json.loads(line) for line in paths.questions.read_text(encoding="utf-8").splitlines()]
    return annotations, prompts


@pytest.mark.parametrize("split, n", [("textvqa", 40), ("heldout_textvqa", 20)])
def test_demo_textvqa_official_format(world: WorldPaths, split: str, n: int) -> None:
    paths: TextVQAPaths = getattr(world, split)
    annotations, prompts = _textvqa(paths)
    assert {k: annotations[k] for k in ("dataset_type", "dataset_name", "dataset_version")} == {
        "dataset_type": "val", "dataset_name": "textvqa", "dataset_version": "0.5.1"}  # fmt: skip
    data = annotations["data"]
    assert len(data) == len(prompts) == n
    assert len({d["question_id"] for d in data}) == n
    by_id = {p["question_id"]: p for p in prompts}
    for entry in data:
        assert isinstance(entry["question_id"], int) and entry["set_name"] == "val"
        assert entry["image_classes"] == [] and (entry["image_width"], entry["image_height"]) == (64, 64)
        assert entry["question_tokens"] == re.findall(r"[a-z']+", entry["question"].lower())
        image = Image.open(paths.images / f"{entry['image_id']}.jpg")
        assert image.format == "JPEG" and image.size == (64, 64)
        prompt = by_id[entry["question_id"]]
        assert prompt["image"] == f"{entry['image_id']}.jpg" and prompt["category"] == "default"
        match = PROMPT_RE.match(prompt["text"])
        assert match and match["q"] == entry["question"]
        tokens = match["ocr"].split(", ")
        assert 1 <= len(tokens) <= 3
        # The word on the sign: what most annotators said, and an OCR token.
        answers = entry["answers"]
        assert len(answers) == 10
        word, votes = Counter(a.lower() for a in answers).most_common(1)[0]
        assert votes >= 5 and word.upper() in WORDS
        assert [t for t in tokens if t.lower() == word] == [word.upper()]


def test_demo_textvqa_answers_vary_like_humans(world: WorldPaths) -> None:
    data = _textvqa(world.textvqa)[0]["data"]
    unanimous = sum(len(set(d["answers"])) == 1 for d in data)
    assert unanimous < len(data) / 2
    kinds = Counter()
    for entry in data:
        word = Counter(a.lower() for a in entry["answers"]).most_common(1)[0][0]
        for answer in entry["answers"]:
            if answer.lower() != word:
                kinds["article" if answer == f"the {word}" else "unanswerable" if answer == "unanswerable" else "other"] += 1
            elif answer != word:
                kinds["case"] += 1
    assert {"article", "unanswerable", "other", "case"} <= set(kinds)


def test_demo_textvqa_images_show_a_sign(world: WorldPaths) -> None:
    for entry in _textvqa(world.textvqa)[0]["data"]:
        pixels = np.asarray(Image.open(world.textvqa.images / f"{entry['image_id']}.jpg").convert("L"))
        assert (pixels < 60).sum() > 30


@pytest.mark.parametrize("split, n", [("mmbench_tsv", 30), ("heldout_mmbench_tsv", 16)])
def test_demo_mmbench_tsv_with_circular_copies(world: WorldPaths, split: str, n: int) -> None:
    header, rows = _read_tsv(getattr(world, split))
    assert header == HEADER
    assert len({r["index"] for r in rows}) == len(rows)
    groups: dict[int, dict[int, dict]] = defaultdict(dict)
    for row in rows:
        groups[int(row["index"]) % 1_000_000][int(row["index"]) // 1_000_000] = row
    assert len(groups) == n
    n_options = Counter()
    for base, copies in groups.items():
        original = copies[0]
        options = [original[c] for c in "ABCD" if original[c]]
        assert [original[c] for c in "ABCD"] == options + [""] * (4 - len(options))
        assert 2 <= len(options) <= 4 and len(set(options)) == len(options)
        n_options[len(options)] += 1
        assert sorted(copies) == list(range(len(options)))
        right = original[original["answer"]]
        image = Image.open(io.BytesIO(base64.b64decode(original["image"], validate=True)))
        assert image.size == (64, 64) and image.mode == "RGB"
        for k, row in copies.items():
            rotated = options[k:] + options[:k]
            assert [row[c] for c in "ABCD"] == rotated + [""] * (4 - len(options))
            assert row[row["answer"]] == right
            assert "ABCD".index(row["answer"]) == ("ABCD".index(original["answer"]) - k) % len(options)
            assert {f: row[f] for f in ("question", "hint", "category", "l2-category", "image")} == {
                f: original[f] for f in ("question", "hint", "category", "l2-category", "image")}  # fmt: skip
    assert set(n_options) == {2, 3, 4}
    hints = [g[0]["hint"] for g in groups.values()]
    assert hints.count("") > len(hints) / 2


def test_demo_mmbench_answers_match_the_image(world: WorldPaths) -> None:
    """Colour questions: the answer's RGB is in the image; absent distractor colours are not."""
    from bettersynth_demo.scene import COLOURS

    _, rows = _read_tsv(world.mmbench_tsv)
    checked = 0
    for row in rows:
        if int(row["index"]) >= 1_000_000 or row["category"] != "attribute_recognition":
            continue
        if row["A"] not in COLOURS:
            continue
        pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(row["image"]))).convert("RGB"))
        present = {c for c, rgb in COLOURS.items() if np.all(pixels == rgb, axis=-1).any()}
        assert row[row["answer"]] in present
        checked += 1
    assert checked >= 3


def test_demo_circular_rows_rotate_letters() -> None:
    rows = circular_rows({"index": "7", "question": "q"}, ["x", "y", "z"], answer=2)
    assert [r["index"] for r in rows] == ["7", "1000007", "2000007"]
    assert [[r["A"], r["B"], r["C"], r["D"]] for r in rows] == [
        ["x", "y", "z", ""], ["y", "z", "x", ""], ["z", "x", "y", ""]]  # fmt: skip
    assert [r["answer"] for r in rows] == ["C", "B", "A"]


def test_demo_eval_and_heldout_are_disjoint(world: WorldPaths) -> None:
    def pixels_hash(image: Image.Image) -> str:
        return hashlib.sha256(np.asarray(image.convert("RGB")).tobytes()).hexdigest()

    ids, qids, images = [], [], []
    for paths in (world.textvqa, world.heldout_textvqa):
        data = _textvqa(paths)[0]["data"]
        ids.append({d["image_id"] for d in data})
        qids.append({d["question_id"] for d in data})
        images.append({hashlib.sha256((paths.images / f"{d['image_id']}.jpg").read_bytes()).hexdigest() for d in data})
    assert not ids[0] & ids[1] and not qids[0] & qids[1] and not images[0] & images[1]
    tsv_images, indices = [], []
    for path in (world.mmbench_tsv, world.heldout_mmbench_tsv):
        _, rows = _read_tsv(path)
        tsv_images.append({pixels_hash(Image.open(io.BytesIO(base64.b64decode(r["image"])))) for r in rows})
        indices.append({int(r["index"]) for r in rows})
    assert not tsv_images[0] & tsv_images[1] and not indices[0] & indices[1]
