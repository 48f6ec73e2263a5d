"""Register checkpoints in the MLflow Model Registry and move aliases by rule.

Why: the registry is where a team finds "the best model" and its lineage
(dataset hash, recipe, seed, ingredients); an alias only moves when a new
version beats the one holding it, never silently.
"""

from __future__ import annotations

import os

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from bettersynth.tracking import PARENT_RUN_ENV, step_run

SCORE_TAG = "score"  # the tag holding a version's ranking score
CHAMPION = "champion"
CANDIDATE = "candidate"


def ranking_score(metrics: dict[str, float]) -> float:
    """How versions are ranked: mean of TextVQA accuracy and MMBench circular accuracy (percent)."""
    return (metrics["textvqa_accuracy"] + metrics["mmbench_circular"]) / 2


def register_version(name: str, source_run_id: str, metrics: dict[str, float], tags: dict[str, str]) -> str:
    """Create a model version from the run's ``checkpoint`` artifact; returns the version number."""
    client = MlflowClient()
    try:
        client.create_registered_model(name)
    except MlflowException:
        pass  # already registered
    with step_run(f"register-{tags.get('kind', 'model')}", params={"model.name": name, "source_run": source_run_id}):
        all_tags = {**tags, SCORE_TAG: f"{ranking_score(metrics):.6f}", "pipeline.run": pipeline_run_id()}
        all_tags |= {f"metric.{k}": f"{v:.6f}" for k, v in metrics.items()}
        source = f"{client.get_run(source_run_id).info.artifact_uri}/checkpoint"
        version = client.create_model_version(name, source=source, run_id=source_run_id, tags=all_tags)
        mlflow.set_tags({"model.name": name, "model.version": version.version})
    return str(version.version)


def _score(version) -> float:
    return float(version.tags.get(SCORE_TAG, "-inf"))


def promote_best(name: str, pipeline_run: str) -> dict:
    """Point ``candidate`` at this pipeline run's best version; move ``champion`` only if it wins."""
    client = MlflowClient()
    versions = [v for v in client.search_model_versions(f"name='{name}'") if v.tags.get("pipeline.run") == pipeline_run]
    if not versions:
        raise ValueError(f"no versions of {name!r} were registered by pipeline run {pipeline_run}")
    best = max(versions, key=_score)
    client.set_registered_model_alias(name, CANDIDATE, best.version)
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        champion = None
    moved = champion is None or _score(best) > _score(champion)
    if moved:
        client.set_registered_model_alias(name, CHAMPION, best.version)
    holder = str(best.version if moved else champion.version)
    with step_run("promote-model", params={"model.name": name, "candidate": best.version}):
        mlflow.set_tags({"champion.moved": str(moved), "champion.version": holder})
    return {"candidate": str(best.version), "champion_moved": moved, "champion": holder}


def pipeline_run_id() -> str:
    """The id that groups one pipeline run's versions: the MLflow parent run.

    Locally the driver passes it down; under KFP's MLflow integration it is the
    parent of the injected task run.
    """
    if os.environ.get(PARENT_RUN_ENV):
        return os.environ[PARENT_RUN_ENV]
    task_run = os.environ.get("MLFLOW_RUN_ID")
    if task_run:
        return MlflowClient().get_run(task_run).data.tags.get("mlflow.parentRunId", task_run)
    return ""
