"""Register checkpoints in the MLflow Model Registry and move aliases by rule.

Why: the registry is where a team finds "the best model" and its lineage
(dataset hash, recipe, seed, soup ingredients); an alias only moves when a new
version beats the one holding it on the chosen metric, never silently.

Example::

    version = register_version("vlm", soup_run_id, metrics, soup_tags("greedy", runs, scores, weights))
    promote_version("vlm", version)  # candidate -> version; champion too if it scores higher
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from bettersynth.tracking.runs import PARENT_RUN_ENV, step_run

log = logging.getLogger(__name__)

SCORE_TAG = "score"  # the tag holding a version's ranking score
METRIC_TAG_PREFIX = "metric."  # every evaluation metric is also a version tag, so any can rank
CHAMPION = "champion"
CANDIDATE = "candidate"


def ranking_score(metrics: dict[str, float]) -> float:
    """How versions are ranked: mean of TextVQA accuracy and MMBench circular accuracy (percent)."""
    return (metrics["textvqa_accuracy"] + metrics["mmbench_circular"]) / 2


def soup_tags(
    method: str, ingredient_runs: Sequence[str], scores: Sequence[float] | None, weights: Sequence[float]
) -> dict[str, str]:
    """Lineage tags of a soup version: method, then ingredients, their scores and weights as aligned JSON lists.

    JSON, not comma-joined, because an ingredient given as a local path may hold commas.
    """
    if len(weights) != len(ingredient_runs) or (scores is not None and len(scores) != len(ingredient_runs)):
        raise ValueError(f"soup lineage: {len(ingredient_runs)} ingredients but {len(weights)} weights, scores {scores}")
    tags = {
        "kind": "soup",
        "soup.method": method,
        "soup.ingredients": json.dumps(list(ingredient_runs)),
        "soup.weights": json.dumps([round(float(w), 6) for w in weights]),
    }
    if scores is not None:
        tags["soup.ingredient_scores"] = json.dumps([round(float(s), 6) for s in scores])
    return tags


def register_version(name: str, source_run_id: str, metrics: dict[str, float], tags: dict[str, str]) -> str:
    """Create a model version from the run's ``checkpoint`` artifact; returns the version number."""
    client = MlflowClient()
    try:
        client.create_registered_model(name)
    except MlflowException:
        pass  # already registered
    with step_run(f"register-{tags.get('kind', 'model')}", params={"model.name": name, "source_run": source_run_id}):
        pipeline_run = pipeline_run_id()
        all_tags = {**recipe_tags(client, pipeline_run), **tags}
        all_tags |= {SCORE_TAG: f"{ranking_score(metrics):.6f}", "pipeline.run": pipeline_run}
        all_tags |= {f"{METRIC_TAG_PREFIX}{k}": f"{v:.6f}" for k, v in metrics.items()}
        source = f"{client.get_run(source_run_id).info.artifact_uri}/checkpoint"
        version = client.create_model_version(name, source=source, run_id=source_run_id, tags=all_tags)
        mlflow.set_tags({"model.name": name, "model.version": version.version})
    return str(version.version)


def recipe_tags(client: MlflowClient, pipeline_run: str) -> dict[str, str]:
    """``recipe.hash`` / ``recipe.name``: the recipes of the data steps of the same pipeline run, in step order.

    Why look them up: a model's lineage is the whole cleaning chain (filter, then
    caption, ...), and each data step logged its own recipe in its run.
    """
    if not pipeline_run:
        return {}
    parent = client.get_run(pipeline_run)
    steps = client.search_runs(
        [parent.info.experiment_id],
        f"tags.mlflow.parentRunId = '{pipeline_run}' and tags.`recipe.hash` != ''",
        order_by=["attributes.start_time ASC"],
    )
    if not steps:
        return {}
    return {
        "recipe.hash": ",".join(run.data.tags["recipe.hash"] for run in steps),
        "recipe.name": ",".join(run.data.params.get("recipe.name", "") for run in steps),
    }


def version_score(version, metric: str = SCORE_TAG) -> float | None:
    """A version's value of ``metric`` (``score`` or any evaluation metric name); None when not recorded."""
    tag = SCORE_TAG if metric == SCORE_TAG else f"{METRIC_TAG_PREFIX}{metric}"
    value = version.tags.get(tag)
    return None if value is None else float(value)


def promote_version(name: str, version: str, metric: str = SCORE_TAG) -> dict:
    """Point ``candidate`` at ``version``; move ``champion`` to it only if it beats the holder on ``metric``.

    Higher is better. The first version of a model becomes champion; a holder
    that never recorded ``metric`` keeps the alias (nothing proves it lost).
    """
    client = MlflowClient()
    new = client.get_model_version(name, version)
    new_score = version_score(new, metric)
    if new_score is None or math.isnan(new_score):
        raise ValueError(f"metric: version {version} of {name!r} has no recorded {metric!r}")
    client.set_registered_model_alias(name, CANDIDATE, new.version)
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        champion = None
    held = None if champion is None else version_score(champion, metric)
    if champion is not None and held is None:
        log.warning("champion %s of %s has no %r: it keeps the alias", champion.version, name, metric)
    moved = champion is None or (held is not None and new_score > held)
    if moved:
        client.set_registered_model_alias(name, CHAMPION, new.version)
    holder = str(new.version if moved else champion.version)
    with step_run("promote-model", params={"model.name": name, "candidate": new.version, "metric": metric}):
        mlflow.set_tags({"champion.moved": str(moved), "champion.version": holder})
    log.info("%s: candidate %s (%s %.6g), champion %s (%s)", name, new.version, metric, new_score, holder,
             "moved" if moved else "kept")
    return {"candidate": str(new.version), "champion_moved": moved, "champion": holder}


def promote_best(name: str, pipeline_run: str, metric: str = SCORE_TAG) -> dict:
    """Promote (see ``promote_version``) the best version this pipeline run registered."""
    client = MlflowClient()
    versions = [v for v in client.search_model_versions(f"name='{name}'") if v.tags.get("pipeline.run") == pipeline_run]
    if not versions:
        raise ValueError(f"no versions of {name!r} were registered by pipeline run {pipeline_run}")
    scored = [(version_score(v, metric), v) for v in versions]
    if any(score is None for score, _ in scored):
        missing = next(v.version for score, v in scored if score is None)
        raise ValueError(f"metric: version {missing} of {name!r} has no recorded {metric!r}")
    best = max(scored, key=lambda pair: (pair[0], -int(pair[1].version)))[1]  # ties: the earliest version
    return promote_version(name, best.version, metric)


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
