"""Deterministic shards of a benchmark, so evaluation can fan out over GPUs and merge exactly.

Why: a shard must be a pure function of (benchmark, shard_index, num_shards),
so re-running a failed shard redoes the same questions; and questions scored
together (MMBench's CircularEval rotations) must land in one shard, or no shard
could tell whether the whole group was right.

Example::

    ids = shard_question_ids(bench, shard_index=1, num_shards=4)
    part = bench.score(generate_answers(model_dir, bench.items(ids)), allow_missing=True)
"""

from __future__ import annotations

from bettersynth.eval.benchmark import Benchmark


def check_shard(shard_index: int, num_shards: int) -> None:
    """Raise ``ValueError`` naming the field when the pair cannot describe a shard."""
    if num_shards < 1:
        raise ValueError(f"num_shards: must be >= 1, got {num_shards}")
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index: must be in [0, {num_shards}), got {shard_index}")


def shard_question_ids(benchmark: Benchmark, shard_index: int, num_shards: int) -> list[str]:
    """Question ids of one shard: a contiguous run of whole groups, in benchmark order.

    Groups (``benchmark.group_key``) are ordered by first appearance and split
    into ``num_shards`` runs whose sizes differ by at most one group; a shard
    can be empty when there are fewer groups than shards.
    """
    check_shard(shard_index, num_shards)
    ids = benchmark.question_ids()
    groups = list(dict.fromkeys(benchmark.group_key(q) for q in ids))
    start, stop = shard_index * len(groups) // num_shards, (shard_index + 1) * len(groups) // num_shards
    chosen = set(groups[start:stop])
    return [q for q in ids if benchmark.group_key(q) in chosen]
