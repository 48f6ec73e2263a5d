"""Deduplication as a filter: the hash is the per-sample stat, the first occurrence is kept.

Why: a runner may hand a filter the whole dataset at once or in successive
chunks; a deduplicator must give the same answer either way. The hash of a
sample depends on that sample alone (so it is computed per batch and may be
cached); the keep decision walks the samples in input order and remembers
what it has kept, in the op instance, across ``process`` calls of one run
(ops are built afresh for every run, so nothing leaks between runs), and
hands it to the runner as a state dict to checkpoint (``ops.stream.CarriesState``). A
duplicate is filtered with the bound ``duplicate_of=<id of the kept sample>``.
Samples rejected before (or by) the op are never remembered. An empty hash
(nothing to compare, e.g. a sample without images) is always kept.

Example::

    class DocumentDeduplicator(Deduplicator):
        name, stat_key = "document_deduplicator", "text_md5"
        def compute_stats(self, batch): return [md5(s.text) for s in batch]
"""

from __future__ import annotations

from typing import Any, ClassVar

from bettersynth.core.sample import Sample
from bettersynth.ops.base import Decision, Filter


class Deduplicator(Filter):
    """Keeps the first sample of every hash (override ``match``/``remember`` for near matches)."""

    analyzable: ClassVar[bool] = False  # the stat is a hash: no percentiles or histograms to draw

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.first_ids: dict[Any, str] = {}  # hash -> id of the sample kept for it
        self.duplicates = 0  # samples filtered as duplicates so far in this run

    def match(self, value: Any) -> str | None:
        """The id of the kept sample ``value`` duplicates, or None."""
        return self.first_ids.get(value)

    def remember(self, value: Any, sample_id: str) -> None:
        """``value`` was kept as ``sample_id``."""
        self.first_ids.setdefault(value, sample_id)

    def remember_duplicate(self, value: Any, first_id: str) -> None:
        """``value`` was dropped as a duplicate of ``first_id`` (near-match ops chain through it)."""

    def keep(self, sample: Sample) -> Decision:
        if self.stat_key not in sample.stats:
            raise ValueError(f"{self.name}: sample {sample.id!r} has no stat {self.stat_key!r}")
        value = sample.stats[self.stat_key]
        if not value:
            return Decision(True, self.stat_key, value)
        first = self.match(value)
        if first is not None:
            self.duplicates += 1
            self.remember_duplicate(value, first)
            return Decision(False, self.stat_key, value, f"duplicate_of={first}")
        self.remember(value, sample.id)
        return Decision(True, self.stat_key, value)

    def state_dict(self) -> dict[str, Any]:
        """What was kept so far (``ops.stream.CarriesState``): saved with each chunk, restored on resume."""
        return {"first": [[value, sample_id] for value, sample_id in self.first_ids.items()], "duplicates": self.duplicates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.first_ids = {value: sample_id for value, sample_id in state["first"]}
        self.duplicates = state["duplicates"]

    def extra_counts(self) -> dict[str, Any]:
        """For the step's counts: distinct hashes kept and duplicates dropped so far."""
        return {"distinct": len(self.first_ids), "duplicates": self.duplicates}


class NearDeduplicator(Deduplicator):
    """Duplicates within ``max_distance`` bits of an earlier 64-bit hash (SimHash, perceptual image hashes).

    In a stream a sample is a duplicate when its hash is near any earlier one
    (kept or dropped), and it names the kept sample of the earliest such hash.
    Subclasses give ``to_int`` (the stat as a 64-bit integer) and build
    ``self.index`` (an ``ops.simhash.SimhashIndex``) in ``new_index``.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.index = self.new_index()
        self._order: dict[int, int] = {}  # hash -> when it was first seen

    def new_index(self) -> Any:
        raise NotImplementedError

    def to_int(self, value: Any) -> int:
        raise NotImplementedError

    def match(self, value: Any) -> str | None:
        near = self.index.near(self.to_int(value))
        return self.first_ids[min(near, key=self._order.__getitem__)] if near else None

    def remember(self, value: Any, sample_id: str) -> None:
        self._index(self.to_int(value), sample_id)

    def remember_duplicate(self, value: Any, first_id: str) -> None:
        self._index(self.to_int(value), first_id)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Rebuild the index from the saved hashes (integers), in the order they were first seen; any key a
        subclass matched exactly (a string) goes back as it was."""
        self.index = self.new_index()
        self.first_ids, self._order = {}, {}
        for h, kept_id in state["first"]:
            if isinstance(h, int):
                self._index(h, kept_id)
            else:
                self.first_ids[h] = kept_id
        self.duplicates = state["duplicates"]

    def _index(self, h: int, kept_id: str) -> None:
        if h not in self._order:
            self._order[h] = len(self._order)
            self.index.add(h)
            self.first_ids[h] = kept_id

