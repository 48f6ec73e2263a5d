"""Sharding for the production pipeline: plan shards, cut one, merge the processed shards back.

Why: scoring and captioning 500k samples on one GPU takes hours; cut into
contiguous blocks of lines, each block runs on its own GPU pod and the merge
puts the kept samples back in source order, so a sharded run writes the same
variant as an unsharded one. Blocks are cut on raw lines, not parsed samples:
a broken line travels to its shard and is rejected (and accounted for) by the
filter there, exactly as in a whole run.

The plan carries a fingerprint of the input bytes and of the recipes, and
travels as the ParallelFor items; KFP puts parameter values into its cache
keys, so a cached shard is reused only for the same data and op config.

Example::

    plan = plan_shards(Path("/mnt/data/seed"), 8, [Path("filter.yaml"), Path("caption.yaml")])
    cut_shard(Path("/mnt/data/seed"), plan[3], Path("shard-3"))
    merge_shards([Path("caption-0"), ...], Path("/mnt/data/seed"), Path("merged"))
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any, Iterator, Literal, TextIO

from bettersynth.core.images import ImageError, normalise_rel, resolve_image
from bettersynth.data.file_hashes import FileHashes
from bettersynth.recipes.recipe import Recipe

log = logging.getLogger(__name__)

SAMPLES = "samples.jsonl"
FingerprintMode = Literal["content", "stat"]  # hash image bytes, or only their names, sizes and mtimes (huge sets)
REPORT_COUNTS = ("n_in", "kept", "kept_from_input", "filtered", "rejected", "added", "added_kept")


def _lines(path: Path) -> Iterator[bytes]:
    """Non-empty raw lines, as the jsonl reader counts them."""
    with path.open("rb") as handle:
        for raw in handle:
            if raw.strip():
                yield raw if raw.endswith(b"\n") else raw + b"\n"


def _image_paths(raw: bytes) -> list[str]:
    """The image paths a line names, or none when it is not a well-formed sample (the filter rejects it)."""
    try:
        record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return []
    images = record.get("images") if isinstance(record, dict) else None
    return [p for p in images if isinstance(p, str)] if isinstance(images, list) else []


def fingerprint(dataset_dir: Path, recipes: list[Path], mode: FingerprintMode = "content",
                hashes: FileHashes | None = None) -> tuple[str, str]:
    """(data hash, config hash): sha256 over the jsonl and the images it names; over the recipes' normalised ops.

    In ``content`` mode each image enters as its sha256, taken from ``hashes``
    when that has seen the file unchanged (nothing known is read again).
    """
    dataset_dir = Path(dataset_dir)
    hashes = hashes or FileHashes(None)
    data = hashlib.sha256()
    seen: set[str] = set()
    for raw in _lines(dataset_dir / SAMPLES):
        data.update(raw)
        for rel in _image_paths(raw):
            if rel in seen:
                continue
            seen.add(rel)
            try:
                path = resolve_image(dataset_dir, rel)
            except ImageError:
                continue  # the filter rejects the sample; the line itself is in the hash
            data.update(rel.encode("utf-8") + b"\0")
            if not path.is_file():
                data.update(b"missing\0")
            elif mode == "stat":
                stat = path.stat()
                data.update(f"{stat.st_size}:{stat.st_mtime_ns}\0".encode())
            else:
                data.update(hashes.digest(path).encode("ascii") + b"\0")
    config = hashlib.sha256("\n".join(Recipe.load(r).hash() for r in recipes).encode("ascii"))
    return data.hexdigest(), config.hexdigest()


def plan_shards(dataset_dir: Path, num_shards: int, recipes: list[Path], mode: FingerprintMode = "content",
                hash_cache: Path | None = None) -> list[dict[str, Any]]:
    """Contiguous blocks of lines, one dict per shard: index, start, stop, data_hash, config_hash.

    Fewer shards than asked when there are fewer lines; at least one (maybe empty).
    ``hash_cache`` (a SQLite file, see ``FileHashes``) makes planning
    incremental: an image seen unchanged by an earlier plan is not read again.
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    dataset_dir = Path(dataset_dir)
    if not (dataset_dir / SAMPLES).is_file():
        raise ValueError(f"{dataset_dir / SAMPLES}: no such file (the dataset must be a folder with {SAMPLES})")
    n_lines = sum(1 for _ in _lines(dataset_dir / SAMPLES))
    count = max(1, min(num_shards, n_lines))
    with FileHashes(hash_cache) as hashes:
        data_hash, config_hash = fingerprint(dataset_dir, recipes, mode, hashes)
    if mode == "content":
        log.info("%s: %d images hashed, %d known unchanged", dataset_dir, hashes.misses, hashes.hits)
    bounds = [n_lines * i // count for i in range(count + 1)]
    plan = [
        {"index": i, "start": bounds[i], "stop": bounds[i + 1], "data_hash": data_hash, "config_hash": config_hash}
        for i in range(count)
    ]
    log.info("%s: %d lines in %d shards, data %s, config %s", dataset_dir, n_lines, count, data_hash[:12], config_hash[:12])
    return plan


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        return
    try:
        os.link(source, target)
    except OSError:  # other filesystem, or links not allowed
        shutil.copy2(source, target)


def cut_shard(dataset_dir: Path, shard: dict[str, Any], out_dir: Path) -> int:
    """Write lines ``[start, stop)`` and the images they name (same relative paths) to ``out_dir``; returns the line count.

    Images that are missing or escape the dataset folder are not copied: the
    filter rejects their samples with the reason, as it would unsharded.
    """
    dataset_dir, out_dir = Path(dataset_dir), Path(out_dir)
    shard = {**shard, **{key: _integer(shard, key) for key in ("index", "start", "stop")}}
    out_dir.mkdir(parents=True, exist_ok=True)
    start, stop = shard["start"], shard["stop"]
    lines = []
    for number, raw in enumerate(_lines(dataset_dir / SAMPLES)):
        if number >= stop:
            break
        if number >= start:
            lines.append(raw)
    for raw in lines:
        for rel in _image_paths(raw):
            try:
                source = resolve_image(dataset_dir, rel)
            except ImageError:
                continue
            if source.is_file():
                _link(source, out_dir / normalise_rel(rel))
    tmp = out_dir / (SAMPLES + ".partial")
    tmp.write_bytes(b"".join(lines))
    os.replace(tmp, out_dir / SAMPLES)
    (out_dir / "shard.json").write_text(json.dumps(shard, indent=2) + "\n", encoding="utf-8")
    return len(lines)


def _integer(shard: dict[str, Any], key: str) -> int:
    """An integer field of a shard spec; KFP passes JSON numbers through as floats (2.0)."""
    value = shard.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < 0:
        raise ValueError(f"shard spec: {key!r} must be a non-negative integer, got {value!r}")
    return int(value)


def _records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(line, record) of a jsonl file one at a time (none when it is missing): merging never holds a file."""
    if path.is_file():
        for raw in _lines(path):
            line = raw.decode("utf-8")
            yield line, json.loads(line)


def _is_input(record: dict[str, Any]) -> bool:
    """An outcome of a sample read from the input (not created by a mapper, not a line the reader refused)."""
    return "source_id" not in record and "line" not in record and record.get("id") is not None


class _MergeIndex:
    """Source positions and the ids merged so far, in a temporary sqlite file: memory stays flat in the row count."""

    def __init__(self, path: Path, source_dir: Path):
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("CREATE TABLE positions (id TEXT PRIMARY KEY, line INTEGER NOT NULL)")
        self._db.execute("CREATE TABLE seen (id TEXT PRIMARY KEY)")
        self._db.execute("CREATE TABLE shard (id TEXT)")
        self._db.execute("BEGIN")  # one transaction for the life of this scratch file: nothing here must outlive it
        self._db.executemany("INSERT OR IGNORE INTO positions VALUES (?, ?)", _source_ids(source_dir))

    def last_position(self, shard: Path) -> int:
        """The latest source line among the ids a shard accounts for (first occurrences), -1 for none."""
        self._db.execute("DELETE FROM shard")
        self._db.executemany("INSERT INTO shard VALUES (?)", ((str(r.get("source_id", r.get("id"))),)
                                                           for _, r in _records(shard / "outcomes.jsonl")))
        (line,) = self._db.execute("SELECT MAX(p.line) FROM shard s JOIN positions p ON p.id = s.id").fetchone()
        return -1 if line is None else line

    def first_time(self, sample_id: str) -> bool:
        """Record ``sample_id`` as merged; False when an earlier record already had it."""
        return self._db.execute("INSERT OR IGNORE INTO seen VALUES (?)", (sample_id,)).rowcount == 1

    def close(self) -> None:
        self._db.close()


def _source_ids(dataset_dir: Path) -> Iterator[tuple[str, int]]:
    for number, raw in enumerate(_lines(Path(dataset_dir) / SAMPLES)):
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(record, dict) and "id" in record:
            yield str(record["id"]), number


def merge_shards(shard_dirs: list[Path], source_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Merge processed shards (each a ``run_recipe`` output folder) into one, in source order.

    Shards are ordered by the latest source line among the ids they account
    for (first occurrences; an id repeated from an earlier shard maps lower,
    never higher), so the merge does not depend on the order KFP collects
    them. Counts are summed and checked; returns the merged report.

    Every file is streamed a record at a time and the ids live in a temporary
    sqlite file, so memory does not grow with the number of samples.
    """
    out_dir = Path(out_dir)
    shards = [Path(s) for s in shard_dirs]
    reports = {}
    for shard in shards:
        report_path = shard / "report.json"
        if not report_path.is_file():
            raise ValueError(f"{report_path}: missing; a shard must be the output folder of a filter or caption step")
        reports[shard] = json.loads(report_path.read_text(encoding="utf-8"))
    recipe_hashes = {report.get("recipe_hash", "") for report in reports.values()}
    if len(recipe_hashes) > 1:
        raise ValueError(f"shards were processed with different recipes: {sorted(recipe_hashes)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    totals = dict.fromkeys(REPORT_COUNTS, 0)
    per_op: dict[int, dict[str, Any]] = {}
    written = 0
    with tempfile.TemporaryDirectory(prefix="merge-index-") as scratch:
        index = _MergeIndex(Path(scratch) / "index.sqlite", Path(source_dir))
        try:
            ordered = sorted(shards, key=index.last_position)
            outputs = {name: out_dir / (name + ".partial") for name in (SAMPLES, "outcomes.jsonl", "rejected.jsonl")}
            with contextlib.ExitStack() as files:
                handles = {name: files.enter_context(path.open("w", encoding="utf-8")) for name, path in outputs.items()}
                for shard in ordered:
                    report = reports[shard]
                    for key in REPORT_COUNTS:
                        totals[key] += int(report[key])
                    for op in report.get("per_op", []):
                        merged = per_op.setdefault(op["step"], {"step": op["step"], "op": op["op"]})
                        for key, value in op.items():
                            if key not in ("step", "op"):
                                merged[key] = merged.get(key, 0) + value
                    written += _merge_shard(shard, index, handles, totals, out_dir)
        finally:
            index.close()
    if totals["kept"] != written:
        raise RuntimeError(f"accounting error: shard reports keep {totals['kept']} samples, their files hold {written}")
    for name, path in outputs.items():
        os.replace(path, out_dir / name)
    merged = {**totals, "per_op": [per_op[k] for k in sorted(per_op)], "recipe_hash": recipe_hashes.pop() if recipe_hashes else "",
              "shards": len(ordered)}
    (out_dir / "report.json").write_text(json.dumps(merged, indent=2) + "\n", encoding="utf-8")
    return merged


def _merge_shard(shard: Path, index: _MergeIndex, handles: dict[str, TextIO], totals: dict[str, int], out_dir: Path) -> int:
    """Append one shard's records, rejecting input samples whose id an earlier record had, as an unsharded read would.

    Samples a mapper created from such a duplicate are dropped with it. Edits
    the running totals in place; returns the samples written.
    """
    duplicates: dict[int, str] = {}  # outcome position -> id; small: only the repeated ids
    for number, (_, record) in enumerate(_records(shard / "outcomes.jsonl")):
        if _is_input(record) and not index.first_time(str(record["id"])):
            duplicates[number] = record["id"]
    errors = {sample_id: f"{shard.name}: duplicate id {sample_id!r} (also in an earlier shard)"
              for sample_id in duplicates.values()}
    repeated, children = set(errors), set()
    for number, (line, record) in enumerate(_records(shard / "outcomes.jsonl")):
        if record.get("source_id") in repeated:
            children.add(record["id"])
            totals["added"] -= 1
            continue
        if number in duplicates:
            status = record["status"]
            totals["kept_from_input" if status == "kept" else status] -= 1
            totals["rejected"] += 1
            record.update(status="rejected", op="reader", error=errors[record["id"]])
            line = json.dumps(record, ensure_ascii=False) + "\n"
        handles["outcomes.jsonl"].write(line)
    handles["rejected.jsonl"].writelines(line for line, _ in _records(shard / "rejected.jsonl"))
    for sample_id, error in errors.items():
        handles["rejected.jsonl"].write(json.dumps({"id": sample_id, "op": "reader", "error": error}) + "\n")
    written = 0
    for line, record in _records(shard / SAMPLES):
        if record["id"] in repeated or record["id"] in children:
            totals["kept"] -= 1
            totals["added_kept"] -= record["id"] in children
            continue
        for rel in record.get("images", []):
            _link(resolve_image(shard, rel), out_dir / normalise_rel(rel))
        handles[SAMPLES].write(line)
        written += 1
    return written
