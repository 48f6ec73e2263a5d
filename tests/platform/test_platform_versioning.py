"""DVC versioning against a real local remote: add, push, and restore by hash into a clean project."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bettersynth.versioning.dvc import directory_hash, list_variants, restore_variant, version_variant


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


def test_images_shared_with_the_parent_are_stored_once(tmp_path):
    from bettersynth.versioning.dvc import cache_objects

    project = tmp_path / "project"
    parent = _variant(tmp_path)
    (parent / "images" / "b.png").write_bytes(b"second image")
    version_variant(project, parent, "parent")
    child = tmp_path / "child"
    shutil.copytree(parent, child)
    (child / "images" / "c.png").write_bytes(b"a new image")
    (child / "samples.jsonl").write_text('{"id": "1", "text": "y", "images": ["images/a.png"]}\n')
    version_variant(project, child, "child", lineage={"parent": "parent"})
    # unique contents: a.png, b.png, c.png and the two different samples.jsonl
    assert len(cache_objects(project)) == 5
    remote = [p for p in (project / ".dvc-remote").rglob("*") if p.is_file() and not p.name.endswith(".dir")]
    assert len(remote) == 5


def test_checkout_by_variant_name_or_hash(tmp_path):
    from bettersynth.versioning.dvc import checkout

    project = tmp_path / "project"
    version = version_variant(project, _variant(tmp_path), "v1")
    shutil.rmtree(version.path)
    path, resolved = checkout(project, "v1")
    assert (resolved.how, resolved.dataset_hash, path) == ("variant", version.dataset_hash, version.path)
    _, resolved = checkout(project, version.dataset_hash)
    assert resolved.how == "hash"
    with pytest.raises(ValueError, match="not a variant"):
        checkout(project, "no-such-variant")


@pytest.mark.parametrize("remote", ["missing", "empty", "another"])
def test_checkout_from_a_clone_whose_local_remote_lacks_the_variant_says_how_to_fix_it(tmp_path, remote, capsys):
    """A second clone's .dvc/config names a local remote that is not there, is empty, or holds other bytes:
    one line on stderr naming it and the ``dvc remote modify --local`` that points at the right one."""
    from bettersynth.cli.main import main
    from bettersynth.versioning.dvc import RemoteMissing, ensure_dvc_project

    project = tmp_path / "project"
    version = version_variant(project, _variant(tmp_path), "v1")
    clone, elsewhere = tmp_path / "clone", tmp_path / "elsewhere"
    if remote == "another":
        other = tmp_path / "other"
        (other / "samples.jsonl").parent.mkdir(parents=True)
        (other / "samples.jsonl").write_text('{"id": "2", "text": "other"}\n')
        version_variant(tmp_path / "other-project", other, "o", lineage=None)
        elsewhere = tmp_path / "other-project" / ".dvc-remote"
    elif remote == "empty":
        elsewhere.mkdir()
    ensure_dvc_project(clone, remote_url=str(elsewhere), create_remote=False)

    assert main(["data", "checkout", version.dataset_hash, "--workspace", str(clone)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    state = {"missing": "does not exist", "empty": "is empty", "another": f"does not hold {version.dataset_hash}"}[remote]
    assert f"DVC remote 'local' at {elsewhere} {state}" in err
    assert "dvc remote modify --local local url" in err
    with pytest.raises(RemoteMissing):
        main(["-v", "data", "checkout", version.dataset_hash, "--workspace", str(clone)])

    # the fix it names works: point the clone at the first machine's remote, then check out
    command = err[err.index("dvc remote modify"):].split(" url ")[0].split() + ["url", str(project / ".dvc-remote")]
    subprocess.run([str(Path(sys.executable).parent / command[0]), *command[1:]], cwd=clone, check=True, capture_output=True)
    assert main(["data", "checkout", version.dataset_hash, "--workspace", str(clone), "--name", "v1"]) == 0
    assert directory_hash(clone, clone / "data" / "variants" / "v1") == version.dataset_hash


def test_the_version_step_hashes_the_data_not_the_data_steps_record(tmp_path):
    """Two runs of a data step on the same input differ only in ``step.json`` (it names the step's MLflow
    run): the version step leaves it out, so both get one DVC hash and the variant holds only data."""
    import json

    import mlflow

    from bettersynth.recipes.step_files import STEP_RECORD
    from bettersynth.steps.version import version_dataset

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        hashes = []
        for attempt in ("run-a", "run-b"):
            source = _variant(tmp_path / attempt)
            (source / STEP_RECORD).write_text(json.dumps({"kept": 1, "mlflow_run_id": attempt}))
            hashes.append(version_dataset(source, tmp_path / f"project-{attempt}", "v1", {"kept": 1})["dataset_hash"])
            assert not (tmp_path / f"project-{attempt}" / "data" / "variants" / "v1" / STEP_RECORD).exists()
        assert hashes[0] == hashes[1]
        copied = [version_variant(tmp_path / f"whole-{a}", tmp_path / a / "variant", "v1").dataset_hash for a in ("run-a", "run-b")]
        assert copied[0] != copied[1]  # with the record in, the same data would get two hashes
    finally:
        mlflow.set_tracking_uri(None)
