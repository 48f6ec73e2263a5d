"""The data steps against real MLflow servers (sqlite and PostgreSQL backends) and a local DVC remote:
params, pictures, a DVC dataset input, `bettersynth compare`, and checkout by run id from a clean clone.

Training and evaluation are stood in by runs carrying the tags and metrics those steps log
(the real ones run in the slow test_tracking_pipeline_server.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow import MlflowClient

from bettersynth.cli.main import main
from bettersynth.reports.compare import collect_rows
from bettersynth.steps.pipeline_report import finish_pipeline_run
from bettersynth.steps.process import process_dataset
from bettersynth.steps.register import register_version
from bettersynth.steps.train import _log_checkpoint
from bettersynth.steps.version import version_dataset
from bettersynth.tracking.runs import (
    EXPERIMENT_KIND_TAG,
    PARENT_RUN_ENV,
    TRAINING_EXPERIMENT,
    dvc_dataset_inputs,
    ensure_experiment,
    log_dataset_input,
    step_run,
)
from bettersynth.versioning.dvc import checkout, directory_hash, ensure_dvc_project, list_variants

FILTER = {"name": "keep-most", "process": [{"words_num_filter": {"min_num": 10}}, {"image_text_similarity_filter": {"hf_clip": "clip", "min_score": -1.0}}]}
CAPTION = {"name": "recap-half", "process": [{"image_captioning_mapper": {"hf_img2seq": "captioner", "keep_original_sample": False, "max_new_tokens": 8}}]}


@pytest.fixture(params=["sqlite", "postgres"])
def server(request):
    return request.getfixturevalue("sqlite_server" if request.param == "sqlite" else "postgres_mlflow_server")


def _data_flow(tmp_path, world, models, experiment: str) -> dict:
    """filter → caption → version (real steps) → a train/evaluate stand-in → register and close the
    parent (real steps), under one parent run."""
    recipes = {}
    for recipe in (FILTER, CAPTION):
        recipes[recipe["name"]] = tmp_path / f"{recipe['name']}.yaml"
        recipes[recipe["name"]].write_text(yaml.safe_dump(recipe))
    workspace = tmp_path / "workspace"
    ensure_dvc_project(workspace)
    experiment_id = ensure_experiment(experiment, tmp_path / "not-used-on-a-server")
    with mlflow.start_run(run_name="pipeline", experiment_id=experiment_id) as parent:
        os.environ.update({"MLFLOW_EXPERIMENT_ID": experiment_id, PARENT_RUN_ENV: parent.info.run_id})
        try:
            filtered = process_dataset("filter", world.seed_jsonl.parent, recipes["keep-most"], tmp_path / "f", models)
            captioned = process_dataset("caption", tmp_path / "f", recipes["recap-half"], tmp_path / "c", models, fraction=0.5)
            version = version_dataset(tmp_path / "c", workspace, "recap", {"recipe_hash": captioned["recipe_hash"], "kept": captioned["kept"]})
            tags = {"dataset.hash": version["dataset_hash"], "train.seed": "0"}
            with step_run("train-seed0", tags=tags) as train:
                log_dataset_input(version["dataset_hash"], version["remote_url"], "recap", path="data/variants/recap", n_samples=captioned["kept"])
                checkpoint = tmp_path / "checkpoint"
                checkpoint.mkdir()
                (checkpoint / "config.json").write_text(json.dumps({"model_type": "llava"}))
                _log_checkpoint(checkpoint, tags, train.info.run_id)
            metrics = {"textvqa_accuracy": 12.5, "mmbench_circular": 25.0}
            with step_run("evaluate-seed0", params={"model": "seed0"}):
                mlflow.log_metrics(metrics)
            register_version(f"vlm-{experiment}", train.info.run_id, metrics, {"kind": "finetune", **tags})
            finish_pipeline_run(parent.info.run_id)
        finally:
            for name in ("MLFLOW_EXPERIMENT_ID", PARENT_RUN_ENV):
                os.environ.pop(name, None)
    return {"workspace": workspace, "parent": parent.info.run_id, "filter": filtered, "caption": captioned,
            "version": version, "train": train.info.run_id}


def test_data_steps_against_a_server(server, tracking_to, tmp_path, small_world, pico_models, capsys, request):
    tracking_to(server)
    experiment = f"flow-{request.node.callspec.id}"
    flow = _data_flow(tmp_path, small_world, pico_models, experiment)
    client = MlflowClient()

    assert client.get_experiment_by_name(experiment).tags[EXPERIMENT_KIND_TAG] == TRAINING_EXPERIMENT
    filter_run = client.get_run(flow["filter"]["mlflow_run_id"])
    assert filter_run.info.artifact_uri.startswith("mlflow-artifacts:")  # artifacts go through the server
    assert filter_run.data.params["recipe.name"] == "keep-most"
    assert filter_run.data.params["words_num_filter.min_num"] == "10"
    sheets = {a.path for a in client.list_artifacts(filter_run.info.run_id, "sheets")}
    assert {"sheets/sample_sheet.png", "sheets/stat_histograms.png", "sheets/stat_values.json"} <= sheets
    assert flow["caption"]["added"] > 0  # something was re-captioned, so the sheet has that row

    train = client.get_run(flow["train"])
    (source,) = dvc_dataset_inputs(train)
    assert source["dataset_hash"] == flow["version"]["dataset_hash"] and source["name"] == "recap"
    assert source["remote_url"] == flow["version"]["remote_url"]
    assert train.inputs.dataset_inputs[0].dataset.digest == flow["version"]["dataset_hash"]

    (row,) = collect_rows([experiment])
    assert (row.kept, row.dataset_hash, row.recipe_name) == (flow["caption"]["kept"], flow["version"]["dataset_hash"], "keep-most+recap-half")
    assert row.score == pytest.approx(18.75)
    assert main(["compare", "--tracking-uri", server, "--experiment", experiment]) == 0
    assert flow["version"]["dataset_hash"] in capsys.readouterr().out

    # a second machine: the same DVC remote, no cache, no pointers; only a run id from MLflow
    for reference in (flow["version"]["mlflow_run_id"], flow["parent"], flow["train"]):
        clone = tmp_path / f"clone-{reference[:8]}"
        ensure_dvc_project(clone, remote_url=flow["version"]["remote_url"])
        path, resolved = checkout(clone, reference)
        assert directory_hash(clone, path) == flow["version"]["dataset_hash"]
        assert (path / "samples.jsonl").read_bytes() == (tmp_path / "c" / "samples.jsonl").read_bytes()
    clone = tmp_path / f"clone-{flow['version']['mlflow_run_id'][:8]}"
    assert list_variants(clone)[0]["meta"] == {"recipe_hash": flow["caption"]["recipe_hash"], "kept": flow["caption"]["kept"]}
    _what_the_mlflow_ui_shows(flow, experiment, tmp_path)


def _what_the_mlflow_ui_shows(flow: dict, experiment: str, tmp_path) -> None:
    """Run names say model and recipe, the parent reads its dataset and holds the comparison, the version
    has a description with its scores and its logged model lists it."""
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    client = MlflowClient()
    parent = client.get_run(flow["parent"])
    assert parent.info.run_name == "keep-most+recap-half · pipeline"
    names = {r.data.tags["bettersynth.step"]: r.info.run_name
             for r in client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{flow['parent']}'")}
    assert names["filter"] == "filter · keep-most" and names["caption"] == "caption · recap-half"
    assert names["version-dataset"] == "dataset recap" and names["register-finetune"] == "seed 0 · register"
    (dataset,) = parent.inputs.dataset_inputs  # the Dataset column of the pipeline's row
    assert (dataset.dataset.name, dataset.dataset.digest) == ("recap", flow["version"]["dataset_hash"])
    assert {t.key: t.value for t in dataset.tags}["mlflow.data.context"] == "training"

    artifacts = {a.path for a in client.list_artifacts(flow["parent"], "comparison")}
    assert artifacts == {"comparison/compare.txt", "comparison/compare.png"}
    table = Path(client.download_artifacts(flow["parent"], "comparison/compare.txt", str(tmp_path))).read_text()
    assert "keep-most+recap-half" in table and flow["version"]["dataset_hash"] in table and f"vlm-{experiment} v1" in table

    version = client.get_model_version(f"vlm-{experiment}", "1")
    headline, *facts = version.description.splitlines()
    assert headline == f"TextVQA 12.5 · MMBench 25.0 · seed 0 · keep-most + recap-half · {flow['caption']['kept']} kept samples"
    assert f"- dataset: recap, DVC hash {flow['version']['dataset_hash']}" in facts
    assert f"- kept samples: {flow['caption']['kept']}" in facts and "- score (mean of the two): 18.75" in facts
    model_id = client.get_run(flow["train"]).data.tags["model.id"]
    model = client.get_logged_model(model_id)
    assert model.source_run_id == flow["train"]  # the logged model links back to its run
    assert json.loads(model.tags[MLFLOW_MODEL_VERSIONS]) == [{"name": f"vlm-{experiment}", "version": "1"}]
    assert model_id in facts[-1]


def test_experiments_are_training_experiments(sqlite_server, tracking_to):
    """New ones are made so; an old one without a kind gets it; one that says its kind keeps it."""
    tracking_to(sqlite_server)
    client = MlflowClient()
    new = ensure_experiment("kind-new")
    old = client.create_experiment("kind-old")
    genai = client.create_experiment("kind-genai", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    assert ensure_experiment("kind-old") == old and ensure_experiment("kind-genai") == genai
    kinds = {e: client.get_experiment(e).tags.get(EXPERIMENT_KIND_TAG) for e in (new, old, genai)}
    assert kinds == {new: TRAINING_EXPERIMENT, old: TRAINING_EXPERIMENT, genai: "genai_development"}
