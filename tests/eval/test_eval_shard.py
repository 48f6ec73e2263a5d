"""Shards: a deterministic partition of whole CircularEval groups; results read back and merge in order."""

import random
from pathlib import Path

import pytest

from bettersynth.eval import EvalResult, MMBench, TextVQA, merge_results, shard_question_ids


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_eval_shards_partition_whole_groups(mmbench_tsv: Path, k: int) -> None:
    bench = MMBench(mmbench_tsv)
    shards = [shard_question_ids(bench, i, k) for i in range(k)]
    flat = [q for shard in shards for q in shard]
    assert flat == bench.question_ids()  # contiguous, in benchmark order, nothing lost or doubled
    owner = {}
    for i, shard in enumerate(shards):
        for q in shard:
            assert owner.setdefault(int(q) % 1_000_000, i) == i  # a group never straddles shards
    sizes = sorted(len({int(q) % 1_000_000 for q in shard}) for shard in shards)
    assert sizes[-1] - sizes[0] <= 1
    assert shards == [shard_question_ids(MMBench(mmbench_tsv), i, k) for i in range(k)]
    if k > 3:  # three groups only: the extra shards are empty
        assert [] in shards


def test_eval_shard_arguments(textvqa_files) -> None:
    bench = TextVQA(*textvqa_files)
    assert shard_question_ids(bench, 1, 3) == ["34603"]
    with pytest.raises(ValueError, match="num_shards: must be >= 1"):
        shard_question_ids(bench, 0, 0)
    with pytest.raises(ValueError, match=r"shard_index: must be in \[0, 2\)"):
        shard_question_ids(bench, 2, 2)


def test_eval_items_subset_keeps_order(mmbench_tsv: Path) -> None:
    bench = MMBench(mmbench_tsv)
    wanted = ["2", "1000000", "0"]
    assert [item.question_id for item in bench.items(wanted)] == ["0", "1000000", "2"]


def test_eval_result_read_round_trip(tmp_path: Path, mmbench_tsv: Path) -> None:
    bench = MMBench(mmbench_tsv)
    rng = random.Random(0)
    result = bench.score({q: rng.choice("ABCD") for q in bench.question_ids()})
    back = EvalResult.read(result.write(tmp_path / "mmbench"))
    assert (back.benchmark, back.metrics, back.records, back.tables) == \
        (result.benchmark, result.metrics, result.records, result.tables)
    (tmp_path / "bad").mkdir()
    with pytest.raises(ValueError, match="no predictions.jsonl"):
        EvalResult.read(tmp_path / "bad", "mmbench")
    (tmp_path / "bad" / "predictions.jsonl").write_text('{"question_id": "0"}\n{"score": 1}\n')
    with pytest.raises(ValueError, match=r"predictions.jsonl:2: missing field 'question_id'"):
        EvalResult.read(tmp_path / "bad", "mmbench")


def test_eval_merge_in_benchmark_order(mmbench_tsv: Path) -> None:
    bench = MMBench(mmbench_tsv)
    predictions = {q: "B" for q in bench.question_ids()}
    whole = bench.score(predictions)
    parts = [bench.score({q: predictions[q] for q in shard_question_ids(bench, i, 2)}, allow_missing=True)
             for i in range(2)]
    merged = merge_results(parts[::-1], order=bench.question_ids())
    assert merged.records == whole.records and merged.metrics == whole.metrics
    with pytest.raises(ValueError, match="parts: 5 questions in no shard"):
        merge_results([parts[0]], order=bench.question_ids())
    with pytest.raises(ValueError, match="not in the benchmark"):
        merge_results(parts, order=bench.question_ids()[1:])
