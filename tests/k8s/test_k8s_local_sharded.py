"""The sharded data steps run through kfp.local (ParallelFor, Collected) and merge to the unsharded result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bettersynth.platform.pipeline_loader import load_pipeline_module
from bettersynth.platform.placement import load_profile
from bettersynth.recipes.recipe import Recipe
from bettersynth.recipes.runner import run_recipe
from bettersynth.steps.process import seeded_fraction

FILTER = Path("recipes/quickstart_filter.yaml").resolve()
CAPTION = Path("recipes/quickstart_caption.yaml").resolve()


@pytest.mark.slow  # ≈ 2-4 min on 2 cores: every task is a fresh Python process importing torch
def test_sharded_pipeline_merges_to_the_unsharded_output(small_world, pico_models, tmp_path, monkeypatch):
    import mlflow
    from kfp import local

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.search_experiments()  # create the store once, before parallel shard tasks race to
    seed = small_world.seed_jsonl.parent

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "outputs"))
    pipeline = load_pipeline_module("production").build_data_pipeline(
        load_profile("k8s/profiles/generic.yaml").for_local_run(), parallelism=2)
    task = pipeline(seed_dataset=str(seed), filter_recipe=str(FILTER), caption_recipe=str(CAPTION),
                    model_root=str(pico_models), num_shards=2, caption_fraction=0.3)
    merged = Path(task.output.path)

    run_recipe(Recipe.load(FILTER), seed / "samples.jsonl", seed, tmp_path / "filtered", model_root=pico_models)
    whole = run_recipe(Recipe.load(CAPTION), tmp_path / "filtered" / "samples.jsonl", tmp_path / "filtered",
                       tmp_path / "captioned", model_root=pico_models, select=seeded_fraction(0.3, 0))
    report = json.loads((merged / "report.json").read_text())
    assert report["shards"] == 2
    for key in ("n_in", "kept", "filtered", "rejected", "added"):
        assert report[key] == getattr(whole, key), key
    assert task.output.metadata["kept"] == whole.kept
    ids = [json.loads(line)["id"] for line in (merged / "samples.jsonl").read_text().splitlines()]
    assert ids == [json.loads(line)["id"] for line in (tmp_path / "captioned" / "samples.jsonl").read_text().splitlines()]
