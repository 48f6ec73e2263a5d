"""Run a recipe over a Data-Juicer jsonl and write a self-contained output folder.

Why: every input line must be accounted for — kept, filtered (by which op, on
which stat, value and bound) or rejected (with the reason) — and the counts
must add up, or the step fails instead of silently losing data. Before any op
runs, every sample's images are checked at ingestion, whatever the ops read:
a path that escapes the dataset root or is (or passes through) a symlink, a
missing, empty, truncated, undecodable or decompression-bomb image rejects its
sample (op ``ingest``) with the reason. The input is
streamed in chunks of ``chunk_size`` lines, each pushed through the whole op
list and written out before the next is read, so memory does not grow with
the dataset and a killed run resumes at its last completed chunk
(``bettersynth.recipes.step_files``). Ops that keep state across chunks, or need
a first pass over the whole dataset, say so through ``bettersynth.recipes.stream``.

Output folder::

    samples.jsonl    kept samples, stats under __dj__stats__, image paths relative to it
    images/...       the images they use (hard links, else copies), original layout; images an op
                     creates are written under a scratch root in .resume/ (never into the input)
                     and reach images/ the same way (``bettersynth.recipes.image_links``)
    outcomes.jsonl   per chunk: one record per input line, then one per sample a mapper created
    rejected.jsonl   id, op, error of every rejected sample
    report.json      the StepReport (written last: the folder is complete once it exists)

Example::

    report = run_recipe(Recipe.load("r.yaml"), Path("in.jsonl"), Path("/data/seed"), Path("out"),
                        model_root=Path("/models"))
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bettersynth.core.images import ImageError, check_image
from bettersynth.core.sample import Sample
from bettersynth.data.jsonl import BadLine, Position, iter_jsonl
from bettersynth.engine import Engine, EngineSettings, Failure
from bettersynth.engine.inference import DecodeSetting, auto_workers
from bettersynth.engine.score_cache import FileDigests, ScoreCache, default_cache_dir
from bettersynth.ops.base import Decision, Filter, Mapped, Mapper, OpContext, Operator
from bettersynth.recipes.image_links import ImageStage, place_image
from bettersynth.recipes.step_files import Checkpoint, StepFiles, is_full_disk, run_fingerprint
from bettersynth.recipes.stream import CarriesState, IdRegistry, NeedsDatasetPass

if TYPE_CHECKING:
    from bettersynth.recipes.recipe import Recipe

log = logging.getLogger(__name__)

Select = Callable[[Operator, Sample], bool]
SCRATCH_ROOT = "root"  # under out_dir/.resume: the dataset root of runs whose ops write images
DEFAULT_CHUNK_SIZE = 2048  # input lines in memory at once; a multiple of the usual model batch
OP_COUNTS = ("in", "kept", "filtered", "replaced", "rejected", "added", "skipped")  # per op; replaced is part of filtered
INGEST = "ingest"  # the op named by rejections of samples whose images fail the checks at ingestion


@dataclass
class StepReport:
    n_in: int  # input lines (good samples and bad lines)
    kept: int  # samples written to samples.jsonl (inputs and mapper-created)
    kept_from_input: int  # of those, input samples
    filtered: int  # input samples dropped by a filter (or replaced by a mapper)
    rejected: int  # input lines rejected (unreadable line, bad image at ingestion, op failure, export failure)
    added: int  # samples created by mappers
    added_kept: int  # of those, written to samples.jsonl
    replaced: int = 0  # filtered or rejected inputs with a created descendant written in their place
    removed: int = 0  # filtered or rejected inputs with nothing written in their place
    per_op: list[dict[str, Any]] = field(default_factory=list)  # counts per recipe step
    recipe_hash: str = ""
    cache_hits: int = 0  # filter scores read from the score cache (all steps)
    cache_misses: int = 0  # filter scores computed by a cacheable op (all steps)
    fingerprint: str = ""  # recipe, input bytes and chunking that produced the folder (a rerun skips)

    def check(self) -> None:
        """Raise if any sample is unaccounted for, in the step or in any op."""
        if self.n_in != self.kept_from_input + self.filtered + self.rejected:
            raise RuntimeError(f"accounting error: n_in {self.n_in} != kept_from_input {self.kept_from_input} + filtered {self.filtered} + rejected {self.rejected}")
        if self.kept != self.kept_from_input + self.added_kept:
            raise RuntimeError(f"accounting error: kept {self.kept} != kept_from_input {self.kept_from_input} + added_kept {self.added_kept}")
        if self.replaced + self.removed != self.filtered + self.rejected or self.replaced > self.added_kept:
            raise RuntimeError(f"accounting error: replaced {self.replaced} + removed {self.removed} != filtered {self.filtered} + "
                               f"rejected {self.rejected}, or more replaced than added_kept {self.added_kept}")
        for c in self.per_op:
            out = c["kept"] + c["filtered"] + c["rejected"] + c.get("skipped", 0)
            if c["in"] != out or c.get("replaced", 0) > c["filtered"]:
                raise RuntimeError(f"accounting error: step {c['step']} {c['op']}: in {c['in']} != kept + filtered + rejected + skipped {out}"
                                   f" (or replaced {c.get('replaced', 0)} > filtered {c['filtered']})")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepReport:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class _Ledger:
    """The fate of every sample of one chunk, input or created, keyed by id."""

    def __init__(self, ids: Callable[[str], bool]) -> None:
        self.records: list[dict[str, Any]] = []
        self.by_id: dict[str, dict[str, Any]] = {}
        self.is_new_id = ids  # the run's id registry: created samples must not reuse any id

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

    def root_of(self, sample_id: str) -> str:
        """The input sample a created sample descends from (through mappers of mappers' output)."""
        seen = set()
        record = self.by_id.get(sample_id)
        while record is not None and "source_id" in record and sample_id not in seen:
            seen.add(sample_id)
            sample_id = record["source_id"]
            record = self.by_id.get(sample_id)
        return sample_id


@dataclass
class _Tally:
    """The step's counters, summed over chunks (and saved with every checkpoint)."""

    n_in: int = 0
    kept: int = 0
    kept_from_input: int = 0
    filtered: int = 0
    rejected: int = 0
    added: int = 0
    added_kept: int = 0
    replaced: int = 0
    per_op: list[dict[str, Any]] = field(default_factory=list)

    def add_chunk(self, n_lines: int, kept: list[Sample], input_ids: set[str], ledger: _Ledger) -> None:
        self.n_in += n_lines
        self.kept += len(kept)
        from_input = sum(1 for s in kept if s.id in input_ids)
        self.kept_from_input += from_input
        self.added_kept += len(kept) - from_input
        dropped = set()
        for record in ledger.records:
            if "source_id" in record:
                self.added += 1
            elif record["status"] in ("filtered", "rejected"):
                setattr(self, record["status"], getattr(self, record["status"]) + 1)
                if "line" not in record:
                    dropped.add(record["id"])
        self.replaced += len(dropped & {ledger.root_of(s.id) for s in kept if s.id not in input_ids})

    def report(self, recipe_hash: str, fingerprint: str) -> StepReport:
        return StepReport(
            n_in=self.n_in, kept=self.kept, kept_from_input=self.kept_from_input, filtered=self.filtered,
            rejected=self.rejected, added=self.added, added_kept=self.added_kept, replaced=self.replaced,
            removed=self.filtered + self.rejected - self.replaced, per_op=self.per_op,
            recipe_hash=recipe_hash, cache_hits=sum(c.get("cache_hits", 0) for c in self.per_op),
            cache_misses=sum(c.get("cache_misses", 0) for c in self.per_op), fingerprint=fingerprint,
        )


def run_recipe(
    recipe: Recipe,
    input_jsonl: Path,
    dataset_root: Path,
    out_dir: Path,
    model_root: Path | None = None,
    batch_size: int = 32,
    select: Select | None = None,
    num_workers: int | None = None,
    cache_dir: Path | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    resume: bool = True,
    resume_key: str | None = None,
    validate_images: bool = True,
    decode: DecodeSetting = "cpu",
) -> StepReport:
    """Apply ``recipe`` to ``input_jsonl``; ``select(op, sample)`` limits mappers to a subset
    (unselected samples pass through kept); filters always see every sample.

    ``num_workers`` None picks decoding workers from the core count; scores are
    cached under ``cache_dir`` (default ``default_cache_dir()``) unless the
    recipe says ``use_cache: false``. With ``resume``, a folder already
    complete for the same recipe, input and ``chunk_size`` is returned as is,
    and a killed run goes on from its last chunk. A ``select`` callable cannot
    be fingerprinted: pass ``resume_key`` (e.g. "fraction=0.2,seed=1") naming
    it, or the run always starts fresh. ``validate_images`` False skips the
    checks at ingestion (for inputs already checked, e.g. the rounds' staging).
    ``decode`` is ``EngineSettings.decode``: "device" (or "auto" on CUDA)
    decodes the ops' JPEGs in batches on the GPU; the ingestion checks still
    decode every image on the CPU.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size: must be >= 1, got {chunk_size}")
    dataset_root, out_dir, input_jsonl = Path(dataset_root), Path(out_dir), Path(input_jsonl)
    resume = resume and (select is None or resume_key is not None)
    files = StepFiles(out_dir, run_fingerprint(recipe.hash(), input_jsonl, chunk_size, resume_key or ""))
    if resume and (done := files.finished_report()) is not None:
        log.info("%s: already complete for this recipe and input (report.json); nothing to do", out_dir)
        return StepReport.from_json(done)
    workers = auto_workers() if num_workers is None else num_workers
    engine = Engine(EngineSettings(batch_size=batch_size, num_workers=workers, decode=decode), dataset_root=dataset_root)
    cache = ScoreCache(Path(cache_dir) if cache_dir else default_cache_dir()) if recipe.extra.get("use_cache", True) else None
    context = OpContext(engine=engine, model_root=Path(model_root) if model_root else None, score_cache=cache, output_dir=out_dir)
    ops = recipe.build_ops(context)
    with files.reporting_full_disk():  # ENOSPC: one line naming out_dir; the completed chunks stay
        checkpoint = files.open(resume)
        if checkpoint.report is not None:  # killed while renaming: finish the renames
            files.finish(checkpoint)
            return StepReport.from_json(checkpoint.report)
        stage = None
        if any(op.writes_images for op in ops):  # new files go to a scratch root inside out_dir, never the input
            stage = ImageStage(dataset_root, files.work / SCRATCH_ROOT)
            engine.dataset_root = stage.scratch
        ingest = _Ingest(dataset_root, workers) if validate_images else None
        _first_pass(ops, input_jsonl, chunk_size, select, context, files.work, stage, ingest)
        ids = IdRegistry(files.work / "ids.sqlite")
        try:
            tally = _stream(ops, input_jsonl, engine.dataset_root, out_dir, chunk_size, select, context, files, checkpoint, ids,
                            stage, ingest)
        finally:
            ids.close()
            files.close()
        report = tally.report(recipe.hash(), files.fingerprint)
        report.check()
        checkpoint.report = asdict(report)
        files.finish(checkpoint)
    return report


def _stream(
    ops: list[Operator], input_jsonl: Path, root: Path, out_dir: Path, chunk_size: int, select: Select | None,
    context: OpContext, files: StepFiles, checkpoint: Checkpoint, ids: IdRegistry, stage: ImageStage | None,
    ingest: _Ingest | None,
) -> _Tally:
    """The real pass: each chunk through every op, exported, appended and checkpointed."""
    tally = _Tally(**checkpoint.tally) if checkpoint.tally else _Tally(per_op=_empty_counts(ops))
    for position, op in enumerate(ops):
        if isinstance(op, CarriesState) and str(position) in checkpoint.op_states:
            op.load_state_dict(checkpoint.op_states[str(position)])
    ids.forget_from(checkpoint.chunks)
    lines = iter_jsonl(input_jsonl, checkpoint.position, ids.add)
    for items, end in _chunks(lines, chunk_size):
        ledger, samples, input_ids = _admit(items, ids.add)
        samples = ingest(samples, ledger) if ingest else samples
        samples = _staged(stage, samples, ledger)
        samples = _run_ops(ops, samples, ledger, tally.per_op, select, context)
        samples = _export(samples, root, out_dir, ledger)
        tally.add_chunk(len(items), samples, input_ids, ledger)
        files.append("samples.jsonl", (s.to_json() for s in samples))
        files.append("outcomes.jsonl", ledger.records)
        files.append("rejected.jsonl", ({"id": r["id"], "op": r["op"], "error": r["error"]} for r in ledger.records if r["status"] == "rejected"))
        checkpoint.chunks += 1
        checkpoint.position = end
        checkpoint.tally = asdict(tally)
        checkpoint.op_states = {str(i): op.state_dict() for i, op in enumerate(ops) if isinstance(op, CarriesState)}
        ids.commit(checkpoint.chunks)
        files.commit(checkpoint)
        log.info("chunk %d: input line %d, %d in, %d kept so far", checkpoint.chunks, end.line, tally.n_in, tally.kept)
    for position, op in enumerate(ops):
        counts = tally.per_op[position]
        extra = getattr(op, "extra_counts", None)  # op-specific figures (e.g. a dedup's distinct hashes)
        if callable(extra):
            counts.update({k: v for k, v in extra().items() if k not in (*OP_COUNTS, "step", "op")})
        log.info("step %d %s: %s", position, op.name, counts)
        if counts.get("cache_hits") and not counts.get("cache_misses"):
            log.info("step %d %s: every score came from the cache; nothing recomputed", position, op.name)
    return tally


def _first_pass(
    ops: list[Operator], input_jsonl: Path, chunk_size: int, select: Select | None, context: OpContext, work: Path,
    stage: ImageStage | None, ingest: _Ingest | None,
) -> None:
    """For each op that needs the whole dataset: stream the input through the ops before it and
    let it observe the survivors. Nothing is written; the ops' carried state is put back after."""
    for position, op in enumerate(ops):
        if not isinstance(op, NeedsDatasetPass):
            continue
        before = ops[:position]
        saved = {i: o.state_dict() for i, o in enumerate(before) if isinstance(o, CarriesState)}
        scratch = work / "ids-first-pass.sqlite"
        scratch.unlink(missing_ok=True)
        ids = IdRegistry(scratch)
        try:
            for items, _ in _chunks(iter_jsonl(input_jsonl, Position(), ids.add), chunk_size):
                ledger, samples, _ = _admit(items, ids.add)
                samples = ingest(samples, ledger) if ingest else samples
                samples = _staged(stage, samples, ledger)
                samples = _run_ops(before, samples, ledger, _empty_counts(before), select, context)
                if samples:
                    op.observe(samples)
                ids.commit(0)
        finally:
            ids.close()
            scratch.unlink(missing_ok=True)
        op.end_observation()
        for i, state in saved.items():
            before[i].load_state_dict(state)
        log.info("step %d %s: first pass over the dataset done", position, op.name)


class _Ingest:
    """The checks every sample's images pass before any op sees it (``check_image``), a chunk at a time.

    Decoding runs on ``workers`` threads (PIL decodes without the GIL); an
    image several samples share is checked once per chunk.
    """

    def __init__(self, root: Path, workers: int) -> None:
        self.root, self.workers = Path(root), max(1, workers)

    def _problem(self, rel: str) -> str | None:
        try:
            check_image(self.root, rel)
        except (ImageError, OSError) as exc:
            return str(exc)
        return None

    def __call__(self, samples: list[Sample], ledger: _Ledger) -> list[Sample]:
        paths = sorted({rel for sample in samples for rel in sample.images})
        if not paths:
            return samples
        if self.workers > 1 and len(paths) > 1:
            with ThreadPoolExecutor(min(self.workers, len(paths))) as pool:
                problems = dict(zip(paths, pool.map(self._problem, paths)))
        else:
            problems = {rel: self._problem(rel) for rel in paths}
        kept = []
        for sample in samples:
            problem = next((problems[rel] for rel in sample.images if problems[rel] is not None), None)
            if problem is None:
                kept.append(sample)
            else:
                ledger.reject(sample.id, INGEST, f"sample {sample.id!r}: {problem}")
        return kept


def _staged(stage: ImageStage | None, samples: list[Sample], ledger: _Ledger) -> list[Sample]:
    """The chunk's samples whose images were linked into the scratch root (all of them without one)."""
    if stage is None:
        return samples
    return stage(samples, lambda sample_id, error: ledger.reject(sample_id, "stage", error))


def _chunks(lines: Iterator[tuple[Sample | BadLine, Position]], size: int) -> Iterator[tuple[list[Sample | BadLine], Position]]:
    while batch := list(islice(lines, size)):
        yield [item for item, _ in batch], batch[-1][1]


def _admit(items: list[Sample | BadLine], is_new_id: Callable[[str], bool]) -> tuple[_Ledger, list[Sample], set[str]]:
    """Ledger records for one chunk's lines; bad lines are rejected by the reader."""
    ledger = _Ledger(is_new_id)
    samples = []
    for item in items:
        if isinstance(item, BadLine):
            ledger.reject(None, "reader", item.error, ledger.add(item.sample_id, where=item.where))
        else:
            ledger.add(item.id)
            samples.append(item)
    return ledger, samples, {s.id for s in samples}


def _empty_counts(ops: list[Operator]) -> list[dict[str, Any]]:
    return [{"step": i, "op": op.name, **dict.fromkeys(OP_COUNTS, 0)} for i, op in enumerate(ops)]


def _run_ops(
    ops: list[Operator], samples: list[Sample], ledger: _Ledger, per_op: list[dict[str, Any]], select: Select | None, context: OpContext,
) -> list[Sample]:
    context.digests = FileDigests()  # image hashes are remembered per chunk, not for the whole run
    for op, counts in zip(ops, per_op):
        counts["in"] += len(samples)
        samples = _apply(op, samples, ledger, counts, select) if samples else []
        if isinstance(op, Filter) and op.cacheable and context.score_cache is not None:
            counts["cache_hits"] = counts.get("cache_hits", 0) + op.cache_hits
            counts["cache_misses"] = counts.get("cache_misses", 0) + op.cache_misses
            op.cache_hits = op.cache_misses = 0
    return samples


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
    results = {id(s): r for s, r in zip(chosen, op.process(chosen) if chosen else [])}
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
        counts["replaced"] = counts.get("replaced", 0) + 1  # of the filtered: swapped for created samples
    for new in result.added:
        record = ledger.add(new.id, source_id=sample.id)
        if ledger.by_id.get(new.id) is not record or not ledger.is_new_id(new.id):
            ledger.reject(None, op.name, f"created sample id {new.id!r} already exists", record)
            continue
        out.append(new)
        counts["added"] += 1
    return out


def _export(samples: list[Sample], root: Path, out_dir: Path, ledger: _Ledger) -> list[Sample]:
    """Link each kept sample's images into out_dir/images and point its paths there."""
    images_dir = out_dir / "images"
    exported, placed = [], set()
    for sample in samples:
        try:
            new_paths = [place_image(rel, root, images_dir, placed) for rel in sample.images]
        except (ImageError, OSError) as exc:
            if is_full_disk(exc):  # the output's disk, not the sample: fail the step, never drop the sample
                raise
            ledger.reject(sample.id, "export", str(exc))
            continue
        sample.images = [f"images/{p}" for p in new_paths]
        exported.append(sample)
    return exported
