"""Soup methods through make_soup: registry, uniform, weighted, maximum, greedy."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bettersynth.soup import SOUPS, make_soup

torch.set_num_threads(1)

# 1-D "models" whose held-out score is minus their distance to the origin, so every
# greedy decision can be worked out by hand. Values are exact in fp32.
VALUES = {"c": (4.0, 0.0), "a": (1.0, 0.0), "d": (-5.0, 0.0), "b": (-3.0, 0.0)}


def weights_of(path: Path) -> torch.Tensor:
    return load_file(path / "model.safetensors")["w"]


class Recorder:
    """evaluate(): -||w||, logging which directories it was asked about."""

    def __init__(self) -> None:
        self.calls: list[Path] = []

    def __call__(self, path: Path) -> float:
        self.calls.append(Path(path))
        return -float(torch.linalg.vector_norm(weights_of(path)))


@pytest.fixture
def points(handmade) -> list[Path]:
    return [handmade(name, {"w": torch.tensor(value)}) for name, value in VALUES.items()]


def test_soup_registry_knows_methods_and_suggests():
    assert SOUPS.names() == ["greedy", "maximum", "uniform", "weighted"]
    with pytest.raises(ValueError, match="did you mean 'greedy'"):
        make_soup("greddy", [], "x")


def test_soup_greedy_ge_accepts_ties(points, tmp_path):
    evaluate = Recorder()
    out = tmp_path / "out" / "soup"
    result = make_soup("greedy", points, out, evaluate=evaluate)
    # sorted by own score: a(-1), b(-3), c(-4), d(-5)
    # a+b -> (-1, 0): -1 == -1, kept under "ge"; a+b+c -> (2/3, 0): -0.667 > -1, kept;
    # a+b+c+d -> (-0.75, 0): -0.75 < -0.667, dropped
    assert [Path(s["candidate"]).name for s in result.steps] == ["a", "b", "c", "d"]
    assert [s["accepted"] for s in result.steps] == [True, True, True, False]
    assert [s["index"] for s in result.steps] == [1, 3, 0, 2]
    assert result.steps[1]["score"] == -1.0
    assert result.steps[3]["score"] == pytest.approx(-0.75)
    assert result.weights == pytest.approx([1 / 3, 1 / 3, 0.0, 1 / 3])
    assert result.score == pytest.approx(-2 / 3)
    assert result.method == "greedy" and result.out_dir == out
    assert torch.allclose(weights_of(out), torch.tensor([2 / 3, 0.0]), atol=1e-7)
    assert len(evaluate.calls) == 4 + 3  # each ingredient, then each trial soup
    assert sorted(p.name for p in out.parent.iterdir()) == ["soup"]  # no scratch left


def test_soup_greedy_gt_rejects_ties(points, tmp_path):
    out = tmp_path / "out" / "soup"
    result = make_soup("greedy", points, out, evaluate=Recorder(), accept_if="gt")
    # a+b ties at -1 (rejected under "gt"); a+c -> 2.5 and a+d -> -2 are worse
    assert [s["accepted"] for s in result.steps] == [True, False, False, False]
    assert result.weights == [0.0, 1.0, 0.0, 0.0]
    assert result.score == -1.0
    assert torch.equal(weights_of(out), torch.tensor(VALUES["a"]))
    assert sorted(p.name for p in out.parent.iterdir()) == ["soup"]


def test_soup_greedy_follows_given_scores(points, tmp_path):
    evaluate = Recorder()
    out = tmp_path / "out" / "soup"
    # claim c is best: order c(-1), b(-3), a(-4), d(-5)
    # c+b -> (0.5, 0): -0.5 >= -1, kept; c+b+a -> 2/3: dropped; c+b+d -> -4/3: dropped
    result = make_soup("greedy", points, out, scores=[-1.0, -4.0, -5.0, -3.0], evaluate=evaluate)
    assert [Path(s["candidate"]).name for s in result.steps] == ["c", "b", "a", "d"]
    assert [s["accepted"] for s in result.steps] == [True, True, False, False]
    assert result.weights == [0.5, 0.0, 0.0, 0.5]
    assert result.score == -0.5
    assert torch.equal(weights_of(out), torch.tensor([0.5, 0.0]))
    assert len(evaluate.calls) == 3 and not set(evaluate.calls) & set(points)


def test_soup_greedy_on_tiny_llamas_equals_uniform(llamas, load_state, tmp_path):
    paths = [llamas["fp32_0"], llamas["sharded_1"]]
    flat = make_soup("greedy", paths, tmp_path / "greedy", evaluate=lambda path: 0.0, max_shard_bytes=10_000)
    uniform = make_soup("uniform", paths, tmp_path / "uniform", max_shard_bytes=10_000)
    assert flat.weights == uniform.weights == [0.5, 0.5]
    got, want = load_state(flat.out_dir), load_state(uniform.out_dir)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert (flat.out_dir / "model.safetensors.index.json").is_file()


def test_soup_greedy_refusals(points, tmp_path):
    with pytest.raises(ValueError, match="evaluate"):
        make_soup("greedy", points, tmp_path / "soup", scores=[1, 2, 3, 4])
    with pytest.raises(ValueError, match="accept_if"):
        make_soup("greedy", points, tmp_path / "soup", evaluate=Recorder(), accept_if="gte")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "x").write_text("x")
    evaluate = Recorder()
    with pytest.raises(ValueError, match="out_dir"):
        make_soup("greedy", points, taken, evaluate=evaluate)
    assert evaluate.calls == []


def test_soup_uniform_and_weighted(points, tmp_path):
    evaluate = Recorder()
    uniform = make_soup("uniform", points, tmp_path / "u", evaluate=evaluate)
    assert uniform.weights == [0.25] * 4
    assert torch.allclose(weights_of(uniform.out_dir), torch.tensor([-0.75, 0.0]))
    assert uniform.score == pytest.approx(-0.75) and evaluate.calls == [tmp_path / "u"]
    weighted = make_soup("weighted", points, tmp_path / "w", weights=[1, 1, 0, 2])
    assert weighted.weights == [0.25, 0.25, 0.0, 0.5] and weighted.score is None
    assert torch.allclose(weights_of(weighted.out_dir), torch.tensor([(4 + 1 - 6) / 4, 0.0]))
    with pytest.raises(ValueError, match="weights"):
        make_soup("weighted", points, tmp_path / "w2")
    with pytest.raises(ValueError, match="weights"):
        make_soup("uniform", points, tmp_path / "u2", weights=[1, 1, 1, 1])


def test_soup_maximum_copies_best(points, tmp_path):
    by_scores = make_soup("maximum", points, tmp_path / "m1", scores=[0.1, 0.7, 0.7, 0.2])
    assert by_scores.weights == [0.0, 1.0, 0.0, 0.0] and by_scores.score == 0.7  # first of the tie
    assert (tmp_path / "m1" / "model.safetensors").read_bytes() == (points[1] / "model.safetensors").read_bytes()
    by_eval = make_soup("maximum", points, tmp_path / "m2", evaluate=Recorder())
    assert by_eval.weights == [0.0, 1.0, 0.0, 0.0] and by_eval.score == -1.0
    with pytest.raises(ValueError, match="scores"):
        make_soup("maximum", points, tmp_path / "m3")
    with pytest.raises(ValueError, match="scores"):
        make_soup("maximum", points, tmp_path / "m3", scores=[1.0, float("nan"), 0.0, 0.0])
