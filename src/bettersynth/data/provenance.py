"""Where a synthesised sample came from, recorded in ``meta["provenance"]``.

Why: a re-caption, a fused caption or a regenerated image is only usable
(and only debuggable) if one can trace it to its source sample and to the op,
model and seed that made it. Provenance is a list, oldest first, so a sample
re-synthesised over several rounds keeps its whole history.

Example::

    new = Sample("7#cap0", text, images, with_provenance(src.meta, op="image_captioning_mapper",
                 source_id=src.id, model="blip", seed=0))
    source_id(new)   # "7"
"""

from __future__ import annotations

from typing import Any

from bettersynth.core.sample import Sample

KEY = "provenance"


def with_provenance(meta: dict[str, Any], **record: Any) -> dict[str, Any]:
    """A copy of ``meta`` with ``record`` appended to its provenance list.

    A legacy single-dict provenance is kept as the first entry of the list.
    """
    meta = dict(meta)
    history = meta.get(KEY, [])
    history = [history] if isinstance(history, dict) else list(history)
    meta[KEY] = [*history, record]
    return meta


def history(sample: Sample) -> list[dict[str, Any]]:
    """The provenance records of ``sample``, oldest first (empty for original data)."""
    records = sample.meta.get(KEY, [])
    return [records] if isinstance(records, dict) else list(records)


def source_id(sample: Sample) -> str | None:
    """The id of the sample this one was made from (the latest record), or None."""
    records = history(sample)
    return str(records[-1]["source_id"]) if records and "source_id" in records[-1] else None


def synthesis_record(op: str, source: Sample, model: str, seed: int, **extra: Any) -> dict[str, Any]:
    """The record every synthesis op writes: source id, op, model, seed (+ op-specific facts)."""
    return {"op": op, "source_id": source.id, "model": model, "seed": seed, **extra}
