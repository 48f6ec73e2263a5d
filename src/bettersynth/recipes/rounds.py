"""Run a multi-round recipe: each round filters or re-synthesises a selected subset, then merges back.

Why: the best challenge recipes are rounds, not one op list — "score
similarity, re-caption the pairs between 0.01 and 0.28, keep the re-captions
above 0.28, merge them back". A round's filters must judge only that round's
samples, so each round runs the ordinary runner (``run_recipe``, with its
accounting) on the selected subset while the rest bypass it; the outputs are
merged back in input order into a content-addressed variant, which the next
round reads. Every round reports what it added, replaced and removed, and the
counts must add up or the run fails.

Rounds work in a staging folder beside ``out_dir`` (removed on success), so
ops that write images (``image_diffusion_mapper``) never touch the input.

Example::

    report = run_rounds(Recipe.load("recipes/challenge_recaption_refilter.yaml"),
                        Path("seed/samples.jsonl"), Path("seed"), Path("out"), model_root=Path("/models"))
    report.rounds[1].replaced   # low-similarity pairs whose re-caption was kept
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bettersynth.core.images import ImageError, check_image
from bettersynth.core.sample import Sample
from bettersynth.data.algebra import SAMPLES, VariantWriter, load_variant
from bettersynth.data.jsonl import BadLine, read_jsonl, write_jsonl, write_samples
from bettersynth.recipes.recipe import Recipe, Round, RoundSelect

if TYPE_CHECKING:
    from bettersynth.recipes.runner import Select

log = logging.getLogger(__name__)


@dataclass
class RoundReport:
    """One round's fate of every sample that reached it."""

    round: int
    name: str
    n_in: int  # samples reaching the round
    selected: int  # of those, chosen by ``where`` (the round's ops see only these)
    bypassed: int  # passed the round unchanged
    kept: int  # selected samples that left as themselves
    filtered: int  # selected samples dropped by a filter or swapped out by a mapper
    rejected: int  # selected samples that failed (bad image, op error)
    created: int  # samples the round's mappers made
    created_kept: int  # of those, left at the end of the round
    replaced: int  # dropped samples with at least one kept descendant (e.g. a kept re-caption)
    added: int  # kept created samples beyond one per replaced sample
    removed: int  # dropped samples with no kept descendant
    n_out: int  # samples leaving the round
    step: dict[str, Any] = field(default_factory=dict)  # the runner's StepReport for the selected subset

    def check(self) -> None:
        errors = []
        if self.n_in != self.selected + self.bypassed:
            errors.append(f"n_in {self.n_in} != selected {self.selected} + bypassed {self.bypassed}")
        if self.selected != self.kept + self.filtered + self.rejected:
            errors.append(f"selected {self.selected} != kept {self.kept} + filtered {self.filtered} + rejected {self.rejected}")
        if self.n_out != self.bypassed + self.kept + self.created_kept:
            errors.append(f"n_out {self.n_out} != bypassed {self.bypassed} + kept {self.kept} + created_kept {self.created_kept}")
        if self.n_out != self.n_in - self.removed + self.added:
            errors.append(f"n_out {self.n_out} != n_in {self.n_in} - removed {self.removed} + added {self.added}")
        if errors:
            raise RuntimeError(f"accounting error in round {self.round} {self.name!r}: " + "; ".join(errors))


@dataclass
class RoundsReport:
    """Per round (``rounds``) and summed over rounds; ``inputs_*`` follow each input line to the end.

    A sample made in one round and dropped in a later one counts in that later
    round's ``removed``; the ``inputs_*`` counts instead ask, for every input
    line, whether it, or something made from it, is in the output.
    """

    n_in: int  # input lines
    staged: int  # good samples whose images were found (entered round 0)
    staging_rejected: int  # lines rejected before round 0 (unreadable line, missing image)
    n_out: int  # samples written
    added: int  # summed over rounds
    replaced: int
    removed: int
    rounds: list[RoundReport] = field(default_factory=list)
    recipe_hash: str = ""
    kept_from_input: int = 0  # written samples that are input samples themselves
    inputs_filtered: int = 0  # input samples dropped by a filter, or swapped out by a mapper, in some round
    inputs_rejected: int = 0  # input lines rejected (at staging or in some round)
    inputs_replaced: int = 0  # of the dropped inputs, those with a created descendant in the output
    created: int = 0  # samples made by mappers, over all rounds

    def check(self) -> None:
        for r in self.rounds:
            r.check()
        if self.n_in != self.staged + self.staging_rejected:
            raise RuntimeError(f"accounting error: n_in {self.n_in} != staged {self.staged} + staging_rejected {self.staging_rejected}")
        if self.n_out != self.staged - self.removed + self.added:
            raise RuntimeError(f"accounting error: n_out {self.n_out} != staged {self.staged} - removed {self.removed} + added {self.added}")
        if self.n_in != self.kept_from_input + self.inputs_filtered + self.inputs_rejected:
            raise RuntimeError(f"accounting error: n_in {self.n_in} != kept_from_input {self.kept_from_input} + inputs_filtered "
                               f"{self.inputs_filtered} + inputs_rejected {self.inputs_rejected}")
        if self.inputs_replaced > min(self.n_out - self.kept_from_input, self.inputs_filtered + self.inputs_rejected):
            raise RuntimeError(f"accounting error: inputs_replaced {self.inputs_replaced} exceeds the created samples written "
                               "or the inputs dropped")

    def step_counts(self) -> dict[str, int]:
        """The whole run in the single-pass runner's terms (``StepReport``), so steps compare alike:
        n_in = kept_from_input + filtered + rejected, kept = kept_from_input + added_kept,
        filtered + rejected = replaced + removed."""
        dropped = self.inputs_filtered + self.inputs_rejected
        return {
            "n_in": self.n_in, "kept": self.n_out, "kept_from_input": self.kept_from_input,
            "filtered": self.inputs_filtered, "rejected": self.inputs_rejected,
            "replaced": self.inputs_replaced, "removed": dropped - self.inputs_replaced,
            "added": self.created, "added_kept": self.n_out - self.kept_from_input,
        }


def run_rounds(
    recipe: Recipe,
    input_jsonl: Path,
    dataset_root: Path,
    out_dir: Path,
    model_root: Path | None = None,
    batch_size: int = 32,
    num_workers: int | None = None,
    cache_dir: Path | None = None,
    work_dir: Path | None = None,
    keep_work: bool = False,
    select: Select | None = None,
    chunk_size: int | None = None,
    decode: "DecodeSetting" = "cpu",
) -> RoundsReport:
    """Run ``recipe`` round by round into ``out_dir`` (samples.jsonl, content-addressed images/,
    outcomes.jsonl, rejected.jsonl, report.json). A single-``process`` recipe is one round.

    ``select(op, sample)`` further limits every round's mappers, as in ``run_recipe``;
    ``chunk_size`` and ``decode`` are the runner's (None: its default chunk size)."""
    from bettersynth.recipes.runner import DEFAULT_CHUNK_SIZE, run_recipe
    from bettersynth.recipes.step_files import require_input

    require_input(Path(input_jsonl))
    out_dir = Path(out_dir)
    if out_dir.resolve() == Path(dataset_root).resolve():
        raise ValueError(f"out_dir: {out_dir} is the input folder; write the result to a folder of its own")
    _clear_result(out_dir)
    rounds = recipe.rounds or [Round("process", list(recipe.ops))]
    work = Path(work_dir) if work_dir else out_dir.parent / f".{out_dir.name}.rounds"
    if work.exists():
        shutil.rmtree(work)
    outcomes: list[dict[str, Any]] = []
    current = work / "r0-input"
    staged, staging_rejected, n_in = _stage(Path(input_jsonl), Path(dataset_root), current, outcomes)
    input_ids = {s.id for s in load_variant(current)}
    report = RoundsReport(n_in=n_in, staged=staged, staging_rejected=staging_rejected, n_out=0, added=0, replaced=0, removed=0,
                          recipe_hash=recipe.hash())
    for index, spec in enumerate(rounds):
        last = index == len(rounds) - 1
        target = out_dir if last else work / f"r{index + 1}-input"
        samples = load_variant(current)
        selected = [s for s in samples if spec.where is None or selects(spec.where, s)]
        round_dir = work / f"r{index}"
        step: dict[str, Any] = {}
        outputs: list[Sample] = []
        records: list[dict[str, Any]] = []
        if selected:
            write_samples(round_dir / "selected.jsonl", selected)
            single = recipe.round_recipe(index) if recipe.rounds else recipe
            step = asdict(run_recipe(single, round_dir / "selected.jsonl", current, round_dir / "out", model_root=model_root,
                                     batch_size=batch_size, num_workers=num_workers, cache_dir=cache_dir, select=select,
                                     chunk_size=chunk_size or DEFAULT_CHUNK_SIZE, validate_images=False, decode=decode))
            outputs = load_variant(round_dir / "out")
            records = [json.loads(line) for line in (round_dir / "out" / "outcomes.jsonl").read_text(encoding="utf-8").splitlines() if line]
        counts = _merge(samples, selected, outputs, records, current, round_dir / "out", target)
        result = RoundReport(round=index, name=spec.name, n_in=len(samples), selected=len(selected),
                             bypassed=len(samples) - len(selected), step=step, **counts)
        result.check()
        report.rounds.append(result)
        outcomes.extend({**r, "round": spec.name} for r in records)
        log.info("round %d %s: %d in, %d selected, %d added, %d replaced, %d removed, %d out", index, spec.name,
                 result.n_in, result.selected, result.added, result.replaced, result.removed, result.n_out)
        current = target
    report.n_out = report.rounds[-1].n_out
    report.added = sum(r.added for r in report.rounds)
    report.replaced = sum(r.replaced for r in report.rounds)
    report.removed = sum(r.removed for r in report.rounds)
    report.created = sum(r.created for r in report.rounds)
    _follow_inputs(report, input_ids, outcomes, [s.id for s in load_variant(out_dir)])
    report.check()
    write_jsonl(out_dir / "outcomes.jsonl", outcomes)
    write_jsonl(out_dir / "rejected.jsonl", ({"id": r["id"], "op": r["op"], "error": r["error"], "round": r.get("round")}
                                             for r in outcomes if r.get("status") == "rejected"))
    partial = out_dir / "report.json.partial"
    partial.write_text(json.dumps(asdict(report), indent=2) + "\n", encoding="utf-8")
    os.replace(partial, out_dir / "report.json")  # last: the folder is complete once it exists
    if not keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return report


def _follow_inputs(report: RoundsReport, input_ids: set[str], outcomes: list[dict[str, Any]], out_ids: list[str]) -> None:
    """Fill the ``inputs_*`` counts: each input line's fate over all rounds, through provenance."""
    source_of: dict[str, str] = {}
    dropped: dict[str, str] = {}
    for record in outcomes:
        if record.get("id") is None:
            continue
        if "source_id" in record:
            source_of.setdefault(record["id"], record["source_id"])
        elif record.get("round") is not None and record["id"] in input_ids and record["status"] in ("filtered", "rejected"):
            dropped[record["id"]] = record["status"]

    def root_of(sample_id: str) -> str:
        seen = set()
        while sample_id not in input_ids and sample_id in source_of and sample_id not in seen:
            seen.add(sample_id)
            sample_id = source_of[sample_id]
        return sample_id

    report.kept_from_input = sum(1 for i in out_ids if i in input_ids)
    report.inputs_filtered = sum(1 for status in dropped.values() if status == "filtered")
    report.inputs_rejected = report.staging_rejected + sum(1 for status in dropped.values() if status == "rejected")
    report.inputs_replaced = len({root_of(i) for i in out_ids if i not in input_ids} & set(dropped))


def selects(where: RoundSelect, sample: Sample) -> bool:
    """Whether ``sample`` enters a round with selection ``where``."""
    if where.stat is not None:
        value = sample.stats.get(where.stat)
        if value is None:
            return False
        values = value if isinstance(value, list) else [value]
        inside = [isinstance(v, (int, float)) and not math.isnan(v) and where.min <= v <= where.max for v in values]
        if not values or not (any(inside) if where.any_or_all == "any" else all(inside)):
            return False
    if where.fraction is not None:
        digest = hashlib.sha256(f"{where.seed}:{sample.id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < where.fraction
    return True


RESULT_FILES = (SAMPLES, "outcomes.jsonl", "rejected.jsonl", "report.json")
RESULT_DIRS = ("images", ".resume")


def _clear_result(out_dir: Path) -> None:
    """Remove what an earlier (unfinished or other) run left in ``out_dir``; anything else there is an error later."""
    for name in RESULT_FILES:
        (out_dir / name).unlink(missing_ok=True)
    for name in RESULT_DIRS:
        shutil.rmtree(out_dir / name, ignore_errors=True)


def _stage(input_jsonl: Path, root: Path, staging: Path, outcomes: list[dict[str, Any]]) -> tuple[int, int, int]:
    """Copy (hard-link) the input into a content-addressed staging variant; bad lines and samples
    whose images fail the ingestion checks (``check_image``: unsafe path, symlink, missing, empty,
    truncated, undecodable, decompression bomb) are rejected here, by name and reason, before any round."""
    writer = VariantWriter(staging)
    staged = rejected = n_in = 0
    for item in read_jsonl(input_jsonl):
        n_in += 1
        if isinstance(item, BadLine):
            outcomes.append({"id": item.sample_id, "status": "rejected", "op": "reader", "error": item.error, "line": item.where, "round": None})
            rejected += 1
            continue
        problem = None
        for rel in item.images:
            try:
                check_image(root, rel)
            except (ImageError, OSError) as exc:
                problem = str(exc)
                break
        if problem is not None:
            outcomes.append({"id": item.id, "status": "rejected", "op": "ingest", "error": f"sample {item.id!r}: {problem}", "round": None})
            rejected += 1
            continue
        try:
            writer.add(item, root)
            staged += 1
        except (ImageError, OSError) as exc:
            writer.samples = [s for s in writer.samples if s.id != item.id]
            outcomes.append({"id": item.id, "status": "rejected", "op": "stage", "error": f"sample {item.id!r}: {exc}", "round": None})
            rejected += 1
    writer.close()
    return staged, rejected, n_in


def _merge(samples: list[Sample], selected: list[Sample], outputs: list[Sample], records: list[dict[str, Any]],
           root: Path, out_root: Path, target: Path) -> dict[str, int]:
    """Write bypassed samples and round outputs (each after its source's position) into ``target``."""
    selected_ids = {s.id for s in selected}
    source_of: dict[str, str] = {}
    for record in records:
        if "source_id" in record and record.get("id") is not None:
            source_of.setdefault(record["id"], record["source_id"])

    def root_of(sample_id: str) -> str:
        seen = set()
        while sample_id not in selected_ids:
            if sample_id in seen or sample_id not in source_of:
                raise RuntimeError(f"round output {sample_id!r} cannot be traced to an input of the round")
            seen.add(sample_id)
            sample_id = source_of[sample_id]
        return sample_id

    by_root: dict[str, list[Sample]] = {}
    for sample in outputs:
        by_root.setdefault(root_of(sample.id), []).append(sample)
    writer = VariantWriter(target)
    for sample in samples:
        if sample.id in selected_ids:
            for out in by_root.get(sample.id, []):
                writer.add(out, out_root)
        else:
            writer.add(sample, root)
    n_out = writer.close()
    inputs = [r for r in records if "source_id" not in r]
    dropped = {r["id"] for r in inputs if r["status"] in ("filtered", "rejected")}
    survivors = {root_of(s.id) for s in outputs if s.id not in selected_ids}
    created = [r for r in records if "source_id" in r]
    created_kept = sum(1 for s in outputs if s.id not in selected_ids)
    replaced = len(dropped & survivors)
    return dict(
        kept=sum(1 for s in outputs if s.id in selected_ids),
        filtered=sum(1 for r in inputs if r["status"] == "filtered"),
        rejected=sum(1 for r in inputs if r["status"] == "rejected"),
        created=len(created), created_kept=created_kept, replaced=replaced,
        added=created_kept - replaced, removed=len(dropped) - replaced, n_out=n_out,
    )


__all__ = ["SAMPLES", "RoundReport", "RoundsReport", "run_rounds", "selects"]
