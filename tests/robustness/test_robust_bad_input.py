"""Every kind of bad input, each in the middle of a larger dataset, costs only its own sample,
with a clear reason; the counts add up and the step's MLflow run logs them."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import yaml
from robust_data import messy_dataset

from bettersynth.recipes.recipe import Recipe
from bettersynth.steps.process import process_dataset


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def messy(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "outside").mkdir()
    return messy_dataset(tmp_path / "data", tmp_path / "outside")


def _recipe(tmp_path: Path) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"name": "robust", "process": [
        {"words_num_filter": {"min_num": 1, "max_num": 1000}},
        {"image_text_similarity_filter": {"hf_clip": "clip", "min_score": -1.0}},
    ]}))
    return path


def test_robust_each_bad_input_loses_only_its_sample(messy, tmp_path, pico_models, mlflow_store):
    jsonl, fates, good_ids = messy
    out = tmp_path / "out"
    summary = process_dataset("filter", jsonl.parent, _recipe(tmp_path), out, pico_models, batch_size=4, chunk_size=8)

    n_lines = len(good_ids) + len(fates)
    assert summary["n_in"] == n_lines
    assert summary["n_in"] == summary["kept_from_input"] + summary["filtered"] + summary["rejected"]
    assert [s["id"] for s in _read(out / "samples.jsonl")] == good_ids  # every good sample, in order
    outcomes = _read(out / "outcomes.jsonl")
    assert len(outcomes) == n_lines
    by_id = {o["id"]: o for o in outcomes if "line" not in o}
    reader = [o for o in outcomes if "line" in o]
    for label, fate in fates.items():
        if fate.op == "reader":
            matches = [o for o in reader if fate.reason in o["error"]]
            assert len(matches) == 1, (label, reader)
            outcome = matches[0]
            assert outcome["line"].startswith("samples.jsonl:")
        else:
            outcome = by_id[fate.id]
            text = outcome.get("error") or outcome.get("bound")
            assert fate.reason in text, (label, outcome)
        assert (outcome["status"], outcome["op"]) == (fate.status, fate.op), (label, outcome)
    rejected = _read(out / "rejected.jsonl")
    assert len(rejected) == summary["rejected"] == sum(f.status == "rejected" for f in fates.values())
    assert all(set(r) == {"id", "op", "error"} and r["error"] for r in rejected)
    assert summary["filtered"] == 2  # the empty and the 1 MB caption, each with its stat and bound

    run = mlflow.get_run(summary["mlflow_run_id"])
    for key in ("n_in", "kept", "filtered", "rejected"):
        assert run.data.metrics[key] == summary[key]
    assert not any(p.name.endswith(".partial") for p in out.rglob("*"))


def test_robust_malformed_recipe_fails_before_any_work_naming_file_and_field(messy, tmp_path, pico_models, mlflow_store):
    jsonl, _, _ = messy
    path = tmp_path / "typo.yaml"
    path.write_text("name: t\nprocess:\n  - words_num_filter: {min_num: 1}\n  - image_text_similarity_filter: {hf_clip: clip, min_scor: 0.2}\n")
    runs_before = len(mlflow.search_runs(search_all_experiments=True))
    with pytest.raises(ValueError) as err:
        process_dataset("filter", jsonl.parent, path, tmp_path / "out", pico_models)
    message = str(err.value)
    assert str(path) in message and "process[1]" in message and "'min_scor'" in message and "min_score" in message
    assert not (tmp_path / "out").exists()
    assert len(mlflow.search_runs(search_all_experiments=True)) == runs_before


@pytest.mark.parametrize("text, phrase", [
    ("process: [words_num_filter: {min_num: 1}\n", "not valid YAML"),
    ("process:\n  - no_such_filter: {}\n", "unknown operator 'no_such_filter'"),
    ("process:\n  - words_num_filter: {min_num: many}\n", "field 'min_num'"),
    ("name: t\n", "field 'process'"),
    ("process:\n  - !!python/object/apply:os.system ['echo pwned']\n", "not valid YAML"),
])
def test_robust_malformed_recipes_name_file_and_field(tmp_path, text, phrase):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as err:
        Recipe.load(path)
    assert str(path) in str(err.value) and phrase in str(err.value)
