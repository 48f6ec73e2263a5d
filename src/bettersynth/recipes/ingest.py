"""A Data-Juicer ``dataset_path`` read into one checked jsonl the runner streams, every record accounted for.

Why: ``dj-process`` reads a jsonl file, a folder of them, and (through its
``llava_to_dj`` tool) LLaVA json; the runner reads one jsonl. Staging reads
each record once, in file order, and writes the good ones as Data-Juicer
samples to ``input.jsonl``, remembering for each its file and line
(``where.jsonl``, one line per staged line) so every later verdict names the
line it came from. Records that cannot become a sample (not JSON, no text,
image tokens that disagree with the images, a LLaVA record Data-Juicer's tool
refuses, a repeated id) are rejected here, with file, line, id and reason
(``rejected.jsonl``). Image paths stay relative to the dataset root (a
file's folder, or the folder given), as Data-Juicer resolves them; an
absolute path under the root is made relative, one outside it is left for
the runner's ingestion checks to reject.

Example::

    staged = stage_dataset(Path("data/seed"), Path("out/.seed.ingest"))
    staged.jsonl, staged.root, staged.n_read, staged.n_rejected
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bettersynth.core.sample import Sample
from bettersynth.data.jsonl import BadLine, iter_json_values, to_sample
from bettersynth.data.llava import LlavaRecordError, iter_llava_json, llava_to_dj
from bettersynth.recipes.stream import IdRegistry

DEFAULT_SUFFIXES = (".jsonl", ".json")
VARIANT_FILE = "samples.jsonl"  # a folder holding it is a variant: only that file is read
SUFFIX_KEY = "__dj__suffix__"  # Data-Juicer's Fields.suffix, added by add_suffix
READER, LLAVA = "reader", "llava_to_dj"  # the ops named by rejections here: unreadable record, refused LLaVA record


@dataclass
class StagedInput:
    jsonl: Path  # the good samples, one per line
    where: Path  # one {"file", "line", "id"} line per staged line
    rejected: Path  # one {"file", "line", "id", "op", "reason"} line per record rejected here
    root: Path  # the dataset root the image paths are relative to
    files: list[str] = field(default_factory=list)  # the files read, relative to the root
    n_read: int = 0  # records read (staged + rejected)
    n_rejected: int = 0


def dataset_files(dataset_path: Path, suffixes: tuple[str, ...] = ()) -> tuple[Path, list[Path]]:
    """The dataset root and the files ``dj-process`` would read from ``dataset_path``.

    A file is read as it is; a folder holding ``samples.jsonl`` is a variant
    (only that file); any other folder gives its files with ``suffixes``
    (default ``.jsonl`` and ``.json``), recursively, in sorted order, hidden
    folders skipped."""
    path = Path(dataset_path)
    if not path.exists():
        if len(str(dataset_path).split()) > 1:
            raise ValueError(f"dataset_path {str(dataset_path)!r}: Data-Juicer's weighted list of datasets is not read here; "
                             "give one file or one folder")
        raise ValueError(f"dataset_path {str(dataset_path)!r} does not exist")
    if path.is_file():
        return path.parent, [path]
    if (path / VARIANT_FILE).is_file():
        return path, [path / VARIANT_FILE]
    wanted = tuple(s if s.startswith(".") else f".{s}" for s in suffixes) or DEFAULT_SUFFIXES
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in wanted
                   and not any(part.startswith(".") for part in p.relative_to(path).parts[:-1]))
    if not files:
        raise ValueError(f"dataset_path {str(path)!r}: no {' / '.join(wanted)} files in this folder")
    return path, files


def stage_dataset(
    dataset_path: Path, work: Path, suffixes: tuple[str, ...] = (), add_suffix: bool = False,
    only_keep_caption: bool = False,
) -> StagedInput:
    """Read ``dataset_path`` into ``work`` (``input.jsonl``, ``where.jsonl``, ``rejected.jsonl``).

    ``only_keep_caption`` converts LLaVA records as caption samples (the
    tool's option of that name); ``add_suffix`` adds ``__dj__suffix__``."""
    root, files = dataset_files(Path(dataset_path), suffixes)
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    staged = StagedInput(work / "input.jsonl", work / "where.jsonl", work / "rejected.jsonl", root,
                         [f.relative_to(root).as_posix() for f in files])
    ids_path = work / "ids.sqlite"
    ids_path.unlink(missing_ok=True)
    ids = IdRegistry(ids_path)
    partial = {p: p.with_name(p.name + ".partial") for p in (staged.jsonl, staged.where, staged.rejected)}
    try:
        with partial[staged.jsonl].open("w", encoding="utf-8") as out, partial[staged.where].open("w", encoding="utf-8") as where_out, \
                partial[staged.rejected].open("w", encoding="utf-8") as rejected_out:
            for file, name in zip(files, staged.files):
                for item, line, raw_id, op in _records(file, name, root, only_keep_caption, ids.add):
                    staged.n_read += 1
                    if isinstance(item, BadLine):
                        staged.n_rejected += 1
                        rejected_out.write(_dump({"file": name, "line": line, "id": raw_id, "op": op,
                                                  "reason": _reason(item.error, name, line)}) + "\n")
                        continue
                    if add_suffix:
                        item.extra[SUFFIX_KEY] = file.suffix.lower()
                    out.write(_dump(item.to_json()) + "\n")
                    where_out.write(_dump({"file": name, "line": line, "id": item.json_id_value()}) + "\n")
    finally:
        ids.close()
        ids_path.unlink(missing_ok=True)
    for final, tmp in partial.items():
        os.replace(tmp, final)
    return staged


def _records(file: Path, name: str, root: Path, only_keep_caption: bool, is_new_id) -> Iterator[tuple[Sample | BadLine, int, Any, str]]:
    """(sample or bad record, line, the record's id as written, the op a rejection names) for each record of one file."""
    if file.suffix.lower() == ".json":
        values = ((value, int(where.rsplit(":", 1)[1])) for value, where in iter_llava_json(file))
    else:
        values = ((value, position.line) for value, position in iter_json_values(file))
    for value, line in values:
        where = f"{name}:{line}"
        if isinstance(value, BadLine):
            yield BadLine(where, None, value.error), line, None, READER
            continue
        raw_id = value.get("id") if isinstance(value, dict) else None
        if isinstance(value, dict) and "conversations" in value and "text" not in value:
            try:
                value = llava_to_dj(value, only_keep_caption=only_keep_caption, str_id=False, where=where).to_json()
            except LlavaRecordError as exc:
                yield BadLine(where, None, str(exc)), line, raw_id, LLAVA
                continue
        item = to_sample(value, where, is_new_id)
        if isinstance(item, Sample):
            item.images = [_relative(rel, root) for rel in item.images]
        yield item, line, raw_id, READER


def _relative(rel: str, root: Path) -> str:
    """An absolute image path under the dataset root, relative to it (others unchanged)."""
    if not os.path.isabs(rel):
        return rel
    inside = os.path.relpath(os.path.abspath(rel), os.path.abspath(root))
    return rel if inside == os.pardir or inside.startswith(os.pardir + os.sep) else Path(inside).as_posix()


def _reason(error: str, name: str, line: int) -> str:
    """The reason without the ``file:line:`` it starts with (the record names those apart)."""
    for prefix in (f"{name}:{line}: ", f"{Path(name).name}:{line}: "):
        if error.startswith(prefix):
            return error[len(prefix):]
    return error


def _dump(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False)
