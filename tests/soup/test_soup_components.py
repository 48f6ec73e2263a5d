"""The soup, register and promote components' bodies, called directly against a real MLflow store."""

from __future__ import annotations

import json

import mlflow
import torch
from kfp.dsl import Metrics, Model
from safetensors.torch import load_file

from bettersynth.tracking.runs import PARENT_RUN_ENV
from components.promote_model.component import promote_model
from components.register_model.component import register_model
from components.soup_models.component import soup_models


def test_soup_components_carry_lineage_into_the_registry(handmade, logged_checkpoint, mlflow_store, tmp_path,
                                                        monkeypatch):
    with mlflow.start_run(run_name="pipeline") as parent:
        pass
    monkeypatch.setenv(PARENT_RUN_ENV, parent.info.run_id)
    models = []
    for name, value in {"a": (1.0, 2.0), "b": (3.0, 0.0)}.items():
        path = handmade(name, {"w": torch.tensor(value)})
        models.append(Model(name=name, uri=str(path), metadata={"mlflow_run_id": logged_checkpoint(path),
                                                                 "dataset_hash": "abc.dir"}))
    soup = Model(name="soup", uri=str(tmp_path / "soup"))
    soup_models.python_func(models=models, method="weighted", heldout_textvqa_dir="", heldout_mmbench_tsv="",
                            soup=soup, weights=[1.0, 3.0])
    assert torch.equal(load_file(tmp_path / "soup" / "model.safetensors")["w"], torch.tensor([2.5, 0.5]))
    runs = [m.metadata["mlflow_run_id"] for m in models]
    assert soup.metadata["ingredients"] == runs and soup.metadata["weights"] == [0.25, 0.75]
    assert soup.metadata["kind"] == "soup" and soup.metadata["dataset_hash"] == "abc.dir"

    scores = Metrics(name="scores", uri=str(tmp_path / "scores"),
                     metadata={"textvqa_accuracy": 50.0, "mmbench_circular": 30.0})
    version = register_model.python_func(model=soup, scores=scores, name="vlm")
    tags = mlflow_store.get_model_version("vlm", version).tags
    assert tags["soup.method"] == "weighted" and json.loads(tags["soup.ingredients"]) == runs
    assert json.loads(tags["soup.weights"]) == [0.25, 0.75] and "soup.ingredient_scores" not in tags
    assert tags["dataset.hash"] == "abc.dir" and float(tags["score"]) == 40.0
    assert promote_model.python_func(name="vlm", metric="mmbench_circular") == version
