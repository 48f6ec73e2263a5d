"""Dataset variants versioned with DVC: add, push, and restore by content hash.

Why: a model is only traceable if the exact bytes it was trained on can be
named (the DVC directory hash) and brought back on any machine from the remote.

Example::

    version = version_variant(Path("."), Path("out/filtered"), "sim-0.28", lineage={...})
    restore_variant(Path("."), version.dataset_hash)   # after a clean clone
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

VARIANTS_DIR = Path("data") / "variants"
DEFAULT_REMOTE = "local"
DEFAULT_REMOTE_DIR = ".dvc-remote"


@dataclass(frozen=True)
class VariantVersion:
    name: str
    path: Path  # the variant's directory inside the DVC project
    dataset_hash: str  # DVC's directory hash, e.g. "3f2a...c1.dir"
    pointer: Path  # the .dvc file that names those bytes
    remote_url: str


def _repo(root: Path):
    from dvc.repo import Repo

    return Repo(str(root))


def ensure_dvc_project(root: Path, remote_url: str | None = None) -> str:
    """Make ``root`` a DVC project with a default remote; returns the remote's URL.

    A git work tree gets a normal DVC project; any other directory gets
    ``--no-scm`` (e.g. a scratch workspace or a pod's volume). Without a
    remote configured, a local directory remote under ``root`` is added.
    """
    from dvc.repo import Repo

    root = Path(root).resolve()
    if not (root / ".dvc").is_dir():
        Repo.init(str(root), no_scm=not (root / ".git").exists())
    repo = _repo(root)
    with repo.config.edit() as config:
        config.setdefault("core", {})["analytics"] = False  # air-gapped: never phone home
        remotes = config.setdefault("remote", {})
        if remote_url is not None or not remotes:
            # DVC reads a relative path against the working directory and stores it relative
            # to .dvc/, so the project stays movable and no machine path is written
            remotes[DEFAULT_REMOTE] = {"url": remote_url or os.path.relpath(root / DEFAULT_REMOTE_DIR)}
            config.setdefault("core", {})["remote"] = DEFAULT_REMOTE
    name = repo.config["core"].get("remote", DEFAULT_REMOTE)
    url = repo.config["remote"][name]["url"]
    if "://" not in url:
        Path(url).mkdir(parents=True, exist_ok=True)
    return url


def version_variant(
    root: Path, source: Path, name: str, lineage: dict[str, Any] | None = None
) -> VariantVersion:
    """Copy ``source`` to ``data/variants/<name>`` in the DVC project, ``dvc add`` and push it.

    ``lineage`` (parent hash, recipe hash, op counts) is stored in the pointer's
    ``meta``, so ``bettersynth data log`` can show where each variant came from.
    """
    root = Path(root).resolve()
    remote_url = ensure_dvc_project(root)
    target = root / VARIANTS_DIR / name
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, target)
    repo = _repo(root)
    repo.add(str(target))
    pointer = target.with_name(target.name + ".dvc")
    document = yaml.safe_load(pointer.read_text())
    if lineage:
        document["meta"] = lineage
        pointer.write_text(yaml.safe_dump(document, sort_keys=False))
    repo.push(targets=[str(pointer)])
    return VariantVersion(name, target, document["outs"][0]["md5"], pointer, remote_url)


def pointer_hash(pointer: Path) -> str:
    """The dataset hash a ``.dvc`` pointer file names."""
    return yaml.safe_load(Path(pointer).read_text())["outs"][0]["md5"]


def find_pointer(root: Path, dataset_hash: str) -> Path | None:
    """The .dvc file under ``data/variants`` that names ``dataset_hash``, if any."""
    for pointer in sorted((Path(root) / VARIANTS_DIR).glob("*.dvc")):
        if pointer_hash(pointer) in (dataset_hash, dataset_hash + ".dir"):
            return pointer
    return None


def restore_variant(root: Path, dataset_hash: str, name: str | None = None) -> Path:
    """Bring back the exact bytes of ``dataset_hash`` from the DVC remote and verify them.

    Uses an existing pointer when the project has one; otherwise writes one
    (``data/variants/<name or hash>.dvc``), as after a clean clone that only
    knows the hash from MLflow.
    """
    root = Path(root).resolve()
    ensure_dvc_project(root)
    pointer = find_pointer(root, dataset_hash)
    if pointer is None:
        md5 = dataset_hash if dataset_hash.endswith(".dir") else dataset_hash + ".dir"
        stem = name or md5.removesuffix(".dir")[:12]
        pointer = root / VARIANTS_DIR / f"{stem}.dvc"
        pointer.parent.mkdir(parents=True, exist_ok=True)
        pointer.write_text(yaml.safe_dump({"outs": [{"md5": md5, "path": stem, "hash": "md5"}]}))
    repo = _repo(root)
    repo.pull(targets=[str(pointer)], force=True)
    document = yaml.safe_load(pointer.read_text())
    path = pointer.with_suffix("")
    actual = directory_hash(root, path)
    expected = document["outs"][0]["md5"]
    if actual != expected:
        raise ValueError(f"{path}: restored bytes hash to {actual}, expected {expected}")
    return path


def directory_hash(root: Path, path: Path) -> str:
    """DVC's own hash of a directory (``<md5>.dir``), recomputed from the files on disk."""
    from dvc_data.hashfile.build import build

    repo = _repo(root)
    _, _, obj = build(repo.cache.local, str(path), repo.fs, "md5", dry_run=True)
    return obj.hash_info.value


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def list_variants(root: Path) -> list[dict[str, Any]]:
    """Every variant pointer under ``data/variants`` with its hash and lineage ``meta``."""
    rows = []
    for pointer in sorted((Path(root) / VARIANTS_DIR).glob("*.dvc")):
        document = yaml.safe_load(pointer.read_text())
        rows.append({"name": pointer.stem, "dataset_hash": document["outs"][0]["md5"], "meta": document.get("meta", {})})
    return rows
