"""Ingredient specs resolved against a real MLflow store (sqlite, file artifacts)."""

from __future__ import annotations

import filecmp

import pytest
import torch

from bettersynth.soup import make_soup
from bettersynth.soup.ingredients import resolve_ingredient, resolve_ingredients


def same_files(a, b) -> bool:
    names = sorted(p.name for p in a.iterdir())
    return names == sorted(p.name for p in b.iterdir()) and filecmp.cmpfiles(a, b, names, shallow=False)[0] == names


def test_soup_ingredient_local_path(llamas, tmp_path):
    ingredient = resolve_ingredient(str(llamas["fp32_0"]), tmp_path / "dl")
    assert ingredient.path == llamas["fp32_0"] and ingredient.run_id is None
    assert ingredient.lineage == str(llamas["fp32_0"])
    assert not (tmp_path / "dl").exists()  # nothing downloaded


def test_soup_ingredient_run_id_and_runs_uri(llamas, logged_checkpoint, tmp_path):
    run_id = logged_checkpoint(llamas["sharded_1"])
    by_id = resolve_ingredient(run_id, tmp_path / "a")
    by_uri = resolve_ingredient(f"runs:/{run_id}/checkpoint", tmp_path / "b")
    for ingredient in (by_id, by_uri):
        assert ingredient.run_id == run_id and ingredient.lineage == run_id and ingredient.model_version is None
        assert ingredient.path.is_relative_to(tmp_path)
        assert same_files(ingredient.path, llamas["sharded_1"])


def test_soup_ingredient_registered_versions(llamas, logged_checkpoint, mlflow_store, tmp_path):
    runs = [logged_checkpoint(llamas["fp32_0"]), logged_checkpoint(llamas["fp32_1"])]
    mlflow_store.create_registered_model("vlm")
    for run in runs:
        source = f"{mlflow_store.get_run(run).info.artifact_uri}/checkpoint"
        mlflow_store.create_model_version("vlm", source=source, run_id=run)
    mlflow_store.set_registered_model_alias("vlm", "champion", "2")
    specs = ["models:/vlm/1", "vlm@champion", "models:/vlm@champion"]
    resolved = resolve_ingredients(specs, tmp_path / "dl")
    assert [i.run_id for i in resolved] == [runs[0], runs[1], runs[1]]
    assert [i.model_version for i in resolved] == ["vlm/1", "vlm/2", "vlm/2"]
    assert same_files(resolved[0].path, llamas["fp32_0"]) and same_files(resolved[2].path, llamas["fp32_1"])
    assert len({i.path for i in resolved}) == 3  # each download gets its own folder


def test_soup_ingredient_mixed_specs_make_the_exact_average(llamas, logged_checkpoint, load_state, tmp_path):
    run_id = logged_checkpoint(llamas["fp32_1"])
    resolved = resolve_ingredients([str(llamas["fp32_0"]), run_id], tmp_path / "dl")
    out = make_soup("uniform", [i.path for i in resolved], tmp_path / "soup").out_dir
    a, b, soup = load_state(llamas["fp32_0"]), load_state(llamas["fp32_1"]), load_state(out)
    for name, tensor in soup.items():
        expected = ((a[name].double() + b[name].double()) / 2).float()
        assert torch.equal(tensor, expected), name


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no/such/dir", "neither a local directory"),
        ("0123456789abcdef0123456789abcdef", "ingredient '0123456789abcdef0123456789abcdef'"),
        ("models:/nope/1", "ingredient 'models:/nope/1'"),
        ("nope@champion", "ingredient 'nope@champion'"),
    ],
)
def test_soup_ingredient_unknown_specs_are_named(mlflow_store, tmp_path, spec, message):
    with pytest.raises(ValueError, match=message):
        resolve_ingredient(spec, tmp_path / "dl")


def test_soup_ingredient_run_without_checkpoint_is_refused(mlflow_store, tmp_path):
    import mlflow

    with mlflow.start_run() as run:
        mlflow.log_dict({"a": 1}, "checkpoint/config.json")
    with pytest.raises(ValueError, match=f"ingredient '{run.info.run_id}' is not a safetensors checkpoint"):
        resolve_ingredient(run.info.run_id, tmp_path / "dl")


def test_soup_ingredient_needs_one(tmp_path):
    with pytest.raises(ValueError, match="ingredients"):
        resolve_ingredients([], tmp_path)
