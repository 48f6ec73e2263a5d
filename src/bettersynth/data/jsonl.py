"""Read and write Data-Juicer jsonl, keeping bad lines as rejections instead of crashing.

Why: one broken line in a scraped dataset must cost that line only, with the
file, line number and reason recorded, never the whole read. Reading streams
line by line (a resumed run starts at a byte offset), and a line longer than
``MAX_LINE_BYTES`` is rejected without being held in memory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from bettersynth.core.sample import Sample, SampleError

MAX_LINE_BYTES = 16 * 1024 * 1024  # a longer line is rejected unread (a 1 MB caption is fine)
_SKIP_BLOCK = 1 << 20


@dataclass
class BadLine:
    """A line that could not become a sample: where it is and why."""

    where: str
    sample_id: str | None
    error: str


@dataclass(frozen=True)
class Position:
    """Where reading stopped: the byte offset of the next line and the number of the last one read."""

    offset: int = 0
    line: int = 0


def read_jsonl(path: str | Path) -> Iterator[Sample | BadLine]:
    """Yield a ``Sample`` per good line and a ``BadLine`` per bad one, in file order."""
    for item, _ in iter_jsonl(path):
        yield item


def iter_jsonl(
    path: str | Path,
    start: Position = Position(),
    is_new_id: Callable[[str], bool] | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> Iterator[tuple[Sample | BadLine, Position]]:
    """Like ``read_jsonl`` from ``start``, pairing each item with the position after its line.

    ``is_new_id(id)`` records an id and says whether it is new (a repeated id
    is a ``BadLine``); by default ids are remembered in memory for this read.
    A resumed read passes a registry that already knows the ids read before.
    """
    path = Path(path)
    if is_new_id is None:
        seen: set[str] = set()

        def is_new_id(sample_id: str) -> bool:
            if sample_id in seen:
                return False
            seen.add(sample_id)
            return True

    for value, position in iter_json_values(path, start, max_line_bytes):
        if isinstance(value, BadLine):
            yield value, position
        else:
            yield to_sample(value, f"{path.name}:{position.line}", is_new_id), position


def iter_json_values(
    path: str | Path, start: Position = Position(), max_line_bytes: int = MAX_LINE_BYTES,
) -> Iterator[tuple[Any, Position]]:
    """Each non-blank line's JSON value (or a ``BadLine`` saying why it has none), with the position after it."""
    path = Path(path)
    with path.open("rb") as handle:
        handle.seek(start.offset)
        number = start.line
        while True:
            raw = handle.readline(max_line_bytes + 1)
            if not raw:
                return
            number += 1
            where = f"{path.name}:{number}"
            if len(raw) > max_line_bytes:
                _skip_rest_of_line(handle, raw)
                yield BadLine(where, None, f"{where}: line longer than {max_line_bytes} bytes"), Position(handle.tell(), number)
                continue
            if not raw.strip():
                continue
            yield _decode(raw, where), Position(handle.tell(), number)


def _skip_rest_of_line(handle: BinaryIO, head: bytes) -> None:
    if head.endswith(b"\n"):
        return
    while block := handle.readline(_SKIP_BLOCK):
        if block.endswith(b"\n"):
            return


def _decode(raw: bytes, where: str) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return BadLine(where, None, f"{where}: not UTF-8 ({exc.reason})")
    except json.JSONDecodeError as exc:
        return BadLine(where, None, f"{where}: not JSON ({exc.msg})")
    except RecursionError:
        return BadLine(where, None, f"{where}: not JSON (nested too deeply)")


def to_sample(record: Any, where: str, is_new_id: Callable[[str], bool]) -> Sample | BadLine:
    """One decoded record as a sample, or a ``BadLine`` (not a sample, or a repeated id)."""
    try:
        sample = Sample.from_json(record, where)
    except SampleError as exc:
        sample_id = record.get("id") if isinstance(record, dict) else None
        return BadLine(where, None if sample_id is None else str(sample_id), str(exc))
    if not is_new_id(sample.id):
        return BadLine(where, sample.id, f"{where}: duplicate id {sample.id!r}")
    return sample


def write_jsonl(path: str | Path, records: Iterable[dict]) -> int:
    """Write records atomically (temp file, then rename); returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    count = 0
    with tmp.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    os.replace(tmp, path)
    return count


def append_jsonl(handle: BinaryIO, records: Iterable[dict]) -> int:
    """Append records to an open binary file (a step's ``.partial`` output); returns the count."""
    count = 0
    for record in records:
        handle.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
        count += 1
    return count


def write_samples(path: str | Path, samples: Iterable[Sample]) -> int:
    return write_jsonl(path, (s.to_json() for s in samples))
