"""The proxy scorer: a CLIPModel the similarity filter loads like any CLIP, and that ranks lies low."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from bettersynth.data.jsonl import read_jsonl
from bettersynth.recipes.recipe import Recipe
from bettersynth.recipes.runner import run_recipe
from bettersynth_demo.proxy.audit import scorer_auc
from bettersynth_demo.proxy.scorer import (
    ScorerConfig,
    pair_similarities,
    roc_auc,
    threshold_from_clean,
    train_scorer,
)
from bettersynth_demo.proxy.world import (
    ProxyWorldConfig,
    build_proxy_world,
    default_world,
    pretraining_corpus,
    pretraining_texts,
    read_pairs,
)
from bettersynth_demo.world import WorldConfig

FAST = ScorerConfig(hidden_size=32, layers=1, heads=2, projection_dim=32, epochs=2, batch_size=16)


def test_roc_auc_matches_pair_counting() -> None:
    assert roc_auc([3, 4], [1, 2]) == 1.0
    assert roc_auc([1, 2], [3, 4]) == 0.0
    assert roc_auc([1, 3], [2, 2]) == 0.5  # one pair won, one lost
    assert roc_auc([2], [2]) == 0.5  # a tie counts half
    with pytest.raises(ValueError):
        roc_auc([], [1.0])


def test_threshold_keeps_the_asked_share_of_clean_scores() -> None:
    scores = [i / 100 for i in range(100)]
    assert threshold_from_clean(scores, keep=0.95) == 0.05
    assert sum(s >= threshold_from_clean(scores, keep=0.95) for s in scores) == 95


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    config = ProxyWorldConfig(
        world=WorldConfig(seed=4, n_seed_samples=40, mismatch_fraction=0.5, n_instruct=0, n_textvqa=2, n_mmbench=2,
                          n_heldout_textvqa=1, n_heldout_mmbench=1),
        n_instruct=4, n_scorer=48, n_calibration=8,
    )
    paths = build_proxy_world(tmp_path_factory.mktemp("proxy"), config)
    vocab = pretraining_texts(*pretraining_corpus(paths))
    result = train_scorer(paths.scorer_jsonl, vocab, tmp_path_factory.mktemp("models") / "clip", FAST)
    return paths, result


def test_scorer_trains_and_saves_a_clip_the_filter_loads(tiny, tmp_path: Path) -> None:
    paths, result = tiny
    assert len(result.losses) == FAST.epochs and result.losses[-1] < result.losses[0]
    assert (result.out_dir / "config.json").is_file() and (result.out_dir / "model.safetensors").is_file()
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text("process:\n  - image_text_similarity_filter:\n      hf_clip: clip\n      min_score: -1.0\n")
    run_recipe(Recipe.load(recipe_path), paths.world.seed_jsonl, paths.world.seed_jsonl.parent, tmp_path / "out",
               model_root=result.out_dir.parent)
    kept = {s.id: s.stats["image_text_similarity"][0] for s in read_jsonl(tmp_path / "out" / "samples.jsonl")}
    direct = pair_similarities(result.out_dir, read_pairs(paths.world.seed_jsonl))
    ids = [s.id for s in read_jsonl(paths.world.seed_jsonl)]
    assert len(kept) == 40
    assert [round(kept[i], 4) for i in ids] == [round(x, 4) for x in direct]


def test_scorer_is_deterministic(tiny, tmp_path: Path) -> None:
    paths, result = tiny
    vocab = pretraining_texts(*pretraining_corpus(paths))
    again = train_scorer(paths.scorer_jsonl, vocab, tmp_path / "clip", FAST)
    assert again.losses == result.losses
    assert (again.out_dir / "model.safetensors").read_bytes() == (result.out_dir / "model.safetensors").read_bytes()


def test_scorer_refuses_fewer_pairs_than_a_batch(tiny, tmp_path: Path) -> None:
    paths, _ = tiny
    with pytest.raises(ValueError, match="fewer than one batch"):
        train_scorer(paths.calibration_jsonl, ["a"], tmp_path / "clip", replace(FAST, batch_size=64))


# A reduced world: a smaller seed set and clean split than the default, the default scorer settings.
REDUCED = ProxyWorldConfig(world=replace(default_world(), n_seed_samples=400, n_textvqa=2, n_mmbench=2,
                                         n_heldout_textvqa=1, n_heldout_mmbench=1), n_instruct=4, n_scorer=1200)


@pytest.mark.slow
def test_trained_scorer_ranks_corrupted_captions_below_truthful_ones(tmp_path: Path) -> None:
    """Default scorer settings on a reduced clean split; ROC AUC truthful over corrupted (target >= 0.9)."""
    paths = build_proxy_world(tmp_path / "proxy", REDUCED)
    vocab = pretraining_texts(*pretraining_corpus(paths))
    result = train_scorer(paths.scorer_jsonl, vocab, tmp_path / "clip")
    auc = scorer_auc(paths, result.out_dir)
    print(f"scorer ROC AUC {auc['overall']:.3f} ({result.seconds:.0f} s); per kind "
          + ", ".join(f"{k} {v:.3f}" for k, v in auc.items() if k != "overall"))
    assert auc["overall"] >= 0.9
    assert min(auc.values()) >= 0.75
