"""Run a recipe over a Data-Juicer jsonl and write a self-contained output folder.

Why: every input line must be accounted for — kept, filtered (by which op, on
which stat, value and bound) or rejected (with the reason) — and the counts
must add up, or the step fails instead of silently losing data.

Output folder::

    samples.jsonl    kept samples, stats under __dj__stats__, image paths relative to it
    images/...       the images they use (hard links, else copies), original layout
    outcomes.jsonl   one record per input line, then one per sample a mapper created
    rejected.jsonl   id, op, error of every rejected sample
    report.json      the StepReport

Example::

    report = run_recipe(Recipe.load("r.yaml"), Path("in.jsonl"), Path("/data/seed"), Path("out"),
                        model_root=Path("/models"))
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from bettersynth.data.images import ImageError, normalise_rel, resolve_image
from bettersynth.data.jsonl import BadLine, read_jsonl, write_jsonl, write_samples
from bettersynth.data.sample import Sample
from bettersynth.engine import Engine, EngineSettings, Failure
from bettersynth.engine.inference import auto_workers
from bettersynth.ops.base import Decision, Filter, Mapped, Mapper, OpContext, Operator
from bettersynth.ops.score_cache import ScoreCache, default_cache_dir

if TYPE_CHECKING:
    from bettersynth.recipe import Recipe

log = logging.getLogger(__name__)

Select = Callable[[Operator, Sample], bool]


@dataclass
class StepReport:
    n_in: int  # input lines (good samples and bad lines)
    kept: int  # samples written to samples.jsonl (inputs and mapper-created)
    kept_from_input: int  # of those, input samples
    filtered: int  # input samples dropped by a filter (or replaced by a mapper)
    rejected: int  # input lines rejected (unreadable line, bad image, export failure)
    added: int  # samples created by mappers
    added_kept: int  # of those, written to samples.jsonl
    per_op: list[dict[str, Any]] = field(default_factory=list)  # counts per recipe step
    recipe_hash: str = ""
    cache_hits: int = 0  # filter scores read from the score cache (all steps)
    cache_misses: int = 0  # filter scores computed by a cacheable op (all steps)

    def check(self) -> None:
        """Raise if any sample is unaccounted for."""
        if self.n_in != self.kept_from_input + self.filtered + self.rejected:
            raise RuntimeError(f"accounting error: n_in {self.n_in} != kept_from_input {self.kept_from_input} + filtered {self.filtered} + rejected {self.rejected}")
        if self.kept != self.kept_from_input + self.added_kept:
            raise RuntimeError(f"accounting error: kept {self.kept} != kept_from_input {self.kept_from_input} + added_kept {self.added_kept}")


class _Ledger:
    """The fate of every sample, input or created, keyed by id."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.by_id: dict[str, dict[str, Any]] = {}

    def add(self, sample_id: str | None, source_id: str | None = None, where: str | None = None) -> dict[str, Any]:
        """Record a new sample; only good, unique ids are indexed (so later steps can update them)."""
        record: dict[str, Any] = {"id": sample_id, "status": "kept"}
        if source_id is not None:
            record["source_id"] = source_id
        if where is not None:
            record["line"] = where
        self.records.append(record)
        if where is None and sample_id is not None and sample_id not in self.by_id:
            self.by_id[sample_id] = record
        return record

    def filter(self, sample_id: str, op: str, decision: Decision) -> None:
        self.by_id[sample_id].update(status="filtered", op=op, stat=decision.stat, value=decision.value, bound=decision.bound)

    def replace(self, sample_id: str, op: str, by: list[str]) -> None:
        self.by_id[sample_id].update(status="filtered", op=op, stat=None, value=None, bound=None, replaced_by=by)

    def reject(self, sample_id: str | None, op: str, error: str, record: dict[str, Any] | None = None) -> None:
        (record or self.by_id[sample_id]).update(status="rejected", op=op, error=error)


def run_recipe(
    recipe: "Recipe",
    input_jsonl: Path,
    dataset_root: Path,
    out_dir: Path,
    model_root: Path | None = None,
    batch_size: int = 32,
    select: Select | None = None,
    num_workers: int | None = None,
    cache_dir: Path | None = None,
) -> StepReport:
    """Apply ``recipe`` to ``input_jsonl``; ``select(op, sample)`` limits mappers to a subset
    (unselected samples pass through kept); filters always see every sample.

    ``num_workers`` None picks decoding workers from the core count; scores are
    cached under ``cache_dir`` (default ``default_cache_dir()``) unless the
    recipe says ``use_cache: false``."""
    dataset_root, out_dir = Path(dataset_root), Path(out_dir)
    workers = auto_workers() if num_workers is None else num_workers
    engine = Engine(EngineSettings(batch_size=batch_size, num_workers=workers), dataset_root=dataset_root)
    cache = ScoreCache(Path(cache_dir) if cache_dir else default_cache_dir()) if recipe.extra.get("use_cache", True) else None
    ops = recipe.build_ops(OpContext(engine=engine, model_root=Path(model_root) if model_root else None, score_cache=cache))
    ledger = _Ledger()
    samples: list[Sample] = []
    n_in = 0
    for item in read_jsonl(input_jsonl):
        n_in += 1
        if isinstance(item, BadLine):
            ledger.reject(None, "reader", item.error, ledger.add(item.sample_id, where=item.where))
        else:
            ledger.add(item.id)
            samples.append(item)
    input_ids = {s.id for s in samples}
    per_op = []
    for position, op in enumerate(ops):
        counts = {"step": position, "op": op.name, "in": len(samples), "kept": 0, "filtered": 0, "rejected": 0, "added": 0, "skipped": 0}
        samples = _apply(op, samples, ledger, counts, select)
        if isinstance(op, Filter) and op.cacheable and cache is not None:
            counts["cache_hits"], counts["cache_misses"] = op.cache_hits, op.cache_misses
            if counts["in"] and not op.cache_misses:
                log.info("step %d %s: every score came from the cache; nothing recomputed", position, op.name)
        per_op.append(counts)
        log.info("step %d %s: %s", position, op.name, counts)
    samples = _export(samples, dataset_root, out_dir, ledger)
    report = _summarise(n_in, samples, input_ids, ledger, per_op, recipe.hash())
    report.check()
    write_samples(out_dir / "samples.jsonl", samples)
    write_jsonl(out_dir / "outcomes.jsonl", ledger.records)
    write_jsonl(out_dir / "rejected.jsonl", ({"id": r["id"], "op": r["op"], "error": r["error"]} for r in ledger.records if r["status"] == "rejected"))
    (out_dir / "report.json").write_text(json.dumps(asdict(report), indent=2) + "\n", encoding="utf-8")
    return report


def _apply(op: Operator, samples: list[Sample], ledger: _Ledger, counts: dict[str, Any], select: Select | None) -> list[Sample]:
    if isinstance(op, Filter):
        kept = []
        for sample, verdict in zip(samples, op.process(samples)):
            if isinstance(verdict, Failure):
                ledger.reject(sample.id, op.name, verdict.reason)
                counts["rejected"] += 1
            elif verdict.keep:
                kept.append(sample)
                counts["kept"] += 1
            else:
                ledger.filter(sample.id, op.name, verdict)
                counts["filtered"] += 1
        return kept
    if not isinstance(op, Mapper):
        raise TypeError(f"{op.name}: operators must be a Filter or a Mapper")
    chosen = [s for s in samples if select is None or select(op, s)]
    results = {id(s): r for s, r in zip(chosen, op.process(chosen))}
    out = []
    for sample in samples:
        result = results.get(id(sample))
        if result is None:
            out.append(sample)
            counts["skipped"] += 1
            continue
        if isinstance(result, Failure):
            ledger.reject(sample.id, op.name, result.reason)
            counts["rejected"] += 1
            continue
        out.extend(_take_mapped(op, sample, result, ledger, counts))
    return out


def _take_mapped(op: Operator, sample: Sample, result: Mapped, ledger: _Ledger, counts: dict[str, Any]) -> list[Sample]:
    out = []
    if result.original is not None:
        out.append(result.original)
        counts["kept"] += 1
    else:
        ledger.replace(sample.id, op.name, [s.id for s in result.added])
        counts["filtered"] += 1
    for new in result.added:
        record = ledger.add(new.id, source_id=sample.id)
        if ledger.by_id.get(new.id) is not record:
            ledger.reject(None, op.name, f"created sample id {new.id!r} already exists", record)
            continue
        out.append(new)
        counts["added"] += 1
    return out


def _export(samples: list[Sample], root: Path, out_dir: Path, ledger: _Ledger) -> list[Sample]:
    """Link each kept sample's images into out_dir/images and point its paths there."""
    out_dir.mkdir(parents=True, exist_ok=True)
    images_dir = out_dir / "images"
    exported, placed = [], set()
    for sample in samples:
        try:
            new_paths = [_place(rel, root, images_dir, placed) for rel in sample.images]
        except (ImageError, OSError) as exc:
            ledger.reject(sample.id, "export", str(exc))
            continue
        sample.images = [f"images/{p}" for p in new_paths]
        exported.append(sample)
    return exported


def _place(rel: str, root: Path, images_dir: Path, placed: set[str]) -> str:
    """Link (else copy) one image; existence and path safety are checked, pixels are not
    (only ops that use images decode them)."""
    source = resolve_image(root, rel)
    if not source.is_file():
        raise ImageError(f"{source}: image file not found")
    rel = normalise_rel(rel)
    if rel in placed:
        return rel
    target = images_dir / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() or target.is_symlink():  # left by an earlier run: may be stale
        target.unlink()
    try:
        os.link(source, target)
    except OSError:  # other filesystem, or links not allowed: copy instead
        shutil.copy2(source, target)
    placed.add(rel)
    return rel


def _summarise(n_in: int, samples: list[Sample], input_ids: set[str], ledger: _Ledger, per_op: list, recipe_hash: str) -> StepReport:
    inputs = [r for r in ledger.records if "source_id" not in r]
    created = [r for r in ledger.records if "source_id" in r]
    kept_from_input = sum(1 for s in samples if s.id in input_ids)
    return StepReport(
        n_in=n_in,
        kept=len(samples),
        kept_from_input=kept_from_input,
        filtered=sum(1 for r in inputs if r["status"] == "filtered"),
        rejected=sum(1 for r in inputs if r["status"] == "rejected"),
        added=len(created),
        added_kept=len(samples) - kept_from_input,
        per_op=per_op,
        recipe_hash=recipe_hash,
        cache_hits=sum(c.get("cache_hits", 0) for c in per_op),
        cache_misses=sum(c.get("cache_misses", 0) for c in per_op),
    )
