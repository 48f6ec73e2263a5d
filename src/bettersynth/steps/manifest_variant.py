"""Variants as manifests: version a folder or a child edit, and check one out as today's folder.

Why: this is where the format (``bettersynth.data``: manifests over a shard
store) meets DVC (``bettersynth.versioning.manifests``). A variant folder is
ingested once into the store; a child is derived from its parent's manifest
and stores only its new images; ``checkout`` gives back the folder of images
and ``samples.jsonl`` that ``data checkout`` of a copied variant gives, so
every command and recipe reads it unchanged.

The store is the project's ``data/store`` unless ``$BETTERSYNTH_STORE`` (or
``store_url``) names another, e.g. ``s3://team/store``, with
``$BETTERSYNTH_STORE_ENDPOINT_URL`` for an S3-compatible server.

Example::

    version_folder(Path("."), Path("out/filtered"), "sim-0.28", lineage={"recipe_hash": ...})
    version_child(Path("."), "sim-0.28", "recap", replace={...})
    checkout(Path("."), "recap")   # data/variants/recap/{samples.jsonl, images/...}
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bettersynth.data.manifest import read_info
from bettersynth.data.manifest_edit import Change, derive
from bettersynth.data.manifest_export import export_folder
from bettersynth.data.manifest_ingest import ingest_folder
from bettersynth.data.shards import INDEX_SUFFIX, ShardStore
from bettersynth.versioning.dvc import VARIANTS_DIR, pointer_hash
from bettersynth.versioning.manifests import (
    STORE_DIR,
    ManifestVersion,
    manifest_path,
    manifest_pointer,
    pull_files,
    pull_manifest,
    version_manifest,
)

STORE_ENV = "BETTERSYNTH_STORE"
STORE_ENDPOINT_ENV = "BETTERSYNTH_STORE_ENDPOINT_URL"


def project_store(root: Path, store_url: str | None = None) -> tuple[ShardStore, str]:
    """The store and how manifests name it: relative to the project for its own ``data/store``."""
    url = store_url or os.environ.get(STORE_ENV) or str(STORE_DIR)
    endpoint = os.environ.get(STORE_ENDPOINT_ENV) or None
    local = "://" not in url and not os.path.isabs(url)
    return ShardStore(str(Path(root).resolve() / url) if local else url, endpoint), url


def _store_for(root: Path, named: str) -> ShardStore:
    return project_store(root, named)[0]


def _store_files(root: Path, store: ShardStore, shards: Iterable[str]) -> list[Path]:
    """The local files of ``shards`` when the store is inside the project (DVC tracks those), else none."""
    if "://" in store.url or Path(root).resolve() not in Path(store.root).resolve().parents:
        return []
    return [Path(store.shard_path(s + suffix)) for s in shards for suffix in ("", INDEX_SUFFIX)]


def _fresh(folder: Path) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    return folder


def version_folder(root: Path, folder: Path, name: str, lineage: dict[str, Any] | None = None,
                   store_url: str | None = None) -> ManifestVersion:
    """Ingest ``folder`` (images hashed once, stored once) and version its manifest and new shards."""
    store, named = project_store(root, store_url)
    target = _fresh(manifest_path(root, name))
    result = ingest_folder(Path(folder), store, str(target), store.endpoint_url, {"store": named, "name": name})
    return version_manifest(root, name, _store_files(root, store, result.new_shards), lineage)


def version_child(root: Path, parent: str, name: str, replace: Mapping[str, Change] | None = None,
                  drop: Iterable[str] = (), add: Iterable[Change] = (), lineage: dict[str, Any] | None = None) -> ManifestVersion:
    """A child of the manifest variant ``parent``: only its changed rows' new images enter the store."""
    parent_dir = manifest_path(root, parent)
    store = _store_for(root, read_info(str(parent_dir))["store"])
    target = _fresh(manifest_path(root, name))
    result = derive(str(parent_dir), str(target), store, replace, drop, add, {"name": name}, store.endpoint_url)
    return version_manifest(root, name, _store_files(root, store, result.new_shards), {"parent": parent, **(lineage or {})})


def checkout(root: Path, reference: str, name: str | None = None) -> tuple[Path, str]:
    """Restore the manifest variant ``reference`` (name or hash) as ``data/variants/<name>``: (folder, hash)."""
    folder, stem = pull_manifest(root, reference)
    info = read_info(str(folder))
    store = _store_for(root, info["store"])
    pull_files(root, _store_files(root, store, info["shards"]))
    out = export_folder(str(folder), Path(root).resolve() / VARIANTS_DIR / (name or stem), store, store.endpoint_url)
    return out, pointer_hash(manifest_pointer(root, stem))
