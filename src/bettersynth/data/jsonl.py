"""Read and write Data-Juicer jsonl, keeping bad lines as rejections instead of crashing.

Why: one broken line in a scraped dataset must cost that line only, with the
file, line number and reason recorded, never the whole read.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from bettersynth.data.sample import Sample, SampleError


@dataclass
class BadLine:
    """A line that could not become a sample: where it is and why."""

    where: str
    sample_id: str | None
    error: str


def read_jsonl(path: str | Path) -> Iterator[Sample | BadLine]:
    """Yield a ``Sample`` per good line and a ``BadLine`` per bad one, in file order."""
    path = Path(path)
    seen: set[str] = set()
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{path.name}:{number}"
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
                sample = Sample.from_json(record, where)
            except UnicodeDecodeError as exc:
                yield BadLine(where, None, f"{where}: not UTF-8 ({exc.reason})")
                continue
            except json.JSONDecodeError as exc:
                yield BadLine(where, None, f"{where}: not JSON ({exc.msg})")
                continue
            except SampleError as exc:
                sample_id = record.get("id") if isinstance(record, dict) else None
                yield BadLine(where, None if sample_id is None else str(sample_id), str(exc))
                continue
            if sample.id in seen:
                yield BadLine(where, sample.id, f"{where}: duplicate id {sample.id!r}")
                continue
            seen.add(sample.id)
            yield sample


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


def write_samples(path: str | Path, samples: Iterable[Sample]) -> int:
    return write_jsonl(path, (s.to_json() for s in samples))
