"""Score cache: thresholds re-run from the cache; anything a score depends on recomputes it."""

from pathlib import Path

import pytest
from ops_testutil import write_image, write_jsonl

from bettersynth.ops import ImageTextSimilarityFilter
from bettersynth.recipes.recipe import Recipe
from bettersynth.recipes.runner import run_recipe


def _rec(i, text="a red bus on the street"):
    return {"id": str(i), "text": f"<__dj__image> {text} <|__dj__eoc|>", "images": [f"imgs/{i}.png"]}


@pytest.fixture
def dataset(tmp_path) -> tuple[Path, Path]:
    root = tmp_path / "data"
    for i in range(6):
        write_image(root / "imgs" / f"{i}.png", seed=i)
    (root / "imgs" / "5.png").write_bytes(b"broken")
    return write_jsonl(tmp_path / "in.jsonl", [_rec(i) for i in range(6)]), root


def sim(**params) -> Recipe:
    return Recipe.from_dict({"process": [{"image_text_similarity_filter": {"hf_clip": "clip", **params}}]})


def run(r, dataset, tmp_path, name):
    return run_recipe(r, dataset[0], dataset[1], tmp_path / name, model_root=dataset[1].parent / "models", num_workers=0)


@pytest.fixture
def models(model_root, dataset):
    link = dataset[1].parent / "models"
    link.symlink_to(model_root, target_is_directory=True)
    return link


def stats(out: Path) -> dict[str, list[float]]:
    import json

    return {r["id"]: r["__dj__stats__"]["image_text_similarity"] for r in map(json.loads, (out / "samples.jsonl").read_text().splitlines())}


def test_ops_score_cache_threshold_change_recomputes_nothing(models, dataset, tmp_path, monkeypatch, caplog):
    first = run(sim(min_score=-1.0), dataset, tmp_path, "a")
    # the corrupt image is rejected at ingestion: it never reaches the model, so 5 scores are computed
    assert (first.cache_hits, first.cache_misses, first.kept, first.rejected) == (0, 5, 5, 1)
    scores = stats(tmp_path / "a")
    cut = sorted(v[0] for v in scores.values())[2]

    def boom(self, batch):
        raise AssertionError(f"recomputed {[s.id for s in batch]}")

    # A threshold-only rerun reads every score from the cache (the corrupt sample is refused before the model).
    calls = []
    original = ImageTextSimilarityFilter.compute_stats
    monkeypatch.setattr(ImageTextSimilarityFilter, "compute_stats", lambda self, b: calls.append([s.id for s in b]) or original(self, b))
    with caplog.at_level("INFO"):
        second = run(sim(min_score=cut, max_score=0.99, any_or_all="all"), dataset, tmp_path, "b")
    assert calls in ([], [[]])
    assert (second.cache_hits, second.cache_misses, second.rejected) == (5, 0, 1)
    assert second.per_op[0]["cache_hits"] == 5
    assert second.kept == sum(1 for v in scores.values() if cut <= v[0] <= 0.99) == 3
    assert stats(tmp_path / "b") == {k: v for k, v in scores.items() if cut <= v[0]}
    assert "all 5 scores read from the cache, nothing recomputed" in caplog.text

    # Without the broken sample, a threshold-only rerun touches no model at all and says so.
    monkeypatch.setattr(ImageTextSimilarityFilter, "compute_stats", boom)
    write_jsonl(dataset[0], [_rec(i) for i in range(5)])
    caplog.clear()
    with caplog.at_level("INFO"):
        third = run(sim(min_score=0.5), dataset, tmp_path, "c")
    assert (third.cache_hits, third.cache_misses) == (5, 0)
    assert "nothing recomputed" in caplog.text


def test_ops_score_cache_key_follows_what_the_score_depends_on(models, dataset, tmp_path):
    run(sim(min_score=-1.0), dataset, tmp_path, "a")
    before = stats(tmp_path / "a")
    # new image bytes for one sample, new text for another: only those two are recomputed
    write_image(dataset[1] / "imgs" / "0.png", seed=99)
    write_jsonl(dataset[0], [_rec(0), _rec(1, "a blue dog"), _rec(2), _rec(3), _rec(4)])
    again = run(sim(min_score=-1.0), dataset, tmp_path, "b")
    assert (again.cache_hits, again.cache_misses) == (3, 2)
    after = stats(tmp_path / "b")
    assert after["0"] != before["0"] and after["1"] != before["1"] and after["2"] == before["2"]
    # a scoring setting (flip) is part of the key; thresholds are not
    flipped = run(sim(min_score=-1.0, horizontal_flip=True), dataset, tmp_path, "c")
    assert (flipped.cache_hits, flipped.cache_misses) == (0, 5)


def test_ops_score_cache_off_by_recipe(models, dataset, tmp_path, isolated_score_cache):
    r = Recipe.from_dict({"use_cache": False, "process": [{"image_text_similarity_filter": {"hf_clip": "clip", "min_score": -1.0}}]})
    run(r, dataset, tmp_path, "a")
    report = run(r, dataset, tmp_path, "b")
    assert (report.cache_hits, report.cache_misses) == (0, 0)
    assert not isolated_score_cache.exists()
