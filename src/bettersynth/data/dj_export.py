"""Write kept samples as ``dj-process`` exports them: one file or shards, stats beside, stats kept on request.

Why: a Data-Juicer user's scripts and notebooks read ``export_path`` and
``<name>_stats.jsonl``; they must find the files, names and fields that
Data-Juicer's exporter (``data_juicer/core/exporter.py``) writes:

* ``export_path`` (``.jsonl``: a line per sample; ``.json``: one JSON list);
  with ``export_shard_size`` > 0 the samples are split, in order, into
  ``int(bytes / export_shard_size) + 1`` contiguous shards (at most one per
  sample) named ``<name>-<i>-of-<n>.<suffix>``, numbers zero-padded to one
  digit more than ``n`` has (``bytes``: the JSON lines' size here, where
  Data-Juicer measures its Arrow table);
* ``<export name without suffix>_stats.jsonl``: ``{"__dj__stats__": ...}``
  (and ``__dj__meta__`` when samples carry it) per exported sample, whenever
  the samples have stats;
* ``__dj__stats__`` (and ``__dj__meta__``) stay in the exported samples only
  with ``keep_stats_in_res_ds``; the deduplicators' hashes never sit in the
  stats there, but under ``__dj__hash`` / ``__dj__simhash`` /
  ``__dj__imagehash`` / ``__dj__minhash`` with ``keep_hashes_in_res_ds``.

Image paths are written relative to the export's folder (Data-Juicer reads
relative paths against the dataset file's folder).

Example::

    result = write_export(lambda: read_records(variant / "samples.jsonl"), Path("out/result.jsonl"), "jsonl",
                          images_prefix="result_variant", shard_size=0, keep_stats=False, keep_hashes=False)
    result.files, result.stats_file
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bettersynth.core.sample import STATS_KEY

DJ_META_KEY = "__dj__meta__"  # Data-Juicer's Fields.meta
# The deduplicators' hashes: this platform's stat key -> Data-Juicer's HashKeys column.
HASH_KEYS = {"text_md5": "__dj__hash", "simhash": "__dj__simhash", "image_hash": "__dj__imagehash",
             "minhash_bands": "__dj__minhash"}


@dataclass
class ExportResult:
    files: list[Path] = field(default_factory=list)  # the sample files (export_path, or its shards)
    stats_file: Path | None = None
    n: int = 0


def stats_path(export_path: Path, suffix: str) -> Path:
    """Data-Juicer's stats file for ``export_path``: ``.<suffix>`` replaced by ``_stats.jsonl``."""
    name = export_path.name
    stem = name[: -len(suffix) - 1] if name.lower().endswith(f".{suffix}") else name
    return export_path.with_name(f"{stem}_stats.jsonl")


def shard_names(export_path: Path, suffix: str, n_shards: int) -> list[Path]:
    """``<name>-<i>-of-<n>.<suffix>`` beside ``export_path`` (``name``: its file name up to the first dot)."""
    base = export_path.name.split(".")[0]
    width = len(str(n_shards)) + 1
    return [export_path.with_name(f"{base}-{i:0{width}d}-of-{n_shards:0{width}d}.{suffix}") for i in range(n_shards)]


def shard_bounds(n: int, n_shards: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, end)`` of each shard, the first ``n % n_shards`` one sample longer."""
    size, extra = divmod(n, n_shards)
    bounds, start = [], 0
    for i in range(n_shards):
        end = start + size + (1 if i < extra else 0)
        bounds.append((start, end))
        start = end
    return bounds


def exported(record: dict[str, Any], images_prefix: str, keep_stats: bool, keep_hashes: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """One variant record as an exported sample, and its stats-file row."""
    out = dict(record)
    stats = dict(out.pop(STATS_KEY, None) or {})
    meta = out.pop(DJ_META_KEY, None)
    hashes = {HASH_KEYS[k]: stats.pop(k) for k in list(stats) if k in HASH_KEYS}
    if "images" in out:
        out["images"] = [f"{images_prefix}/{p}" if images_prefix and not os.path.isabs(p) else p for p in out["images"]]
    if keep_stats:
        out[STATS_KEY] = stats
        if meta is not None:
            out[DJ_META_KEY] = meta
    if keep_hashes:
        out.update(hashes)
    row: dict[str, Any] = {STATS_KEY: stats}
    if meta is not None:
        row[DJ_META_KEY] = meta
    return out, row


def write_export(
    records: Callable[[], Iterable[dict[str, Any]]], export_path: Path, suffix: str, images_prefix: str = "",
    shard_size: int = 0, keep_stats: bool = False, keep_hashes: bool = False, with_stats: bool = True,
) -> ExportResult:
    """Write ``records()`` (called twice when sharding) as Data-Juicer's export of ``export_path``.

    ``with_stats`` writes the stats file even when no sample has stats (the
    recipe has a filter: Data-Juicer's dataset then has the stats column)."""
    if suffix not in ("jsonl", "json"):
        raise ValueError(f"{export_path}: only jsonl and json exports are written, not {suffix!r}")
    export_path = Path(export_path)
    export_path.parent.mkdir(parents=True, exist_ok=True)
    result = ExportResult()
    if shard_size > 0:
        sizes = [len(_line(exported(r, images_prefix, keep_stats, keep_hashes)[0])) for r in records()]
        n_shards = max(1, min(int(sum(sizes) / shard_size) + 1, len(sizes)))
        targets = list(zip(shard_names(export_path, suffix, n_shards), shard_bounds(len(sizes), n_shards)))
    else:
        targets = [(export_path, (0, None))]
    any_stats = False
    stats_tmp = _partial(stats_path(export_path, suffix))
    writers = iter(targets)
    with stats_tmp.open("w", encoding="utf-8") as stats_out:
        target, (_, end) = next(writers)
        handle = _Writer(target, suffix)
        for index, record in enumerate(records()):
            while end is not None and index >= end:
                result.files.append(handle.close())
                target, (_, end) = next(writers)
                handle = _Writer(target, suffix)
            sample, row = exported(record, images_prefix, keep_stats, keep_hashes)
            handle.write(sample)
            stats_out.write(_line(row))
            any_stats = any_stats or bool(row[STATS_KEY]) or DJ_META_KEY in row
            result.n += 1
        result.files.append(handle.close())
        for target, _ in writers:  # shards left empty (none when the sizes were counted)
            result.files.append(_Writer(target, suffix).close())
    if with_stats or any_stats:
        result.stats_file = stats_path(export_path, suffix)
        os.replace(stats_tmp, result.stats_file)
    else:
        stats_tmp.unlink()
        stats_path(export_path, suffix).unlink(missing_ok=True)
    return result


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON records of a jsonl this platform wrote (one object per line)."""
    with Path(path).open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


class _Writer:
    """One export file, written under a temporary name and renamed when closed."""

    def __init__(self, target: Path, suffix: str) -> None:
        self.target, self.suffix, self.count = target, suffix, 0
        self.tmp = _partial(target)
        self.handle = self.tmp.open("w", encoding="utf-8")
        if suffix == "json":
            self.handle.write("[")

    def write(self, record: dict[str, Any]) -> None:
        if self.suffix == "json":
            self.handle.write(("," if self.count else "") + "\n" + json.dumps(record, ensure_ascii=False))
        else:
            self.handle.write(_line(record))
        self.count += 1

    def close(self) -> Path:
        if self.suffix == "json":
            self.handle.write("\n]\n")
        self.handle.close()
        os.replace(self.tmp, self.target)
        return self.target


def _partial(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def _line(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False) + "\n"
