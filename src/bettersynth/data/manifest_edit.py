"""A child variant as a new manifest over its parent's blobs: only what changed is hashed and stored.

Why: a variant that re-captions 2 % of the samples and regenerates their
images must cost those 2 %. The parent's rows stream through unchanged (their
blob references are copied, the blobs are not read); a replaced sample keeps
its place, a dropped one leaves, added ones come last, and only the bytes of
the new images go through the store (which keeps any it already holds).

Example::

    derive("data/manifests/seed", "data/manifests/recap", store,
           replace={"7": Change({"id": "7", "text": ..., "images": ["imgs/7b.jpg"]}, {"imgs/7b.jpg": jpeg})},
           drop={"9"}, info={"name": "recap"})
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from bettersynth.core.sample import Sample, SampleError
from bettersynth.data.manifest import ManifestWriter, image_refs, iter_rows, read_files, read_info
from bettersynth.data.shards import BlobRef, ShardStore, ShardWriter


@dataclass(frozen=True)
class Change:
    """A sample's new record and the bytes of those of its images that are new (path -> bytes)."""

    record: dict[str, Any]
    images: Mapping[str, bytes] = field(default_factory=dict)


@dataclass
class Derived:
    info: dict[str, Any]
    new_shards: list[str]
    added: int  # blobs written
    reused: int  # new images the store already held


def _row(change: Change, put: ShardWriter, old: Mapping[str, BlobRef | None], where: str) -> tuple[dict, list]:
    try:
        Sample.from_json(change.record, where)
    except SampleError as exc:
        raise ValueError(str(exc)) from None
    refs = []
    for rel in change.record.get("images", []):
        if rel in change.images:
            refs.append(put.put(change.images[rel], PurePosixPath(rel).suffix))
        elif rel in old:
            refs.append(old[rel])
        else:
            raise ValueError(f"{where}: image {rel!r} is neither new (no bytes given) nor one the sample had")
    return change.record, refs


def derive(parent_url: str, child_url: str, store: ShardStore, replace: Mapping[str, Change] | None = None,
           drop: Iterable[str] = (), add: Iterable[Change] = (), info: dict[str, Any] | None = None,
           endpoint_url: str | None = None) -> Derived:
    """Write ``child_url``: the parent's rows with ``replace`` / ``drop`` applied and ``add`` appended."""
    replace, drop, add = dict(replace or {}), set(drop), list(add)
    parent = read_info(parent_url, endpoint_url)
    unseen = (set(replace) | drop)
    child_info = {"store": parent["store"], "parent": parent.get("name", parent_url), **(info or {})}
    with store.writer() as put, ManifestWriter(child_url, endpoint_url, child_info) as out:
        for row in iter_rows(parent_url, endpoint_url):
            sample_id = row["id"]
            if sample_id in drop:
                unseen.discard(sample_id)
                continue
            if sample_id in replace:
                unseen.discard(sample_id)
                old = dict(zip(row["images"], image_refs(row), strict=True))
                out.add_sample(*_row(replace[sample_id], put, old, f"{child_url}: sample {sample_id!r}"))
                continue
            out.add_row(row)
        if unseen:
            raise ValueError(f"{parent_url}: no sample {sorted(unseen)[0]!r} to replace or drop ({len(unseen)} ids unknown)")
        for change in add:
            out.add_sample(*_row(change, put, {}, f"{child_url}: new sample {change.record.get('id')!r}"))
        jsonl = "records" if replace or drop or add else parent["samples_jsonl"]
        for file in read_files(parent_url, endpoint_url):
            if not (file["path"] == "samples.jsonl" and jsonl == "records"):  # the rows are the truth now
                out.add_file(file["path"], BlobRef(file["sha256"], file["shard"], file["offset"], file["size"]))
        out.info["samples_jsonl"] = jsonl
    return Derived(out.info, put.new_shards, put.added, put.reused)

