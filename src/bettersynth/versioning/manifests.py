"""Manifest variants under DVC: the manifest folder and the store's new shard files, nothing else.

Why: ``version_variant`` copies a whole folder and DVC hashes and pushes every
file in it, images included, for every variant. A manifest variant is a small
folder (``data/manifests/<name>``) over a content-addressed shard store; when
the store lives in the project (``data/store``), each shard file is tracked
once, by its own pointer, the first time a variant adds it. A child that
shares its parent's images therefore adds, hashes and pushes only its
manifest and the shards holding its new images. A store on object storage
(``s3://...``) is already durable: then DVC versions the manifest alone.

This module knows paths only; what a manifest holds is ``bettersynth.data``'s.

Example::

    version = version_manifest(Path("."), "recap", shard_files=[Path("data/store/shards/ab12.tar"), ...])
    pull_manifest(Path("."), "recap")              # after a clean clone: the manifest folder comes back
    pull_files(Path("."), [Path("data/store/shards/ab12.tar")])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bettersynth.versioning.dvc import (
    describe_remote,
    ensure_dvc_project,
    list_variants,
    open_repo,
    pointer_hash,
    transfer,
)

MANIFESTS_DIR = Path("data") / "manifests"
STORE_DIR = Path("data") / "store"  # the project's own shard store


@dataclass(frozen=True)
class ManifestVersion:
    name: str
    path: Path  # the manifest folder inside the DVC project
    dataset_hash: str  # DVC's hash of the manifest folder ("<md5>.dir")
    pointer: Path
    remote_url: str
    tracked: tuple[Path, ...]  # the store files this version added to DVC


def manifest_path(root: Path, name: str) -> Path:
    return Path(root).resolve() / MANIFESTS_DIR / name


def manifest_pointer(root: Path, reference: str) -> Path | None:
    """The pointer of a manifest variant named ``reference``, or naming the hash ``reference``."""
    folder = Path(root) / MANIFESTS_DIR
    named = folder / f"{reference}.dvc"
    if named.is_file():
        return named
    for pointer in sorted(folder.glob("*.dvc")):
        if pointer_hash(pointer) in (reference, reference + ".dir"):
            return pointer
    return None


def version_manifest(root: Path, name: str, shard_files: Sequence[Path] = (),
                     lineage: dict[str, Any] | None = None) -> ManifestVersion:
    """``dvc add`` + push ``data/manifests/<name>`` (already written) and the given new store files.

    ``shard_files`` are files of the project's store not tracked yet (a shard
    and its index); files already tracked are skipped, so passing a parent's
    shards costs nothing. ``lineage`` goes into the manifest pointer's ``meta``.
    """
    root = Path(root).resolve()
    remote_url = ensure_dvc_project(root)
    folder = manifest_path(root, name)
    if not folder.is_dir():
        raise ValueError(f"{folder}: no manifest folder to version")
    new = [Path(f).resolve() for f in shard_files if not Path(str(f) + ".dvc").is_file()]
    for path in new:
        if root not in path.parents:
            raise ValueError(f"{path}: a store file outside the DVC project {root} cannot be tracked by it")
    repo = open_repo(root)
    repo.add([str(folder), *map(str, new)])
    pointer = folder.with_name(folder.name + ".dvc")
    document = yaml.safe_load(pointer.read_text())
    if lineage:
        document["meta"] = lineage
        pointer.write_text(yaml.safe_dump(document, sort_keys=False))
    transfer(repo, "push", [pointer, *(Path(str(p) + ".dvc") for p in new)], describe_remote(root))
    return ManifestVersion(name, folder, document["outs"][0]["md5"], pointer, remote_url, tuple(new))


def pull_manifest(root: Path, reference: str) -> tuple[Path, str]:
    """Bring a manifest folder back from the remote by variant name or hash: (folder, its name)."""
    root = Path(root).resolve()
    ensure_dvc_project(root, create_remote=False)
    pointer = manifest_pointer(root, reference)
    if pointer is None:
        raise ValueError(f"{reference!r}: not a manifest variant under {MANIFESTS_DIR}")
    transfer(open_repo(root), "pull", [pointer], describe_remote(root))
    return pointer.with_suffix(""), pointer.stem


def pull_files(root: Path, files: Sequence[Path]) -> int:
    """Pull those of ``files`` (store files with pointers) that this checkout lacks; returns how many."""
    root = Path(root).resolve()
    missing = [Path(str(f) + ".dvc") for f in files if not Path(f).is_file()]
    absent = [p for p in missing if not p.is_file()]
    if absent:
        raise ValueError(f"{absent[0].with_suffix('')}: not in the store and no DVC pointer for it ({len(absent)} files)")
    if missing:
        transfer(open_repo(root), "pull", missing, describe_remote(root))
    return len(missing)


def list_manifests(root: Path) -> list[dict[str, Any]]:
    """Every manifest variant with its hash and lineage ``meta``."""
    return list_variants(root, MANIFESTS_DIR)
