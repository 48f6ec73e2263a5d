"""What an operator may implement to run over a dataset streamed in chunks.

Why: the runner holds one chunk of samples at a time (bounded memory) and a
killed step resumes at its last completed chunk. Stateless ops need nothing.
An op that remembers samples across chunks (a deduplicator's seen hashes)
must let the runner checkpoint that memory, or a resumed run would forget it;
an op whose decision needs the whole dataset (keep the lowest-perplexity
20%) gets a first pass over every chunk before any sample is decided.

Example::

    class PerplexityQuantileFilter(Filter):            # NeedsDatasetPass
        def observe(self, batch):   self._scores += self.scores(batch)   # pass 1, cached
        def end_observation(self):  self._max = quantile(self._scores, 0.2)

    class ExactDedupFilter(Filter):                      # CarriesState
        def state_dict(self):       return {"seen": sorted(self._seen)}
        def load_state_dict(self, state): self._seen = set(state["seen"])
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from bettersynth.core.sample import Sample


@runtime_checkable
class CarriesState(Protocol):
    """An op whose decisions depend on chunks it has already seen.

    ``state_dict()`` is saved (as JSON) with every completed chunk and handed
    back through ``load_state_dict`` when a killed run resumes. A first pass
    (see ``NeedsDatasetPass``) also restores it afterwards, so ops before a
    dataset-wide op start the real pass fresh.
    """

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> None: ...


@runtime_checkable
class NeedsDatasetPass(Protocol):
    """An op that must see every sample reaching it before deciding any (a dataset-wide quantile).

    The runner streams the input through the ops before it, calls ``observe``
    with each chunk of survivors, then ``end_observation``; the real pass
    follows. The ops before it therefore run twice: filter scores come back
    from the score cache, but a mapper before it computes twice, so place
    such ops before expensive mappers. A resumed run repeats the first pass.
    """

    def observe(self, batch: list[Sample]) -> None: ...

    def end_observation(self) -> None: ...


class IdRegistry:
    """Every sample id a run has produced so far, on disk so memory does not grow with the dataset.

    Each id is tagged with the chunk that added it, so a resumed run forgets
    the ids of a chunk that was killed before it completed.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS ids (id TEXT PRIMARY KEY, chunk INTEGER NOT NULL)")
        self.chunk = 0
        self._db.execute("BEGIN")

    def add(self, sample_id: str) -> bool:
        """Record ``sample_id``; False if it was already known."""
        cursor = self._db.execute("INSERT OR IGNORE INTO ids (id, chunk) VALUES (?, ?)", (sample_id, self.chunk))
        return cursor.rowcount == 1

    def commit(self, next_chunk: int) -> None:
        """Make this chunk's ids durable and start tagging with ``next_chunk``."""
        self._db.execute("COMMIT")
        self.chunk = next_chunk
        self._db.execute("BEGIN")

    def forget_from(self, chunk: int) -> None:
        """Drop ids added by ``chunk`` and later (chunks a killed run did not complete)."""
        self._db.execute("DELETE FROM ids WHERE chunk >= ?", (chunk,))
        self.commit(chunk)

    def close(self) -> None:
        try:
            if self._db.in_transaction:
                self._db.execute("COMMIT")
        finally:  # a full disk can refuse the COMMIT; the connection is closed all the same
            self._db.close()
