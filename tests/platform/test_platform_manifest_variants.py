"""Manifest variants against today's copied variants, on the same data, through real DVC remotes.

The folder a manifest checkout restores must be the folder a copied variant
restores (same files, same bytes, same DVC directory hash), and a child must
add only its manifest and the shards of its new images.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from bettersynth.cli.main import main
from bettersynth.data.manifest_edit import Change
from bettersynth.steps.manifest_variant import checkout, version_child, version_folder
from bettersynth.versioning.dvc import directory_hash, version_variant
from bettersynth.versioning.manifests import list_manifests


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8 + seed % 5, 8), (seed * 40 % 256, 10, 200)).save(buffer, "PNG")
    return buffer.getvalue()


def _variant(root: Path) -> Path:
    """A variant folder with what real ones hold: shared and missing images, odd ids, side files."""
    (root / "images" / "sub").mkdir(parents=True)
    for i in range(4):
        (root / "images" / f"{i}.png").write_bytes(_png(i))
    (root / "images" / "sub" / "dup.png").write_bytes(_png(0))  # the same bytes under another name
    (root / "images" / "unused.png").write_bytes(_png(9))  # in the folder, named by no sample
    lines = [
        {"id": "a", "text": "<__dj__image> a red bus <|__dj__eoc|>", "images": ["images/0.png"]},
        {"id": 7, "text": "<__dj__image> numeric id", "images": ["./images/1.png"], "meta": {"provenance": [{"op": "x"}]}},
        {"text": "<image>\nkeys in another order", "id": "c", "images": ["images/2.png"], "__dj__stats__": {"s": 0.5}},
        {"id": "d", "text": "<__dj__image> shares an image", "images": ["images/0.png"], "source": "extra key"},
        {"id": "e", "text": "<__dj__image> same bytes, other path", "images": ["images/sub/dup.png"]},
        {"id": "f", "text": "<__dj__image> no such file", "images": ["images/missing.png"]},
        {"id": "g", "text": "ünïcode <__dj__image>", "images": ["images/3.png"]},
    ]
    (root / "samples.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines), encoding="utf-8")
    (root / "rejected.jsonl").write_text('{"id": "z", "op": "x", "error": "bad"}\n')
    (root / "report").mkdir()
    (root / "report" / "counts.json").write_text("{}")
    return root


def _clone(project: Path, clone: Path) -> Path:
    """A second machine: the project's pointers (as git would carry them), no cache, no data."""
    shutil.copytree(project, clone, ignore=shutil.ignore_patterns("cache", "tmp", ".dvc-remote", "*.tar", "*.parquet",
                                                                   "variants", "manifest.json"))
    config = clone / ".dvc" / "config"
    config.write_text(config.read_text().replace("../.dvc-remote", str(project / ".dvc-remote")))
    return clone


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_manifest_checkout_restores_the_folder_a_copied_variant_restores(tmp_path):
    source = _variant(tmp_path / "source")
    copied = version_variant(tmp_path / "copy", source, "v1")
    version = version_folder(tmp_path / "manifest", source, "v1", lineage={"recipe_hash": "abc"})
    assert list_manifests(tmp_path / "manifest")[0]["meta"] == {"recipe_hash": "abc"}
    assert not (tmp_path / "manifest" / "data" / "variants").exists()  # nothing copied into the working tree

    clone = _clone(tmp_path / "manifest", tmp_path / "clone")
    assert not list((clone / "data" / "store" / "shards").glob("*.tar"))
    restored, dataset_hash = checkout(clone, "v1")
    assert dataset_hash == version.dataset_hash
    assert restored == clone / "data" / "variants" / "v1"
    assert _tree(restored) == _tree(copied.path)
    assert directory_hash(clone, restored) == copied.dataset_hash  # what DVC restores today, by DVC's own hash


def test_a_child_adds_its_manifest_and_the_shards_of_its_new_images_only(tmp_path):
    project = tmp_path / "project"
    source = _variant(tmp_path / "source")
    parent = version_folder(project, source, "parent")
    remote = project / ".dvc-remote"
    before = {p for p in remote.rglob("*") if p.is_file()}
    new_image = _png(42)
    record = {"id": "a", "text": "<__dj__image> a re-captioned bus <|__dj__eoc|>", "images": ["images/a2.png"]}
    child = version_child(project, "parent", "child", replace={"a": Change(record, {"images/a2.png": new_image})},
                          drop={"g"}, lineage={"op": "recaption"})
    pushed = {p for p in remote.rglob("*") if p.is_file()} - before
    # samples.parquet, manifest.json and the folder's .dir listing (files.parquet is the parent's, byte for
    # byte), one new shard and its index: no image of the parent again
    assert len(pushed) == 5 and len(child.tracked) == 2
    index = next(p for p in child.tracked if p.name.endswith(".index.parquet"))
    assert pq.read_table(index)["sha256"].to_pylist() == [hashlib.sha256(new_image).hexdigest()]
    assert child.dataset_hash != parent.dataset_hash

    # the same child made the copy way: the folder with the edit applied
    expected = tmp_path / "expected"
    shutil.copytree(source, expected)
    lines = [json.loads(l) for l in (expected / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    kept = [record if r["id"] == "a" else r for r in lines if r["id"] != "g"]
    (expected / "samples.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept), encoding="utf-8")
    (expected / "images" / "a2.png").write_bytes(new_image)
    (expected / "images" / "3.png").unlink()  # only "g" named it
    restored, _ = checkout(_clone(project, tmp_path / "clone"), "child")
    assert _tree(restored) == _tree(expected)


def test_data_commands_version_and_check_out_a_manifest_variant(tmp_path, capsys):
    project = tmp_path / "project"
    assert main(["data", "version-manifest", str(_variant(tmp_path / "source")), "--name", "v1", "--workspace", str(project)]) == 0
    assert "as manifest v1" in capsys.readouterr().out
    version = list_manifests(project)[0]
    assert main(["data", "checkout", "v1", "--workspace", str(project)]) == 0
    assert f"restored {version['dataset_hash']} (manifest v1)" in capsys.readouterr().out
    assert (project / "data" / "variants" / "v1" / "samples.jsonl").is_file()
    assert main(["data", "checkout", version["dataset_hash"], "--workspace", str(project), "--name", "again"]) == 0
    assert _tree(project / "data" / "variants" / "again") == _tree(project / "data" / "variants" / "v1")


def test_a_bad_line_is_refused_by_file_and_line(tmp_path):
    source = _variant(tmp_path / "source")
    with (source / "samples.jsonl").open("a") as handle:
        handle.write('{"id": "h", "text": "<__dj__image> two tokens <__dj__image>", "images": ["images/0.png"]}\n')
    with pytest.raises(ValueError, match=r"samples.jsonl:8: sample 'h': 2 image tokens but 1 images"):
        version_folder(tmp_path / "project", source, "v1")
