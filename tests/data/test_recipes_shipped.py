"""Every recipe in recipes/ loads, says what it is for, and runs on the demo world with pico models.

The recipes name the real models; ``model_root`` points those names at pico
stand-ins (``build_pico_model_root``), so the shipped files run unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bettersynth.data.algebra import load_variant
from bettersynth.engine import clear_model_cache
from bettersynth.recipes.recipe import Recipe
from bettersynth.recipes.rounds import run_rounds
from bettersynth_demo.world import all_texts

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
CHALLENGE = ["challenge_similarity_032", "challenge_similarity_recaption", "challenge_recaption_refilter", "challenge_capfusion"]


@pytest.fixture(scope="module")
def real_names_root(tmp_path_factory, small_world, pico_models, pico_causal_lm) -> Path:
    pytest.importorskip("diffusers")
    from bettersynth_demo.synthesis_models import build_pico_model_root

    root = build_pico_model_root(tmp_path_factory.mktemp("real-names"), all_texts(small_world), pico_models / "clip", pico_causal_lm)
    yield root
    clear_model_cache()


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_recipe_loads_and_says_what_it_is_for(path):
    recipe = Recipe.load(path)
    assert path.read_text().startswith("# ")  # a comment on what the recipe is for
    assert recipe.ops and len(recipe.hash()) == 64


@pytest.mark.parametrize("name", CHALLENGE + [pytest.param("synth_diffusion_refilter", marks=pytest.mark.slow)])
def test_shipped_recipe_runs_on_the_demo_world(name, small_world, real_names_root, tmp_path):
    recipe = Recipe.load(RECIPES / f"{name}.yaml")
    seed = small_world.seed_jsonl
    out = tmp_path / name
    report = run_rounds(recipe, seed, seed.parent, out, model_root=real_names_root, num_workers=0, cache_dir=tmp_path / "cache")
    samples = load_variant(out)
    assert report.n_in == len(load_variant(seed.parent)) and report.n_out == len(samples)
    assert report.n_out == report.staged - report.removed + report.added
    for r in report.rounds:
        assert r.n_in == r.bypassed + r.kept + r.filtered + r.rejected and r.n_out == r.n_in - r.removed + r.added
    assert json.loads((out / "report.json").read_text())["recipe_hash"] == recipe.hash()
    synthesised = [s for s in samples if "#" in s.id]
    for sample in synthesised:
        record = sample.meta["provenance"][-1]
        assert {"op", "source_id", "model", "seed"} <= set(record)
    made = sum(r.created for r in report.rounds)
    assert made > 0 or name == "challenge_similarity_032"
