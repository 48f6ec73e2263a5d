"""DVC versioning against a real local remote: add, push, and restore by hash into a clean project."""

from __future__ import annotations

import shutil

from bettersynth.versioning import directory_hash, list_variants, restore_variant, version_variant


def _variant(tmp_path):
    source = tmp_path / "variant"
    (source / "images").mkdir(parents=True)
    (source / "samples.jsonl").write_text('{"id": "1", "text": "x", "images": ["images/a.png"]}\n')
    (source / "images" / "a.png").write_bytes(b"\x89PNG fake bytes")
    return source


def test_version_then_restore_in_a_fresh_clone(tmp_path):
    project = tmp_path / "project"
    version = version_variant(project, _variant(tmp_path), "v1", lineage={"recipe_hash": "abc", "kept": 1})
    assert version.dataset_hash.endswith(".dir")
    assert list_variants(project) == [{"name": "v1", "dataset_hash": version.dataset_hash, "meta": {"recipe_hash": "abc", "kept": 1}}]

    # A second machine: same remote, no cache, no pointer file, only the hash from MLflow.
    clone = tmp_path / "clone"
    clone.mkdir()
    shutil.copytree(project / ".dvc", clone / ".dvc", ignore=shutil.ignore_patterns("cache", "tmp"))
    (clone / ".dvc" / "config").write_text(
        (project / ".dvc" / "config").read_text().replace("../.dvc-remote", str(project / ".dvc-remote"))
    )
    restored = restore_variant(clone, version.dataset_hash, name="v1")
    assert (restored / "images" / "a.png").read_bytes() == b"\x89PNG fake bytes"
    assert directory_hash(clone, restored) == version.dataset_hash


def test_restore_refuses_tampered_bytes(tmp_path):
    project = tmp_path / "project"
    version = version_variant(project, _variant(tmp_path), "v1")
    (version.path / "samples.jsonl").unlink()
    (version.path / "samples.jsonl").write_text("tampered\n")
    restored = restore_variant(project, version.dataset_hash)  # pull --force brings the true bytes back
    assert directory_hash(project, restored) == version.dataset_hash
