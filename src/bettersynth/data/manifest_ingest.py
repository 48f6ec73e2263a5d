"""Datasets into manifests: a variant folder, Data-Juicer jsonl, LLaVA json, WebDataset tars.

Why: every way a team's data arrives must end up as the same thing, a
manifest over the shard store, so that variants of it cost only what they
change. Each image is hashed once here, as it enters the store; an image the
store already holds (the same bytes under any name) is not written again.

A folder is ingested exactly: ``samples.jsonl`` becomes the rows, the images
they name become their blobs, and every other file (``outcomes.jsonl``,
reports) becomes a blob in ``files.parquet``, so that ``export_folder``
gives back the same files, byte for byte, as the folder a copy would have kept.
Empty folders are not kept (DVC does not keep them either).

Example::

    store = ShardStore("data/store")
    result = ingest_folder(Path("out/filtered"), store, "data/manifests/sim-0.28")
    result.new_shards, result.info["n_samples"]
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from bettersynth.core.images import ImageError, normalise_rel, resolve_image
from bettersynth.core.sample import Sample, SampleError, caption_text
from bettersynth.data.llava import iter_llava_json, llava_to_dj
from bettersynth.data.manifest import ManifestWriter, line_of
from bettersynth.data.shards import BlobRef, ShardStore, ShardWriter, open_fs

SAMPLES_JSONL = "samples.jsonl"
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")


@dataclass
class Ingested:
    info: dict[str, Any]  # what manifest.json says
    new_shards: list[str]  # shards this ingest added to the store (the only bytes it wrote there)
    added: int  # blobs written
    reused: int  # blobs the store already held


class _Images:
    """Blobs of the images a dataset names, relative to ``root``; each path read and hashed once."""

    def __init__(self, root: Path, put: ShardWriter) -> None:
        self.root, self.put = Path(root), put
        self.refs: dict[str, BlobRef | None] = {}

    def ref(self, rel: str) -> BlobRef | None:
        """The blob of ``rel``, or None when ``root`` holds no such file (nothing to keep)."""
        try:
            key = normalise_rel(rel)
        except (ValueError, TypeError):
            return None
        if key not in self.refs:
            self.refs[key] = self._load(rel)
        return self.refs[key]

    def _load(self, rel: str) -> BlobRef | None:
        try:
            path = resolve_image(self.root, rel)
        except ImageError:
            return None  # absolute or escaping paths name files outside the dataset: a copy keeps none either
        if not path.is_file():
            return None
        return self.put.put(path.read_bytes(), PurePosixPath(rel).suffix)


def _jsonl_rows(jsonl: Path, images: _Images, out: ManifestWriter) -> bool:
    """Rows for every line of ``jsonl``; True when the file is exactly one rebuilt line per row.

    A line that is not a sample is refused here, naming ``file:line``: a manifest holds samples only."""
    exact = True
    with jsonl.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            where = f"{jsonl.name}:{number}"
            if not raw.strip():
                exact = False
                continue
            exact = exact and raw.endswith(b"\n") and not raw.endswith(b"\r\n")
            try:
                text = raw.decode("utf-8").rstrip("\n").removesuffix("\r")
                record = json.loads(text)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ValueError(f"{where}: not a JSON line ({exc})") from None
            try:
                Sample.from_json(record, where)
            except SampleError as exc:
                raise ValueError(str(exc)) from None
            out.add_sample(record, [images.ref(p) for p in record.get("images", [])], line=text)
    return exact


def _ingest(store: ShardStore, manifest_url: str, endpoint_url: str | None, info: dict[str, Any] | None,
            fill) -> Ingested:
    with store.writer() as put, ManifestWriter(manifest_url, endpoint_url, {"store": store.url, **(info or {})}) as out:
        fill(put, out)
    return Ingested(out.info, put.new_shards, put.added, put.reused)


def ingest_folder(folder: Path, store: ShardStore, manifest_url: str, endpoint_url: str | None = None,
                  info: dict[str, Any] | None = None) -> Ingested:
    """A variant folder (``samples.jsonl``, its images, any other files) as a manifest over ``store``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder")

    def fill(put: ShardWriter, out: ManifestWriter) -> None:
        images = _Images(folder, put)
        jsonl = folder / SAMPLES_JSONL
        mode = "absent"
        if jsonl.is_file():
            mode = "records" if _jsonl_rows(jsonl, images, out) else "blob"
        consumed = {k for k, ref in images.refs.items() if ref is not None}
        for rel in _files(folder):
            if rel in consumed or (rel == SAMPLES_JSONL and mode == "records"):
                continue
            out.add_file(rel, put.put((folder / rel).read_bytes(), PurePosixPath(rel).suffix))
        out.info["samples_jsonl"] = mode

    return _ingest(store, manifest_url, endpoint_url, info, fill)


def _files(folder: Path) -> Iterator[str]:
    """Every file under ``folder`` as a sorted relative POSIX path (links followed, as a copy follows them)."""
    found = []
    for directory, _, names in os.walk(folder, followlinks=True):
        for name in names:
            path = Path(directory) / name
            if path.is_file():
                found.append(path.relative_to(folder).as_posix())
    yield from sorted(found)


def ingest_dj_jsonl(jsonl: Path, store: ShardStore, manifest_url: str, image_root: Path | None = None,
                    endpoint_url: str | None = None, info: dict[str, Any] | None = None) -> Ingested:
    """A Data-Juicer jsonl (image paths relative to ``image_root``, default its folder) as a manifest."""
    jsonl = Path(jsonl)

    def fill(put: ShardWriter, out: ManifestWriter) -> None:
        _jsonl_rows(jsonl, _Images(Path(image_root or jsonl.parent), put), out)

    return _ingest(store, manifest_url, endpoint_url, info, fill)


def ingest_llava_json(path: Path, store: ShardStore, manifest_url: str, image_root: Path | None = None,
                      endpoint_url: str | None = None, info: dict[str, Any] | None = None) -> Ingested:
    """A LLaVA json list as a manifest: each record as Data-Juicer's ``llava_to_dj`` makes it, its
    turns kept in ``conversations`` so that ``export_llava_json`` restores the original questions."""
    path = Path(path)

    def fill(put: ShardWriter, out: ManifestWriter) -> None:
        images = _Images(Path(image_root or path.parent), put)
        for record, where in iter_llava_json(path):
            sample = llava_to_dj(record, where=where)
            refs = [images.ref(p) for p in sample.images]
            if any(r is None for r in refs):
                raise ValueError(f"{where}: record {sample.id!r}: image {sample.images[0]!r} not found under {image_root or path.parent}")
            out.add_sample(sample.to_json(), refs, conversations=record["conversations"])

    return _ingest(store, manifest_url, endpoint_url, info, fill)


def iter_wds(urls: Iterable[str], endpoint_url: str | None = None) -> Iterator[dict[str, Any]]:
    """WebDataset samples (``__key__`` and one entry per extension) from tar shards on any fsspec URL."""
    from webdataset.tariterators import group_by_keys, tar_file_iterator

    for url in urls:
        fs, path = open_fs(str(url), endpoint_url)
        with fs.open(path, "rb") as handle:
            members = ({**member, "__url__": str(url)} for member in tar_file_iterator(handle))
            yield from group_by_keys(members)


def ingest_wds(urls: Iterable[str], store: ShardStore, manifest_url: str, endpoint_url: str | None = None,
               info: dict[str, Any] | None = None) -> Ingested:
    """WebDataset tars (``<key>.jpg`` + ``<key>.txt`` caption and/or ``<key>.json``) as a manifest.

    A ``json`` that is a Data-Juicer record (it has ``text``) is the sample; any
    other ``json`` (img2dataset's url, width, ...) becomes its ``meta``. The image
    path is the record's own, else ``images/<key>.<ext>``."""

    def fill(put: ShardWriter, out: ManifestWriter) -> None:
        for sample in iter_wds(urls, endpoint_url):
            key = sample["__key__"]
            where = f"{sample['__url__']}: sample {key!r}"
            ext = next((e for e in IMAGE_EXTENSIONS if e in sample), None)
            if ext is None:
                raise ValueError(f"{where}: no image member (one of {', '.join(IMAGE_EXTENSIONS)})")
            extra = json.loads(sample["json"]) if "json" in sample else None
            if isinstance(extra, dict) and isinstance(extra.get("text"), str):
                record = {"id": key, **extra}
            elif "txt" in sample:
                record = {"id": key, "text": caption_text(sample["txt"].decode("utf-8").strip())}
                if extra is not None:
                    record["meta"] = extra if isinstance(extra, dict) else {"wds": extra}
            else:
                raise ValueError(f"{where}: no caption (neither a .txt nor a .json with 'text')")
            record.setdefault("images", [f"images/{key}.{ext}"])
            if len(record["images"]) != 1:
                raise ValueError(f"{where}: a WebDataset sample carries one image, the record names {len(record['images'])}")
            try:
                Sample.from_json(record, where)
            except SampleError as exc:
                raise ValueError(str(exc)) from None
            out.add_sample(record, [put.put(sample[ext], ext)], line=line_of(record))

    return _ingest(store, manifest_url, endpoint_url, info, fill)
