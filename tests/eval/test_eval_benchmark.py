"""Registry, result files, and shards merging to exactly the unsharded numbers."""

import csv
import json
import random
from pathlib import Path

import pytest

from bettersynth.eval import BENCHMARKS, EvalResult, MMBench, TextVQA, merge_results


def test_eval_registry() -> None:
    assert BENCHMARKS.names() == ["mmbench", "textvqa"]
    for name in BENCHMARKS.names():
        assert BENCHMARKS.get(name).name == name
    with pytest.raises(ValueError, match="did you mean 'mmbench'"):
        BENCHMARKS.get("mmbnech")


def _random_outputs(ids: list[str], choices: list[str], seed: int) -> dict[str, str]:
    rng = random.Random(seed)
    return {q: rng.choice(choices) for q in ids}


def _shard(bench, predictions: dict[str, str], k: int) -> EvalResult:
    ids = [item.question_id for item in bench.items()]
    size = -(-len(ids) // k)
    parts = [bench.score({q: predictions[q] for q in ids[i:i + size]}, allow_missing=True)
             for i in range(0, len(ids), size)]
    # reversed on purpose: shard order must not matter for the numbers
    return merge_results(parts[::-1])


@pytest.mark.parametrize("k", [2, 3, 4])
def test_eval_sharded_equals_unsharded_mmbench(mmbench_tsv: Path, k: int) -> None:
    bench = MMBench(mmbench_tsv)
    predictions = _random_outputs(bench.question_ids(), ["A", "B", "The answer is C", "yes", "no"], seed=k)
    whole = bench.score(predictions)
    merged = _shard(bench, predictions, k)
    assert merged.metrics == whole.metrics and merged.tables == whole.tables
    assert sorted(r["question_id"] for r in merged.records) == sorted(r["question_id"] for r in whole.records)
    assert 0 < len({r["group"] for r in merged.records}) <= 3


@pytest.mark.parametrize("k", [2, 3])
def test_eval_sharded_equals_unsharded_textvqa(textvqa_files, k: int) -> None:
    bench = TextVQA(*textvqa_files)
    predictions = {"34602": "dakota", "34603": "Copenhagen", "34604": "two"}
    whole = bench.score(predictions)
    assert whole.metrics["textvqa_accuracy"] == pytest.approx(100 * (0.9 + 0.3 + 1.0) / 3)
    assert _shard(bench, predictions, k).metrics == whole.metrics


def test_eval_score_checks_ids(textvqa_files) -> None:
    bench = TextVQA(*textvqa_files)
    with pytest.raises(ValueError, match="predictions: 1 questions have no prediction"):
        bench.score({"34602": "a", "34603": "b"})
    with pytest.raises(ValueError, match="predictions: 1 unknown question ids"):
        bench.score({"34602": "a", "34603": "b", "34604": "c", "999": "d"})
    part = bench.score({"34602": "a"}, allow_missing=True)
    with pytest.raises(ValueError, match="parts: question ids scored twice"):
        merge_results([part, part])
    with pytest.raises(ValueError, match="parts: nothing to merge"):
        merge_results([])


def test_eval_merge_rejects_mixed_benchmarks(textvqa_files, mmbench_tsv: Path) -> None:
    a = TextVQA(*textvqa_files).score({"34602": "a"}, allow_missing=True)
    b = MMBench(mmbench_tsv).score({"0": "A"}, allow_missing=True)
    with pytest.raises(ValueError, match="different benchmarks"):
        merge_results([a, b])


def test_eval_result_write(tmp_path: Path, mmbench_tsv: Path) -> None:
    bench = MMBench(mmbench_tsv)
    result = bench.score({q: "A" for q in bench.question_ids()})
    out = result.write(tmp_path / "out")
    assert json.loads((out / "metrics.json").read_text()) == result.metrics
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == result.records
    assert {"question_id", "prompt", "output", "answer", "score"} <= set(result.records[0])
    with (out / "mmbench_category.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["category"] for row in rows] == ["colour", "count", "ocr"]
    assert float(rows[0]["circular"]) == result.tables["mmbench_category"][0]["circular"]
