"""On-disk cache of filter scores, keyed by what the score depends on and nothing else.

Why: choosing thresholds is iterative (min 0.28? 0.32?), and the model pass is
the expensive part. A score depends on the op's scoring settings, the model's
files and the sample's content (text and image bytes), never on min/max or
any/all; so those make the key, and a rerun with only a threshold changed reads
every score back instead of recomputing it. Unlike Data-Juicer's fingerprints,
the key is stable across runs, machines and dataset paths.

Example::

    cache = ScoreCache(Path("~/.cache/bettersynth/scores").expanduser())
    cache.put_many({"k1": [0.31]})
    cache.get_many(["k1", "k2"])   # {"k1": [0.31]}
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Any, Iterable

CACHE_ENV = "BETTERSYNTH_CACHE_DIR"  # overrides the default cache folder
_CHUNK = 500  # keys per SQL query (SQLite's parameter limit is 999 on old builds)


def default_cache_dir() -> Path:
    """``$BETTERSYNTH_CACHE_DIR``, else ``$XDG_CACHE_HOME/bettersynth/scores`` (``~/.cache`` by default)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "bettersynth" / "scores"


class ScoreCache:
    """A key → JSON value table in one SQLite file (safe for concurrent steps)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "scores.sqlite"
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, value TEXT NOT NULL)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60)

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        keys = list(dict.fromkeys(keys))
        found: dict[str, Any] = {}
        with self._connect() as db:
            for start in range(0, len(keys), _CHUNK):
                part = keys[start : start + _CHUNK]
                marks = ",".join("?" * len(part))
                for key, value in db.execute(f"SELECT key, value FROM scores WHERE key IN ({marks})", part):
                    found[key] = json.loads(value)
        return found

    def put_many(self, items: dict[str, Any]) -> None:
        with self._connect() as db:
            db.executemany(
                "INSERT OR REPLACE INTO scores (key, value) VALUES (?, ?)",
                [(key, json.dumps(value, allow_nan=True)) for key, value in items.items()],
            )


class FileDigests:
    """sha256 of files, memoised per (path, size, mtime) so a run hashes each image once."""

    def __init__(self) -> None:
        self._memo: dict[tuple[str, int, int], str] = {}

    def digest(self, path: Path) -> str:
        stat = path.stat()
        memo_key = (str(path), stat.st_size, stat.st_mtime_ns)
        if memo_key not in self._memo:
            h = hashlib.sha256()
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    h.update(block)
            self._memo[memo_key] = h.hexdigest()
        return self._memo[memo_key]


def model_fingerprint(folder: Path) -> str:
    """Names, sizes and mtimes of a model folder's files: retraining or replacing a model
    changes the key without hashing gigabytes of weights."""
    entries = []
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            stat = path.stat()
            entries.append(f"{path.relative_to(folder).as_posix()}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(entries).encode("utf-8")).hexdigest()
