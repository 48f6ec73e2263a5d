"""Multi-round recipes through the steps users run: process_dataset (the KFP filter/caption
components) and ``bettersynth data apply`` (the dvc stages), with per-round counts that add up."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from bettersynth.cli.data import apply
from bettersynth.data.algebra import load_variant
from bettersynth.data.jsonl import write_samples
from bettersynth.engine import clear_model_cache
from bettersynth.reports.summary import collect_summary, format_summary
from bettersynth.steps.process import ROUND_COUNTS, STEP_COUNTS, process_dataset
from bettersynth_demo.synthesis_models import REAL_NAMES, build_tiny_blip2
from bettersynth_demo.world import all_texts

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
RECAPTION = RECIPES / "challenge_recaption_refilter.yaml"


@pytest.fixture(scope="module")
def real_names(tmp_path_factory, small_world, pico_models) -> Path:
    """The shipped recipe's model names (CLIP, BLIP-2) pointing at pico models, built offline."""
    root = tmp_path_factory.mktemp("real-names")
    targets = {"clip": pico_models / "clip", "blip2": build_tiny_blip2(root / "pico" / "blip2", all_texts(small_world))}
    for key, target in targets.items():
        link = root / REAL_NAMES[key]
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target.resolve(), target_is_directory=True)
    yield root
    clear_model_cache()


def assert_step_counts_add_up(counts: dict) -> None:
    assert counts["n_in"] == counts["kept_from_input"] + counts["filtered"] + counts["rejected"]
    assert counts["kept"] == counts["kept_from_input"] + counts["added_kept"]
    assert counts["filtered"] + counts["rejected"] == counts["replaced"] + counts["removed"]
    assert counts["replaced"] <= counts["added_kept"] <= counts["added"]


def assert_round_counts_add_up(r: dict) -> None:
    assert r["n_in"] == r["selected"] + r["bypassed"] == r["bypassed"] + r["kept"] + r["filtered"] + r["rejected"]
    assert r["n_out"] == r["n_in"] - r["filtered"] - r["rejected"] + r["created_kept"] == r["n_in"] - r["removed"] + r["added"]
    assert r["filtered"] + r["rejected"] == r["replaced"] + r["removed"]


@pytest.fixture(scope="module")
def seed(small_world, tmp_path_factory) -> Path:
    """The first 12 seed samples (the shipped recipe captions 3 candidates of 40 tokens: keep it small)."""
    root = Path(shutil.copytree(small_world.seed_jsonl.parent, tmp_path_factory.mktemp("seed") / "seed"))
    write_samples(root / "samples.jsonl", load_variant(root)[:12])
    return root


@pytest.fixture(scope="module")
def shipped(seed, real_names, mlflow_store, tmp_path_factory) -> tuple[dict, Path]:
    """The shipped recipe as the caption component runs it (pico re-captions all fail its 0.28 re-filter)."""
    out = tmp_path_factory.mktemp("shipped") / "out"
    return process_dataset("caption", seed, RECAPTION, out, real_names, batch_size=8, num_workers=0), out


def test_process_dataset_runs_a_shipped_multi_round_recipe(seed, real_names, shipped, caplog):
    summary, out = shipped
    assert set(STEP_COUNTS) <= set(summary) and summary["n_in"] == 12
    assert summary["kept"] == len(load_variant(out))
    assert_step_counts_add_up(summary)
    for r in summary["rounds"]:
        assert_round_counts_add_up(r)
    assert [r["name"] for r in summary["rounds"]] == ["score", "recaption-refilter"]
    assert summary["rounds"][0]["n_out"] == summary["rounds"][1]["n_in"] and summary["rounds"][1]["selected"] > 0
    # a second run of the finished step does no work
    with caplog.at_level(logging.INFO, logger="bettersynth.steps.process"):
        again = process_dataset("caption", seed, RECAPTION, out, real_names, batch_size=8, num_workers=0)
    assert again == summary and "already finished" in caplog.text


def test_process_dataset_counts_replaced_and_removed_per_round(seed, real_names, shipped, tmp_path):
    """The shipped recipe re-filtering at the pico re-captions' median: some replace their pair, some fail."""
    _, shipped_out = shipped
    outcomes = [json.loads(line) for line in (shipped_out / "outcomes.jsonl").read_text().splitlines()]
    scores = sorted(o["value"][0] for o in outcomes if "#cap" in str(o["id"]) and o.get("stat") == "image_text_similarity")
    threshold = (scores[len(scores) // 2 - 1] + scores[len(scores) // 2]) / 2
    recipe = tmp_path / "recaption_refilter_median.yaml"
    text = RECAPTION.read_text()
    recipe.write_text(text[: text.rindex("min_score: 0.28")] + f"min_score: {threshold}\n")
    out = tmp_path / "out"
    with mlflow.start_run(run_name="parent") as parent:
        summary = process_dataset("caption", seed, recipe, out, real_names, batch_size=8, num_workers=0)
    samples = load_variant(out)
    assert summary["kept"] == len(samples)
    assert_step_counts_add_up(summary)
    score, recaption = summary["rounds"]
    for r in summary["rounds"]:
        assert_round_counts_add_up(r)
    assert score["n_out"] == recaption["n_in"] and recaption["n_out"] == len(samples)
    assert recaption["created"] == recaption["selected"] - recaption["rejected"] and recaption["kept"] == 0
    # every kept re-caption stands where its source was: replaced, never an extra sample
    recaptions = [s for s in samples if "#cap" in s.id]
    assert 0 < len(recaptions) < recaption["created"]
    assert recaption["replaced"] == summary["replaced"] == summary["added_kept"] == len(recaptions) and recaption["added"] == 0
    assert recaption["removed"] == recaption["selected"] - len(recaptions)
    assert summary["removed"] == score["removed"] + recaption["removed"]
    for sample in recaptions:
        assert sample.meta["provenance"][-1]["source_id"] == sample.id.split("#")[0]
        assert sample.stats["image_text_similarity"][0] >= threshold
    # per op, numbered through the rounds as the recipe lists them
    assert [(p["step"], p["op"], p["round"]) for p in summary["per_op"]] == [
        (0, "image_text_similarity_filter", "score"), (1, "image_captioning_mapper", "recaption-refilter"),
        (2, "image_text_similarity_filter", "recaption-refilter")]
    assert summary["per_op"][1]["replaced"] == summary["per_op"][1]["filtered"] == recaption["created"]

    # MLflow: the step counts, each round's counts by round index, each op's by position
    client = MlflowClient()
    run = client.get_run(summary["mlflow_run_id"])
    for key in STEP_COUNTS:
        assert run.data.metrics[key] == summary[key], key
    for key in ROUND_COUNTS:
        history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, f"round/{key}")}
        assert history == {r["round"]: r[key] for r in summary["rounds"]}, key
    assert {m.step: m.value for m in client.get_metric_history(run.info.run_id, "op/replaced")} == {
        p["step"]: p["replaced"] for p in summary["per_op"]}
    assert json.loads((out / "step.json").read_text())["rounds"] == summary["rounds"]

    # the quickstart's table shows each round under the step, and its rows add up
    table = collect_summary(parent.info.run_id, "no-such-model", tmp_path, 1.0)
    (row,) = table.datasets
    assert [r["name"] for r in row["rounds"]] == ["score", "recaption-refilter"]
    assert (row["replaced"], row["rounds"][1]["replaced"]) == (len(recaptions), len(recaptions))
    for r in [row, *row["rounds"]]:
        added = r["added_kept"] if r is row else r["added"]
        assert r["kept"] == r["in"] - r["filtered"] - r["rejected"] + added
        assert r["filtered"] + r["rejected"] == r["replaced"] + r["removed"]
    assert "  round 1 recaption-refilter" in format_summary(table, "no-such-model")


TWO_ROUNDS = """# two cheap rounds: drop short captions, then re-caption what is left (keeping the originals)
rounds:
  - name: words
    process: [{words_num_filter: {min_num: 3}}]
  - name: recaption
    where: {stat: num_words, min: 3}
    process: [{image_captioning_mapper: {hf_img2seq: captioner, max_new_tokens: 4, seed: 1}}]
"""


def test_process_dataset_multi_round_fraction_limits_the_mappers(small_world, pico_models, mlflow_store, tmp_path):
    recipe = tmp_path / "two.yaml"
    recipe.write_text(TWO_ROUNDS)
    seed = small_world.seed_jsonl.parent
    full = process_dataset("caption", seed, recipe, tmp_path / "full", pico_models, num_workers=0)
    part = process_dataset("caption", seed, recipe, tmp_path / "part", pico_models, num_workers=0, fraction=0.5, seed=3)
    for summary in (full, part):
        assert_step_counts_add_up(summary)
        for r in summary["rounds"]:
            assert_round_counts_add_up(r)
    assert part["fingerprint"] != full["fingerprint"]
    mapper = part["per_op"][1]
    assert mapper["skipped"] > 0 and mapper["in"] == mapper["kept"] + mapper["skipped"] + mapper["rejected"]
    # keep_original_sample: every re-caption is an extra sample, nothing is replaced
    assert 0 < part["rounds"][1]["added"] == part["added_kept"] < full["rounds"][1]["added"] == full["added_kept"]
    assert part["replaced"] == full["replaced"] == 0


def _apply_args(recipe: Path, source: Path, out: Path, models: Path, fraction: float = 1.0) -> argparse.Namespace:
    return argparse.Namespace(recipe=str(recipe), input=str(source), out=str(out), model_root=str(models),
                              fraction=fraction, seed=1, batch_size=8)


def test_data_apply_runs_rounds_and_prints_each(small_world, pico_models, tmp_path, capsys):
    recipe = tmp_path / "two.yaml"
    recipe.write_text(TWO_ROUNDS)
    assert apply(_apply_args(recipe, small_world.seed_jsonl.parent, tmp_path / "out", pico_models)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("  round 0 words: ") and lines[1].startswith("  round 1 recaption: ")
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert f"{report['n_in']} in, {report['n_out']} kept" in lines[2]
    assert len(load_variant(tmp_path / "out")) == report["n_out"]


def test_data_apply_with_a_fraction_resumes_a_finished_run(small_world, pico_models, tmp_path, capsys, caplog):
    recipe = tmp_path / "recap.yaml"
    recipe.write_text("# re-caption half\nprocess:\n  - image_captioning_mapper: {hf_img2seq: captioner, max_new_tokens: 4, seed: 1}\n")
    args = _apply_args(recipe, small_world.seed_jsonl.parent, tmp_path / "out", pico_models, fraction=0.5)
    apply(args)
    first = capsys.readouterr().out
    with caplog.at_level(logging.INFO, logger="bettersynth.recipes.runner"):
        apply(args)  # the seeded fraction is part of the fingerprint: the finished folder is reused
    assert capsys.readouterr().out == first and "nothing to do" in caplog.text
