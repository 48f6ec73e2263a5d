"""The whole loop through kfp.local on the smallest world: every step real, everything recorded."""

from __future__ import annotations

import json
import shutil

import pytest
from mlflow import MlflowClient

from bettersynth.reports.summary import format_summary
from bettersynth.tracking.runs import STEP_TAG, dvc_dataset_inputs
from bettersynth.versioning.dvc import directory_hash, restore_variant
from bettersynth_demo.quickstart import QuickstartConfig, run_quickstart
from bettersynth_demo.world import WorldConfig

TINY = WorldConfig(n_seed_samples=40, n_instruct=16, n_textvqa=6, n_mmbench=4, n_heldout_textvqa=4, n_heldout_mmbench=3)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workspace = tmp_path_factory.mktemp("workspace")
    # eval_shards=2: the nested shard loop and merge run inside the seed loop, as in production
    summary = run_quickstart(QuickstartConfig(workspace=workspace, seeds=[0, 1], world=TINY, eval_shards=2))
    return workspace, summary


def test_counts_add_up_for_every_data_step(run):
    _, summary = run
    steps = {row["step"]: row for row in summary.datasets}
    assert set(steps) == {"filter", "caption", "version-dataset"}
    assert steps["filter"]["in"] == TINY.n_seed_samples
    for name in ("filter", "caption"):
        row = steps[name]
        assert row["in"] == row["kept"] - row["added_kept"] + row["filtered"] + row["rejected"]
    assert steps["caption"]["in"] == steps["filter"]["kept"]
    assert steps["filter"]["filtered"] > 0  # the world's too-short captions at least


def test_every_step_is_a_nested_mlflow_run(run):
    _, summary = run
    client = MlflowClient()
    children = client.search_runs([summary.experiment_id], f"tags.mlflow.parentRunId = '{summary.parent_run_id}'")
    steps = sorted(r.data.tags[STEP_TAG] for r in children)
    for expected in ("filter", "caption", "version-dataset", "train-seed0", "train-seed1", "soup-uniform",
                     "soup-greedy", "evaluate-seed0", "evaluate-soup-greedy", "promote-model"):
        assert expected in steps
    train = next(r for r in children if r.data.tags[STEP_TAG] == "train-seed0")
    assert train.data.tags["dataset.hash"].endswith(".dir")
    (dataset_input,) = dvc_dataset_inputs(client.get_run(train.info.run_id))
    assert dataset_input["dataset_hash"] == train.data.tags["dataset.hash"]
    history = client.get_metric_history(train.info.run_id, "align/loss")
    assert len(history) >= 1 and all(m.step >= 0 for m in history)


def test_models_have_scores_and_a_champion(run):
    _, summary = run
    labels = {row["model"] for row in summary.models}
    assert labels == {"seed0", "seed1", "soup-uniform", "soup-greedy"}
    for row in summary.models:
        assert 0.0 <= row["textvqa"] <= 100.0 and 0.0 <= row["mmbench_circular"] <= 100.0
    assert len(summary.registry) == 4
    version = MlflowClient().get_model_version("bettersynth-vlm", summary.aliases["champion"])
    assert version.tags["recipe.name"] == "quickstart-filter,quickstart-recaption"
    assert len(version.tags["recipe.hash"].split(",")) == 2 and version.tags["pipeline.run"] == summary.parent_run_id
    scores = {r["version"]: float(r["score"]) for r in summary.registry}
    assert scores[summary.aliases["candidate"]] == max(scores.values())  # ties: any of the best
    assert summary.aliases["champion"] == summary.aliases["candidate"]  # first run: nothing to beat
    text = format_summary(summary, "bettersynth-vlm")
    assert "bettersynth data checkout" in text and summary.parent_run_id in text


def test_variant_restores_from_its_hash(run):
    workspace, summary = run
    dataset_hash = next(r["dataset_hash"] for r in summary.datasets if r["step"] == "version-dataset")
    variant = workspace / "data" / "variants" / "quickstart"
    shutil.rmtree(variant)
    shutil.rmtree(workspace / ".dvc" / "cache")
    restored = restore_variant(workspace, dataset_hash)
    assert restored == variant
    assert directory_hash(workspace, restored) == dataset_hash
    lines = (restored / "samples.jsonl").read_text().splitlines()
    caption_row = next(r for r in summary.datasets if r["step"] == "caption")
    assert len(lines) == caption_row["kept"]
    assert all((restored / p).exists() for line in lines for p in json.loads(line)["images"])
