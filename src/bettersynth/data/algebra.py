"""Dataset algebra: mix, repeat, cap and replace variants, each result a new variant with provenance.

Why: the challenge findings are recipes over whole datasets as much as over
samples — draw domain : general data by ratio, duplicate a small clean set
2–4×, cap the pretraining set at 200k with the challenge's seed, swap
re-synthesised samples in by id. Each operation writes a variant directory
(``samples.jsonl`` + content-addressed ``images/``) that DVC versions like any
other, and every sample it creates says where it came from in ``meta``.

Example::

    report = mix([Part(dir_a, 10), Part(dir_b, 1)], out_dir, total=1000, seed=0)
    report = repeat(clean_dir, out_dir, times=3)
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
from dataclasses import dataclass, field
from dataclasses import replace as with_fields
from pathlib import Path

from bettersynth.core.images import resolve_image
from bettersynth.core.sample import Sample
from bettersynth.data.jsonl import read_jsonl, write_samples
from bettersynth.data.provenance import source_id as provenance_source
from bettersynth.data.provenance import with_provenance

SAMPLES = "samples.jsonl"
CHALLENGE_CAP_SEED = 1024  # the Better Synth challenge's subsample seed


@dataclass(frozen=True)
class Part:
    """One source variant in a mix and its relative weight."""

    path: Path  # variant directory with samples.jsonl
    ratio: float  # relative share, e.g. 5 for 5 : 5 : 1


@dataclass
class AlgebraReport:
    op: str
    params: dict
    n_out: int  # samples written
    added: int = 0  # samples that did not exist in the first input
    replaced: int = 0  # samples swapped for another version
    removed: int = 0  # input samples left out
    sources: dict[str, int] = field(default_factory=dict)  # samples drawn per source


def load_variant(path: Path) -> list[Sample]:
    """The good samples of a variant; a bad line fails loudly (variants are outputs of checked steps)."""
    samples = []
    for item in read_jsonl(Path(path) / SAMPLES):
        if not isinstance(item, Sample):
            raise ValueError(f"{Path(path) / SAMPLES}: {item.error}")
        samples.append(item)
    return samples


def content_name(data: bytes, suffix: str) -> str:
    """The file name of an image in a variant: a sha256 prefix of its bytes (128 bits) and its suffix."""
    return f"{hashlib.sha256(data).hexdigest()[:32]}{suffix.lower()}"


def _with_provenance(sample: Sample, **provenance) -> Sample:
    """A copy with one more provenance record; other fields (and the id's JSON type) kept."""
    return with_fields(sample, images=list(sample.images), meta=with_provenance(sample.meta, **provenance), stats=dict(sample.stats))


class VariantWriter:
    """Writes samples with images stored once, named by content hash (so DVC stores each once too)."""

    def __init__(self, out_dir: Path) -> None:
        if out_dir.exists() and any(out_dir.iterdir()):
            raise ValueError(f"{out_dir}: output directory is not empty")
        self.out_dir = out_dir
        (out_dir / "images").mkdir(parents=True, exist_ok=True)
        self.samples: list[Sample] = []
        self.ids: set[str] = set()

    def add(self, sample: Sample, root: Path) -> None:
        if sample.id in self.ids:
            raise ValueError(f"sample id {sample.id!r} occurs twice in the result; give the sources distinct ids")
        self.ids.add(sample.id)
        images = [self._store(resolve_image(root, rel)) for rel in sample.images]
        self.samples.append(with_fields(sample, images=images))

    def _store(self, source: Path) -> str:
        rel = f"images/{content_name(source.read_bytes(), source.suffix)}"
        target = self.out_dir / rel
        if not target.exists():
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
        return rel

    def close(self) -> int:
        return write_samples(self.out_dir / SAMPLES, self.samples)


def mix(parts: list[Part], out_dir: Path, total: int | None = None, seed: int = 0) -> AlgebraReport:
    """Draw from several variants by ratio (without replacement), e.g. caption : interleaved : text = 5 : 5 : 1.

    ``total`` defaults to the largest total the ratios allow without repeating
    any sample; asking for more than a source holds is an error (use ``repeat``).
    """
    if not parts or any(p.ratio < 0 for p in parts) or sum(p.ratio for p in parts) <= 0:
        raise ValueError("mix needs at least one part and non-negative ratios with a positive sum")
    pools = [load_variant(p.path) for p in parts]
    weight = sum(p.ratio for p in parts)
    if total is None:
        total = int(min(len(pool) * weight / p.ratio for pool, p in zip(pools, parts) if p.ratio > 0))
    wanted = [round(total * p.ratio / weight) for p in parts]
    rng = random.Random(seed)
    writer = VariantWriter(Path(out_dir))
    report = AlgebraReport("mix", {"parts": [(str(p.path), p.ratio) for p in parts], "total": total, "seed": seed}, 0)
    for part, pool, count in zip(parts, pools, wanted):
        if count > len(pool):
            raise ValueError(f"mix: {part.path} holds {len(pool)} samples but ratio {part.ratio} asks for {count}")
        for sample in sorted(rng.sample(pool, count), key=lambda s: s.id):
            writer.add(_with_provenance(sample, op="mix", source=str(part.path), source_id=sample.id), part.path)
        report.sources[str(part.path)] = count
    report.n_out = writer.close()
    report.added = report.n_out - report.sources.get(str(parts[0].path), 0)
    return report


def repeat(source: Path, out_dir: Path, times: int, ids: set[str] | None = None) -> AlgebraReport:
    """Duplicate samples (all, or those in ``ids``) so each appears ``times`` times; copies get ``#rep<k>`` ids."""
    if times < 1:
        raise ValueError(f"times must be >= 1, got {times}")
    samples = load_variant(source)
    writer = VariantWriter(Path(out_dir))
    added = 0
    for sample in samples:
        writer.add(sample, source)
        if ids is None or sample.id in ids:
            for k in range(1, times):
                copy = _with_provenance(sample, op="repeat", source_id=sample.id, copy=k)
                writer.add(with_fields(copy, id=f"{sample.id}#rep{k}"), source)
                added += 1
    n_out = writer.close()
    return AlgebraReport("repeat", {"times": times, "subset": None if ids is None else len(ids)}, n_out, added=added)


def cap(source: Path, out_dir: Path, n: int, seed: int = CHALLENGE_CAP_SEED) -> AlgebraReport:
    """A seeded random subsample of at most ``n`` samples (the challenge's 200k cap, seed 1024)."""
    samples = load_variant(source)
    kept = samples if len(samples) <= n else random.Random(seed).sample(samples, n)
    writer = VariantWriter(Path(out_dir))
    for sample in sorted(kept, key=lambda s: s.id):
        writer.add(sample, source)
    n_out = writer.close()
    return AlgebraReport("cap", {"n": n, "seed": seed}, n_out, removed=len(samples) - n_out)


def replace(base: Path, replacement: Path, out_dir: Path, id_key: str = "source_id") -> AlgebraReport:
    """Swap samples of ``base`` for their re-synthesised versions in ``replacement``.

    A replacement sample names the base sample it replaces by its own id, by
    ``meta[id_key]``, or by the source id of its latest provenance record (as
    synthesis ops write it); unmatched replacements are an error.
    """
    originals = load_variant(base)
    by_target: dict[str, Sample] = {}
    known = {s.id for s in originals}
    for sample in load_variant(replacement):
        target = sample.id if sample.id in known else str(sample.meta.get(id_key) or provenance_source(sample) or "")
        if target not in known:
            raise ValueError(f"replace: {replacement / SAMPLES}: sample {sample.id!r} matches no sample of {base}")
        by_target[target] = sample
    writer = VariantWriter(Path(out_dir))
    for sample in originals:
        new = by_target.get(sample.id)
        if new is None:
            writer.add(sample, base)
        else:
            marked = _with_provenance(new, op="replace", source_id=sample.id, source=str(replacement))
            writer.add(with_fields(marked, id=sample.id, json_id=sample.json_id), replacement)
    n_out = writer.close()
    return AlgebraReport("replace", {"replacement": str(replacement)}, n_out, replaced=len(by_target))
