"""A step's output folder, written chunk by chunk so that a killed run resumes where it stopped.

Why: preempted nodes are normal. Outputs grow as ``.resume/<name>`` files
and only reach their final names by an atomic rename once the whole input is
done, so a reader never sees a partial ``samples.jsonl``. After every chunk
the partial files are flushed to disk and ``.resume/checkpoint.json`` records
their lengths, the input position and the counters; a restarted run cuts the
files back to those lengths (dropping whatever a killed chunk half wrote) and
goes on from there, so it ends byte-identical to a run never interrupted.
``report.json`` is written last: it marks the folder complete, and carries
the fingerprint of what produced it, so a second run does no work. A disk
that fills ends the step in one line naming ENOSPC and the folder
(``StepFiles.reporting_full_disk``); the completed chunks stay, and the
rerun goes on from them once there is room.

Layout while running::

    out/.resume/checkpoint.json   chunks done, input position, sizes, counters, op states
    out/.resume/samples.jsonl     (and outcomes.jsonl, rejected.jsonl) grown chunk by chunk
    out/.resume/ids.sqlite        every id produced so far (duplicate check)
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from bettersynth.data.file_hashes import file_sha256
from bettersynth.data.jsonl import Position, append_jsonl

log = logging.getLogger(__name__)

RESUME_DIR = ".resume"
OUTPUTS = ("samples.jsonl", "outcomes.jsonl", "rejected.jsonl")
REPORT = "report.json"
CHECKPOINT = "checkpoint.json"
STEP_RECORD = "step.json"  # a finished data step's summary in its output folder: counts, fingerprint, its MLflow run
FULL_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def is_full_disk(exc: BaseException) -> bool:
    """True for a write refused for want of space: ENOSPC/EDQUOT, or SQLite's "database or disk is full"."""
    if isinstance(exc, OSError):
        return exc.errno in FULL_DISK_ERRNOS
    return isinstance(exc, sqlite3.Error) and (getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
                                               or "disk is full" in str(exc))


def require_input(input_jsonl: Path) -> None:
    """Fail, naming the path, unless ``input_jsonl`` exists (``input folder not found: <folder>`` first)."""
    input_jsonl = Path(input_jsonl)
    if not input_jsonl.parent.is_dir():
        raise FileNotFoundError(f"input folder not found: {input_jsonl.parent}")
    if not input_jsonl.is_file():
        raise FileNotFoundError(f"input folder {input_jsonl.parent} has no {input_jsonl.name}")


def run_fingerprint(recipe_hash: str, input_jsonl: Path, chunk_size: int, key: str = "") -> str:
    """What decides a run's output: recipe, input bytes, chunking and the caller's ``key``
    (e.g. the captioned fraction and seed). Paths are left out so it is the same on every machine."""
    require_input(input_jsonl)
    parts = [recipe_hash, file_sha256(input_jsonl), str(chunk_size), key]
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()


@dataclass
class Checkpoint:
    fingerprint: str
    chunks: int = 0  # chunks completed
    position: Position = field(default_factory=Position)  # where the next chunk starts in the input
    sizes: dict[str, int] = field(default_factory=dict)  # bytes of each partial output after ``chunks``
    tally: dict[str, Any] = field(default_factory=dict)  # the runner's counters after ``chunks``
    op_states: dict[str, Any] = field(default_factory=dict)  # state_dict() of ops that carry state, by position
    report: dict[str, Any] | None = None  # set once every chunk is done: the run is renaming its outputs

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Checkpoint:
        return cls(**{**data, "position": Position(**data["position"])})


class StepFiles:
    """Partial outputs and their checkpoint under ``out_dir/.resume``."""

    def __init__(self, out_dir: Path, fingerprint: str):
        self.out_dir = Path(out_dir)
        self.work = self.out_dir / RESUME_DIR
        self.fingerprint = fingerprint
        self._handles: dict[str, BinaryIO] = {}
        self.committed = 0  # chunks durable on disk (what a rerun starts from)

    @contextlib.contextmanager
    def reporting_full_disk(self) -> Iterator[None]:
        """A full disk inside the block raises one ``OSError(ENOSPC)`` line naming the folder and what was kept."""
        try:
            yield
        except (OSError, sqlite3.Error) as exc:
            if not is_full_disk(exc):
                raise
            free = shutil.disk_usage(self.out_dir).free if self.out_dir.exists() else 0
            raise OSError(errno.ENOSPC, f"step output {self.out_dir} not written: no space left on device (ENOSPC, "
                          f"{free} bytes free); {self.committed} completed chunk(s) kept in {self.work}; free space "
                          "and rerun to resume") from exc

    def finished_report(self) -> dict[str, Any] | None:
        """The saved report when the folder is complete for this same fingerprint."""
        try:
            report = json.loads((self.out_dir / REPORT).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if report.get("fingerprint") != self.fingerprint or not all((self.out_dir / n).is_file() for n in OUTPUTS):
            return None
        return report

    def open(self, resume: bool) -> Checkpoint:
        """Start fresh, or pick up a killed run of the same fingerprint at its last completed chunk."""
        checkpoint = self._load() if resume else None
        if checkpoint is None:
            if self.work.exists():
                shutil.rmtree(self.work)
            (self.out_dir / REPORT).unlink(missing_ok=True)  # the old folder is no longer complete
            self.work.mkdir(parents=True)
            checkpoint = Checkpoint(self.fingerprint, sizes=dict.fromkeys(OUTPUTS, 0))
        elif checkpoint.report is None:
            log.info("%s: resuming after %d completed chunk(s) (input line %d)", self.out_dir, checkpoint.chunks, checkpoint.position.line)
        self.committed = checkpoint.chunks
        if checkpoint.report is None:
            for name in OUTPUTS:
                handle = (self.work / name).open("ab")
                handle.truncate(checkpoint.sizes[name])  # drop what a killed chunk half wrote
                handle.seek(checkpoint.sizes[name])
                self._handles[name] = handle
        return checkpoint

    def _load(self) -> Checkpoint | None:
        try:
            data = json.loads((self.work / CHECKPOINT).read_text(encoding="utf-8"))
            checkpoint = Checkpoint.from_json(data)
        except (OSError, ValueError, TypeError, KeyError):
            return None
        if checkpoint.fingerprint != self.fingerprint:
            log.info("%s: earlier partial run had other inputs; starting over", self.out_dir)
            return None
        if checkpoint.report is None and not all((self.work / n).is_file() for n in OUTPUTS):
            return None
        return checkpoint

    def append(self, name: str, records: Iterable[dict[str, Any]]) -> None:
        append_jsonl(self._handles[name], records)

    def commit(self, checkpoint: Checkpoint) -> None:
        """Make the chunk durable: flush and sync the partial files, then record their sizes."""
        for name, handle in self._handles.items():
            handle.flush()
            os.fsync(handle.fileno())
            checkpoint.sizes[name] = os.fstat(handle.fileno()).st_size
        self._write_checkpoint(checkpoint)
        self.committed = checkpoint.chunks

    def finish(self, checkpoint: Checkpoint) -> None:
        """Give the outputs their final names, then write ``report.json`` (the completion mark)."""
        if self._handles:
            self.commit(checkpoint)  # with the report set: a kill from here on only repeats the renames
        self.close()
        for name in OUTPUTS:
            if (self.work / name).exists():
                os.replace(self.work / name, self.out_dir / name)
        _atomic_write(self.out_dir / REPORT, json.dumps(checkpoint.report, indent=2) + "\n")
        shutil.rmtree(self.work, ignore_errors=True)

    def close(self) -> None:
        """Close the partial files; what a failed close loses lies past the last commit, which a rerun cuts anyway."""
        for handle in self._handles.values():
            with contextlib.suppress(OSError):
                handle.close()
        self._handles.clear()

    def _write_checkpoint(self, checkpoint: Checkpoint) -> None:
        # keys keep their order: the report is rebuilt from these counters on resume
        _atomic_write(self.work / CHECKPOINT, json.dumps(asdict(checkpoint)))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".partial")
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError:
        tmp.unlink(missing_ok=True)  # give the space back; ``path`` keeps its last whole version
        raise
    os.replace(tmp, path)
