"""Manifests back out: the variant folder (``samples.jsonl`` + images), LLaVA json, WebDataset tars.

Why: every command and recipe reads a folder of images and a jsonl; a
manifest must give that folder back exactly as a copy of it would have been,
so ``export_folder`` of an ingested folder is byte for byte the folder (the
same DVC directory hash). Rows stream a batch at a time and each shard is
read in order, so memory does not grow with the dataset.

Example::

    export_folder("data/manifests/sim-0.28", Path("data/variants/sim-0.28"))
    export_llava_json("data/manifests/sim-0.28", Path("out/llava"))   # pretrain.json + images/
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bettersynth.core.images import normalise_rel, resolve_image
from bettersynth.core.sample import Sample, clean_text
from bettersynth.data.llava import ROLE_PATTERN, dj_to_llava, write_llava_json
from bettersynth.data.manifest import image_refs, iter_rows, read_files, read_info, rebuilt_line
from bettersynth.data.shards import BlobRef, ShardStore

SAMPLES_JSONL = "samples.jsonl"


def store_of(manifest_url: str, store: ShardStore | None = None, endpoint_url: str | None = None) -> ShardStore:
    """The store a manifest points into (``manifest.json``'s ``store``), unless one is given."""
    return store or ShardStore(read_info(manifest_url, endpoint_url)["store"], endpoint_url)


def _write(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


def _image_target(out: Path, rel: str) -> Path | None:
    try:
        return resolve_image(out, normalise_rel(rel)) if not os.path.isabs(rel) else None
    except ValueError:
        return None


def export_folder(manifest_url: str, out: Path, store: ShardStore | None = None, endpoint_url: str | None = None) -> Path:
    """Write the manifest's folder into ``out`` (replaced whole, through ``<out>.partial``); returns ``out``."""
    info = read_info(manifest_url, endpoint_url)
    store = store_of(manifest_url, store, endpoint_url)
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    written: set[str] = set()
    handle = (partial / SAMPLES_JSONL).open("w", encoding="utf-8") if info["samples_jsonl"] == "records" else None
    try:
        for row, wanted in _rows_with_images(manifest_url, endpoint_url, store, written):
            if handle is not None:
                handle.write(rebuilt_line(row) + "\n")
            for rel, data in wanted:
                target = _image_target(partial, rel)
                if target is not None:
                    _write(target, data)
    finally:
        if handle is not None:
            handle.close()
    files = read_files(manifest_url, endpoint_url)
    refs = [BlobRef(f["sha256"], f["shard"], f["offset"], f["size"]) for f in files]
    for file, (_, data) in zip(files, store.read_many(refs), strict=True):
        _write(partial / file["path"], data)
    if out.exists():
        shutil.rmtree(out)
    os.replace(partial, out)
    return out


def _rows_with_images(manifest_url: str, endpoint_url: str | None, store: ShardStore,
                      written: set[str]) -> Iterator[tuple[dict[str, Any], list[tuple[str, bytes]]]]:
    """Each row with the (path, bytes) of its images not yet written (a path shared by rows comes once)."""
    for row in iter_rows(manifest_url, endpoint_url):
        wanted = []
        for rel, ref in zip(row["images"], image_refs(row), strict=True):
            if ref is None:
                continue
            key = normalise_rel(rel)
            if key in written:
                continue
            written.add(key)
            wanted.append((rel, ref))
        data = [(rel, blob) for (rel, _), (_, blob) in zip(wanted, store.read_many(r for _, r in wanted), strict=True)]
        yield row, data


def samples(manifest_url: str, endpoint_url: str | None = None) -> Iterator[Sample]:
    """The manifest's rows as samples (ids, text, images, meta, stats as a jsonl read gives them)."""
    for row in iter_rows(manifest_url, endpoint_url):
        yield Sample.from_json(json.loads(rebuilt_line(row)), f"{manifest_url}: sample {row['id']!r}")


def export_llava_json(manifest_url: str, out: Path, store: ShardStore | None = None, endpoint_url: str | None = None,
                      name: str = "llava.json") -> Path:
    """``out/<name>`` in LLaVA's json (Data-Juicer's ``dj_to_llava``) and the images beside it.

    A row's ``[[role]]`` turns become its turns; a row ingested from LLaVA whose
    text an op replaced by a caption gets its original question back (its kept
    ``conversations``); any other caption sample becomes the plain pretraining record."""
    store = store_of(manifest_url, store, endpoint_url)
    out = Path(out)
    records, written = [], set()
    for row, wanted in _rows_with_images(manifest_url, endpoint_url, store, written):
        sample = Sample.from_json(json.loads(rebuilt_line(row)), f"{manifest_url}: sample {row['id']!r}")
        originals = None
        if row["conversations"] and ROLE_PATTERN.search(sample.text) is None:  # a re-captioned turn: its question back
            originals = {sample.id: {"id": sample.json_id_value(), "conversations": json.loads(row["conversations"])}}
        records.append(dj_to_llava(sample, originals=originals, where=f"{manifest_url}: sample {row['id']!r}"))
        for rel, data in wanted:
            target = _image_target(out, rel)
            if target is not None:
                _write(target, data)
    write_llava_json(out / name, records)
    return out / name


def export_wds(manifest_url: str, out: Path, store: ShardStore | None = None, endpoint_url: str | None = None,
               samples_per_shard: int = 10_000) -> list[Path]:
    """WebDataset tars ``out/%06d.tar``: per sample ``<n>.<ext>`` (its image), ``<n>.txt`` (the caption)
    and ``<n>.json`` (the whole record, so ``ingest_wds`` gives the same rows back)."""
    from webdataset import ShardWriter

    store = store_of(manifest_url, store, endpoint_url)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with ShardWriter(str(out / "%06d.tar"), maxcount=samples_per_shard, verbose=0, encoder=False, mtime=0) as sink:
        for index, row in enumerate(iter_rows(manifest_url, endpoint_url)):
            refs = image_refs(row)
            if len(refs) != 1 or refs[0] is None:
                raise ValueError(f"{manifest_url}: sample {row['id']!r}: a WebDataset sample carries one stored image, "
                                 f"this one has {sum(r is not None for r in refs)} of {len(refs)}")
            record = json.loads(rebuilt_line(row))
            ext = (Path(row["images"][0]).suffix.lstrip(".").lower() or "bin")
            sink.write({"__key__": f"{index:09d}", ext: store.read(refs[0]), "txt": clean_text(row["text"]).encode(),
                        "json": json.dumps(record, ensure_ascii=False).encode()})
    return sorted(out.glob("*.tar"))
