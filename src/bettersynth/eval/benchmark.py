"""What every benchmark offers: items to answer, and a score for the answers.

Why: the generation loop, sharding and result files are the same for TextVQA
and MMBench; only loading, prompting and scoring differ. Scores are rebuilt
from per-question records, so shards merge to exactly the unsharded numbers.

Example::

    bench = BENCHMARKS.get("mmbench")(tsv_path="mmbench_dev_en.tsv")
    result = bench.score({item.question_id: "A" for item in bench.items()})
    result.write("out/mmbench")
"""

from __future__ import annotations

import csv
import json
import math
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Collection, Iterable, Union

from PIL import Image

from bettersynth.core.registry import Registry
from bettersynth.data.jsonl import write_jsonl


@dataclass(frozen=True)
class EvalItem:
    """One question to put to a model."""

    question_id: str
    image: Union[Image.Image, Path]  # decoded image, or a file to open
    prompt: str  # user text without the image token or chat template


@dataclass
class EvalResult:
    """Metrics (percent), one record per question and breakdown tables."""

    benchmark: str
    metrics: dict[str, float]
    records: list[dict]
    tables: dict[str, list[dict]] = field(default_factory=dict)

    def write(self, out_dir: str | Path) -> Path:
        """Write ``metrics.json``, ``predictions.jsonl`` and ``<table>.csv``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(self.metrics, indent=2, sort_keys=True) + "\n")
        write_jsonl(out / "predictions.jsonl", self.records)
        for name, rows in self.tables.items():
            with (out / f"{name}.csv").open("w", newline="", encoding="utf-8") as handle:
                columns = list(dict.fromkeys(key for row in rows for key in row))
                writer = csv.DictWriter(handle, fieldnames=columns)
                writer.writeheader()
                writer.writerows(rows)
        return out

    @classmethod
    def read(cls, result_dir: str | Path, benchmark: str | None = None) -> "EvalResult":
        """Load what ``write`` wrote; the benchmark name defaults to the folder name.

        Metrics and tables are rebuilt from the records, so a result read back
        scores exactly as the one written.
        """
        folder = Path(result_dir)
        name = benchmark or folder.name
        path = folder / "predictions.jsonl"
        if not path.is_file():
            raise ValueError(f"{folder}: no predictions.jsonl (not an eval result folder)")
        records = []
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from None
                if not isinstance(record, dict) or "question_id" not in record:
                    raise ValueError(f"{path}:{number}: missing field 'question_id'")
                records.append(record)
        metrics, tables = BENCHMARKS.get(name).aggregate(records)
        return cls(name, metrics, records, tables)


def percent_mean(values: Iterable[float]) -> float:
    """Mean in percent; ``fsum`` keeps it independent of record order (shards)."""
    values = list(values)
    return 100.0 * math.fsum(values) / len(values)


class Benchmark(ABC):
    """A benchmark: ``items()`` to generate for, ``score()`` to grade the outputs."""

    name: ClassVar[str]

    @abstractmethod
    def items(self, question_ids: Collection[str] | None = None) -> list[EvalItem]:
        """Questions in ``question_ids()`` order; only the given ids when ``question_ids`` is set."""

    @abstractmethod
    def score_one(self, question_id: str, output: str) -> dict:
        """Record for one question: question_id, prompt, output, answer, score, ..."""

    @classmethod
    @abstractmethod
    def aggregate(cls, records: list[dict]) -> tuple[dict[str, float], dict[str, list[dict]]]:
        """Metrics and tables from records alone (so merged shards score the same)."""

    @abstractmethod
    def question_ids(self) -> list[str]:
        """Ids of all questions, in ``items()`` order, without decoding images."""

    def group_key(self, question_id: str) -> str:
        """Questions with one key are scored together and never split across shards."""
        return question_id

    def score(self, predictions: dict[str, str], allow_missing: bool = False) -> EvalResult:
        """Grade raw model outputs keyed by question id.

        ``allow_missing`` is for shards: questions without a prediction are
        skipped instead of failing the run.
        """
        known = self.question_ids()
        unknown = set(predictions) - set(known)
        if unknown:
            raise ValueError(f"predictions: {len(unknown)} unknown question ids, e.g. {sorted(unknown)[:3]}")
        missing = [q for q in known if q not in predictions]
        if missing and not allow_missing:
            raise ValueError(f"predictions: {len(missing)} questions have no prediction, e.g. {missing[:3]}")
        records = [self.score_one(q, predictions[q]) for q in known if q in predictions]
        metrics, tables = self.aggregate(records)
        return EvalResult(self.name, metrics, records, tables)


BENCHMARKS: Registry[type[Benchmark]] = Registry("benchmark", base=Benchmark)


def merge_results(parts: list[EvalResult], order: list[str] | None = None) -> EvalResult:
    """Merge shard results by re-aggregating their records.

    With ``order`` (the benchmark's ``question_ids()``), records come back in
    that order and every id must be present once: the merge of a complete set
    of shards is then record for record the unsharded result.
    """
    if not parts:
        raise ValueError("parts: nothing to merge")
    names = {part.benchmark for part in parts}
    if len(names) != 1:
        raise ValueError(f"parts: results of different benchmarks {sorted(names)}")
    records = [record for part in parts for record in part.records]
    counts = Counter(record["question_id"] for record in records)
    dupes = sorted(q for q, n in counts.items() if n > 1)
    if dupes:
        raise ValueError(f"parts: question ids scored twice, e.g. {dupes[:3]}")
    if order is not None:
        position = {q: n for n, q in enumerate(order)}
        unknown = sorted(set(counts) - set(position))
        if unknown:
            raise ValueError(f"parts: {len(unknown)} question ids not in the benchmark, e.g. {unknown[:3]}")
        missing = [q for q in order if q not in counts]
        if missing:
            raise ValueError(f"parts: {len(missing)} questions in no shard, e.g. {missing[:3]}")
        records.sort(key=lambda record: position[record["question_id"]])
    name = names.pop()
    metrics, tables = BENCHMARKS.get(name).aggregate(records)
    return EvalResult(name, metrics, records, tables)
