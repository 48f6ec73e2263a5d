"""analyze: percentiles and histograms of every filter's stat, auto-thresholds, cache reuse, MLflow."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from ops_testutil import write_image, write_jsonl

from bettersynth.ops.words_num_filter import count_words
from bettersynth.recipes.recipe import Recipe
from bettersynth.recipes.runner import run_recipe
from bettersynth.reports.analyze import analyze_recipe

TEXTS = ["a red bus", "a red bus on the street today", "one", "two words", "the blue dog sat on a mat", "x y z w"]


@pytest.fixture
def dataset(tmp_path) -> tuple[Path, Path]:
    root = tmp_path / "data"
    records = []
    for i, text in enumerate(TEXTS):
        write_image(root / "imgs" / f"{i}.png", seed=i)
        records.append({"id": str(i), "text": f"<__dj__image> {text} <|__dj__eoc|>", "images": [f"imgs/{i}.png"]})
    return write_jsonl(tmp_path / "in.jsonl", records), root


RECIPE = {"name": "r", "process": [{"words_num_filter": {"min_num": 3}}, {"image_text_similarity_filter": {"hf_clip": "clip", "min_score": 0.2}}]}


def test_ops_analyze_percentiles_histograms_and_auto_recipe(model_root, dataset, tmp_path):
    jsonl, root = dataset
    result = analyze_recipe(Recipe.from_dict(RECIPE), jsonl, root, tmp_path / "an", model_root=model_root, num_workers=0, k_sigma=1.0)
    words = np.array([count_words(t) for t in TEXTS], dtype=float)
    rows = {r["stat"]: r for r in csv.DictReader(open(tmp_path / "an" / "stats.csv"))}
    assert set(rows) == {"num_words", "image_text_similarity"}
    assert int(rows["num_words"]["count"]) == 6
    for p in (5, 50, 95):
        assert float(rows["num_words"][f"p{p}"]) == pytest.approx(np.percentile(words, p))
    assert float(rows["num_words"]["mean"]) == pytest.approx(words.mean())
    # nothing was filtered: the similarity stat covers all six samples, including the 1-word caption
    per_sample = [json.loads(line) for line in (tmp_path / "an" / "stats.jsonl").read_text().splitlines()]
    sims = np.array([s["stats"]["image_text_similarity"][0] for s in per_sample])
    assert len(sims) == 6 and float(rows["image_text_similarity"]["p50"]) == pytest.approx(np.percentile(sims, 50))
    assert "| num_words | words_num_filter | 6 |" in (tmp_path / "an" / "stats.md").read_text()
    assert sorted(p.name for p in result.histograms) == ["hist_image_text_similarity.png", "hist_num_words.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in result.histograms)
    # k-sigma bounds, integers rounded inwards; the written recipe loads
    auto = yaml.safe_load(result.auto_recipe.read_text())
    words_params, sim_params = (list(e.values())[0] for e in auto["process"])
    assert words_params["min_num"] == int(np.ceil(words.mean() - words.std()))
    assert words_params["max_num"] == int(np.floor(words.mean() + words.std()))
    assert sim_params["min_score"] == pytest.approx(sims.mean() - sims.std())
    assert sim_params["max_score"] == pytest.approx(sims.mean() + sims.std())
    # running the auto recipe afterwards reads every similarity score from the cache
    report = run_recipe(Recipe.load(result.auto_recipe), jsonl, root, tmp_path / "out", model_root=model_root, num_workers=0)
    assert report.per_op[1]["cache_misses"] == 0 and report.per_op[1]["cache_hits"] == report.per_op[1]["in"] > 0


def test_ops_analyze_cli_logs_to_mlflow(model_root, dataset, tmp_path, monkeypatch):
    import mlflow

    from bettersynth.cli.main import main

    jsonl, root = dataset
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # a file store is enough for a test, and quick
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    recipe_path = tmp_path / "r.yaml"
    recipe_path.write_text(yaml.safe_dump({**RECIPE, "dataset_path": str(jsonl)}))
    code = main(["analyze", str(recipe_path), "--out", str(tmp_path / "an"), "--model-root", str(model_root), "--num-workers", "0", "--mlflow", "--k-sigma", "2"])
    assert code == 0 and (tmp_path / "an" / "auto_recipe.yaml").exists()
    run = mlflow.search_runs(search_all_experiments=True, output_format="list")[0]
    assert "num_words.p50" in run.data.metrics
    names = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "analysis")}
    assert {"analysis/stats.csv", "analysis/hist_num_words.png", "analysis/auto_recipe.yaml"} <= names


def test_ops_analyze_rejects_bad_k(dataset, tmp_path):
    with pytest.raises(ValueError, match="k_sigma"):
        analyze_recipe(Recipe.from_dict(RECIPE), dataset[0], dataset[1], tmp_path / "an", k_sigma=0)
