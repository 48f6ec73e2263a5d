"""Validation at ingestion: with a recipe whose ops read no image, every bad image and every bad
sample is still rejected with its reason before any op runs, on every way a recipe runs
(the runner, ``data apply``, rounds, ``process``), and the counts add up."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from robust_data import write_lines, write_png

from bettersynth.core.images import ImageError, check_image
from bettersynth.recipes.recipe import Recipe
from bettersynth.recipes.rounds import run_rounds
from bettersynth.recipes.runner import run_recipe

EOC = "<|__dj__eoc|>"
WORDS_ONLY = {"process": [{"words_num_filter": {"min_num": 1}}]}  # reads no image

# label -> (image path as the sample names it, phrase of the reason); built by ``bad_images``
BAD_IMAGES = {
    "corrupt": ("imgs/corrupt.png", "not a recognised image"),
    "truncated": ("imgs/truncated.jpg", "truncated"),
    "zero-byte": ("imgs/empty.png", "0 bytes"),
    "bomb": ("imgs/bomb.png", "decompression bomb"),
    "missing": ("imgs/nope.png", "not found"),
    "folder": ("imgs/a-folder", "not a regular file"),
    "symlink-inside": ("imgs/link-in.png", "is a symlink"),
    "symlink-outside": ("imgs/link-out.png", "is a symlink"),
    "symlinked-folder": ("linked/00000.png", "folder"),
    "dotdot": ("../outside/secret.png", "escape the dataset root"),
}
N_GOOD = 6


def bad_images(root: Path, outside: Path) -> dict[str, tuple[str, str]]:
    imgs = root / "imgs"
    for i in range(N_GOOD):
        write_png(imgs / f"{i:05d}.png", seed=i)
    (imgs / "corrupt.png").write_bytes(b"definitely not a png " * 5)
    buffer = io.BytesIO()
    Image.fromarray(np.random.RandomState(1).randint(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    (imgs / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (imgs / "empty.png").write_bytes(b"")
    Image.new("1", (8200, 8200)).save(imgs / "bomb.png")  # 67 Mpx in a small file, over the 64 Mpx budget
    (imgs / "a-folder").mkdir()
    os.symlink(imgs / "00000.png", imgs / "link-in.png")  # even pointing inside the root
    write_png(outside / "secret.png", seed=99)
    os.symlink(outside / "secret.png", imgs / "link-out.png")
    os.symlink(imgs, root / "linked")
    cases = dict(BAD_IMAGES)
    cases["absolute"] = (str(outside / "secret.png"), "is absolute")
    return cases


def caption(words: str, n_images: int = 1, token: str = "<__dj__image>") -> str:
    return " ".join([token] * n_images + [words, EOC])


@pytest.fixture
def dataset(tmp_path) -> tuple[Path, dict[str, tuple[str, str]], list[str]]:
    """A jsonl with good samples and one sample per bad kind; returns it, the bad kinds, the good ids."""
    root, outside = tmp_path / "data", tmp_path / "outside"
    outside.mkdir()
    cases = bad_images(root, outside)
    good = [{"id": f"g{i}", "text": caption(f"a red bus number {i}", token="<image>" if i % 2 else "<__dj__image>"),
             "images": [f"imgs/{i:05d}.png"]} for i in range(N_GOOD)]
    lines: list[dict | bytes] = []
    for i, (label, (path, _)) in enumerate(cases.items()):
        lines.append(good[i % N_GOOD] if i < N_GOOD else {"id": f"g-extra{i}", "text": caption("a spare bus"), "images": ["imgs/00001.png"]})
        lines.append({"id": label, "text": caption("a picture of a bus"), "images": [path]})
    lines.append({"id": "tokens", "text": caption("two tokens, one image", 2), "images": ["imgs/00002.png"]})
    lines.append({"id": "no-text", "images": ["imgs/00003.png"]})
    lines.append({"id": "null-text", "text": None, "images": []})
    jsonl = write_lines(root / "samples.jsonl", lines)
    good_ids = [r["id"] for r in lines if isinstance(r, dict) and r["id"].startswith("g")]
    return jsonl, cases, good_ids


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _assert_rejections(records: list[dict], cases: dict[str, tuple[str, str]], op_key: str = "op", reason_key: str = "error"):
    by_id = {r["id"]: r for r in records}
    for label, (_, phrase) in cases.items():
        assert by_id[label][op_key] == "ingest", (label, by_id[label])
        assert phrase in by_id[label][reason_key], (label, by_id[label])
    assert "2 image tokens but 1 images" in by_id["tokens"][reason_key]
    assert "'text' missing" in by_id["no-text"][reason_key] and "'text' missing" in by_id["null-text"][reason_key]


def test_robust_ingest_rejects_every_bad_image_before_any_op(dataset, tmp_path):
    jsonl, cases, good_ids = dataset
    out = tmp_path / "out"
    report = run_recipe(Recipe.from_dict(WORDS_ONLY), jsonl, jsonl.parent, out, num_workers=2, chunk_size=5)
    assert report.per_op[0]["in"] == len(good_ids)  # the op saw only the good samples
    assert (report.n_in, report.kept, report.rejected) == (len(good_ids) + len(cases) + 3, len(good_ids), len(cases) + 3)
    assert report.n_in == report.kept_from_input + report.filtered + report.rejected
    assert [s["id"] for s in _read(out / "samples.jsonl")] == good_ids  # both token spellings are good samples
    _assert_rejections(_read(out / "rejected.jsonl"), cases)


def test_robust_ingest_applies_to_data_apply_and_rounds(dataset, tmp_path):
    from bettersynth.cli.main import main

    jsonl, cases, good_ids = dataset
    recipe = tmp_path / "words.yaml"
    recipe.write_text(yaml.safe_dump(WORDS_ONLY))
    assert main(["data", "apply", "--recipe", str(recipe), "--input", str(jsonl.parent), "--out", str(tmp_path / "apply"),
                 "--model-root", str(tmp_path)]) == 0
    _assert_rejections(_read(tmp_path / "apply" / "rejected.jsonl"), cases)

    rounds = Recipe.from_dict({"rounds": [{"name": "a", "process": WORDS_ONLY["process"]},
                                          {"name": "b", "where": {"stat": "num_words", "min": 0}, "process": WORDS_ONLY["process"]}]})
    report = run_rounds(rounds, jsonl, jsonl.parent, tmp_path / "rounds", num_workers=0)
    assert (report.staged, report.n_out) == (len(good_ids), len(good_ids))
    assert report.staging_rejected == len(cases) + 3 and report.rounds[0].n_in == len(good_ids)
    _assert_rejections(_read(tmp_path / "rounds" / "rejected.jsonl"), cases)


def test_robust_ingest_rejections_name_their_line_in_process(dataset, tmp_path):
    from bettersynth.cli.main import main

    jsonl, cases, good_ids = dataset
    out = tmp_path / "out"
    config = tmp_path / "dj.yaml"
    config.write_text(yaml.safe_dump({"dataset_path": str(jsonl), "export_path": str(out / "clean.jsonl"), "np": 2, **WORDS_ONLY}))
    assert main(["process", "--config", str(config)]) == 0
    rejected = _read(out / "clean_rejected.jsonl")
    lines = jsonl.read_text().splitlines()
    for row in rejected:
        assert row["file"] == "samples.jsonl" and json.loads(lines[row["line"] - 1])["id"] == row["id"]
    _assert_rejections(rejected, cases, reason_key="reason")
    assert [r["id"] for r in _read(out / "clean.jsonl")] == good_ids
    report = json.loads((out / "clean_report.json").read_text())
    assert report["n_in"] == len(lines) == report["kept_from_input"] + report["filtered"] + report["rejected"]


def test_robust_check_image_accepts_a_linked_root_not_links_under_it(tmp_path):
    write_png(tmp_path / "real" / "a.png", seed=0)
    os.symlink(tmp_path / "real", tmp_path / "root")  # the dataset root itself may be a link
    assert check_image(tmp_path / "root", "a.png") == (tmp_path / "real" / "a.png").resolve()
    assert check_image(tmp_path / "root", "./a.png") == (tmp_path / "real" / "a.png").resolve()
    os.symlink(tmp_path / "real" / "a.png", tmp_path / "real" / "b.png")
    with pytest.raises(ImageError, match=r"image .*b\.png' is a symlink"):
        check_image(tmp_path / "root", "b.png")
    for rel, phrase in [("", "empty image path"), ("/etc/passwd", "is absolute"), ("C:\\x.png", "is absolute")]:
        with pytest.raises(ImageError, match=phrase):
            check_image(tmp_path / "root", rel)
