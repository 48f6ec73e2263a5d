"""Streaming in chunks keeps cross-sample ops right: state carried across chunks (and across a
resume), and a first pass for ops that need the whole dataset."""

from __future__ import annotations

import hashlib
import logging
import statistics

import pytest
from robust_data import good_record, write_lines, write_png

from bettersynth.core.sample import Sample, caption_text, clean_text
from bettersynth.ops import OPERATORS, Filter, OpConfig
from bettersynth.recipes.recipe import Recipe
from bettersynth.recipes.runner import run_recipe


class CaptionDedupFilter(Filter):
    """Drops a sample whose caption an earlier sample had: state that spans chunks."""

    name = "test_caption_dedup_filter"
    stat_key = "caption_seen_before"
    min_field = max_field = "keep_value"

    class Config(OpConfig):
        keep_value: int = 0
        crash_at: str = ""  # raise on this id in the real pass (its 2nd sighting, after the first pass), once

    crashed = False
    sightings = 0

    def __init__(self, config=None, context=None):
        super().__init__(config, context)
        self.seen: set[str] = set()

    def compute_stats(self, batch):
        out = []
        for sample in batch:
            if sample.id == self.config.crash_at and not CaptionDedupFilter.crashed:
                CaptionDedupFilter.sightings += 1
                if CaptionDedupFilter.sightings == 2:
                    CaptionDedupFilter.crashed = True
                    raise RuntimeError("simulated crash")
            key = hashlib.sha1(clean_text(sample.text).encode()).hexdigest()
            out.append(int(key in self.seen))
            self.seen.add(key)
        return out

    def state_dict(self):
        return {"seen": sorted(self.seen)}

    def load_state_dict(self, state):
        self.seen = set(state["seen"])


class ShortestHalfFilter(Filter):
    """Keeps captions no longer than the dataset's median length: needs the whole dataset first."""

    name = "test_shortest_half_filter"
    stat_key = "caption_chars"
    min_field, max_field = "low", "high"

    class Config(OpConfig):
        low: int = 0
        high: int = -1  # set by the first pass

    def __init__(self, config=None, context=None):
        super().__init__(config, context)
        self.lengths: list[int] = []
        self.high = None

    def compute_stats(self, batch):
        return [len(clean_text(s.text)) for s in batch]

    def observe(self, batch: list[Sample]) -> None:
        self.lengths += self.compute_stats(batch)

    def end_observation(self) -> None:
        self.high = statistics.median_low(self.lengths)

    def bounds(self):
        assert self.high is not None, "decided before the first pass"
        return self.config.low, self.high


@pytest.fixture(autouse=True)
def test_ops(monkeypatch):
    for op in (CaptionDedupFilter, ShortestHalfFilter):
        monkeypatch.setitem(OPERATORS._entries, op.name, op)
    CaptionDedupFilter.crashed, CaptionDedupFilter.sightings = False, 0


@pytest.fixture
def data(tmp_path):
    """40 samples, 7 distinct captions (lengths differ), so dedup and the median both span chunks."""
    root = tmp_path / "data"
    records = []
    for i in range(40):
        write_png(root / "imgs" / f"{i:05d}.png", seed=i)
        records.append({**good_record(i), "text": caption_text("a bus " + "very " * (i % 7) + "long")})
    write_lines(root / "samples.jsonl", records)
    return root


def _recipe(crash_at: str = "") -> Recipe:
    return Recipe.from_dict({"process": [{CaptionDedupFilter.name: {"crash_at": crash_at}}, {ShortestHalfFilter.name: {}}]})


def test_robust_state_and_first_pass_give_the_same_result_in_any_chunking(data, tmp_path):
    reports = {}
    for size in (3, 10_000):
        reports[size] = run_recipe(_recipe(), data / "samples.jsonl", data, tmp_path / f"out{size}", chunk_size=size)
    assert (tmp_path / "out3" / "samples.jsonl").read_bytes() == (tmp_path / "out10000" / "samples.jsonl").read_bytes()
    dedup, shortest = reports[3].per_op
    assert (dedup["in"], dedup["kept"], dedup["filtered"]) == (40, 7, 33)  # 7 distinct captions
    assert shortest["in"] == 7 and shortest["kept"] == 4  # lengths 0..6 "very"s: median_low keeps 4


def test_robust_resume_restores_carried_state(data, tmp_path, caplog):
    CaptionDedupFilter.crashed = True  # the reference does not crash
    reference = run_recipe(_recipe("s00020"), data / "samples.jsonl", data, tmp_path / "ref", chunk_size=3)
    CaptionDedupFilter.crashed = False
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_recipe(_recipe("s00020"), data / "samples.jsonl", data, out, chunk_size=3)
    with caplog.at_level(logging.INFO, logger="bettersynth"):
        resumed = run_recipe(_recipe("s00020"), data / "samples.jsonl", data, out, chunk_size=3)
    assert "resuming after 6 completed chunk(s)" in caplog.text  # s00020 is in the 7th chunk of 3
    assert resumed == reference
    for name in ("samples.jsonl", "outcomes.jsonl", "rejected.jsonl", "report.json"):
        assert (out / name).read_bytes() == (tmp_path / "ref" / name).read_bytes()
