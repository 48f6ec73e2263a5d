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
import time
from collections.abc import Sequence

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from bettersynth.tracking.runs import (
    data_step_runs,
    dvc_dataset_inputs,
    model_title,
    pipeline_run_id,
    run_title,
    step_run,
)
from bettersynth.tracking.ui import describe_run, score_line

log = logging.getLogger(__name__)

SCORE_TAG = "score"  # the tag holding a version's ranking score; other metrics rank from its source run
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


def model_label(tags: dict[str, str]) -> str:
    """Which model a version (or its lineage ``tags``) is: ``seed0``, ``soup-greedy``, else its kind."""
    seed = tags.get("train.seed", "")
    return f"soup-{tags['soup.method']}" if tags.get("soup.method") else f"seed{seed}" if seed else tags.get("kind", "model")


def register_version(name: str, source_run_id: str, metrics: dict[str, float], tags: dict[str, str]) -> str:
    """Create a model version from the run's ``checkpoint`` artifact; returns the version number.

    The version carries a description a person reads in the registry (recipe, kept
    samples, dataset, scores, soup ingredients) and a few tags (lineage, ``score``); the
    source run gets the same description and the evaluation metrics, so its row in the
    runs table and the version's "Source Run" show the scores, and ``promote_version``
    can rank by any of them. The run's logged model, whose source is that run, lists the version.

    Registering is keyed by pipeline run, model and source run, so a rerun of an
    interrupted pipeline run registers each model once (``earlier_version``).
    """
    client = MlflowClient()
    try:
        client.create_registered_model(name)
    except MlflowException:
        pass  # already registered
    pipeline_run = pipeline_run_id()
    steps = data_step_runs(pipeline_run, client)
    model = model_label(tags)
    with step_run(f"register-{tags.get('kind', 'model')}", params={"model.name": name, "source_run": source_run_id},
                  title=[model_title(model), "register"]):
        all_tags = {**recipe_tags(steps), **tags}
        all_tags |= {SCORE_TAG: str(round(ranking_score(metrics), 6)), "pipeline.run": pipeline_run}
        _log_scores(client, source_run_id, metrics)
        source_run = client.get_run(source_run_id)
        source = f"{source_run.info.artifact_uri}/checkpoint"
        # The run's LoggedModel (steps.train._log_checkpoint, steps.soup). Not passed as the version's
        # model_id: a server then requires the source inside the LoggedModel's own artifacts, and the
        # checkpoint is the run's; the two link through the model's mlflow.modelVersions tag instead.
        model_id = source_run.data.tags.get("model.id")
        inputs = dvc_dataset_inputs(source_run) or (dvc_dataset_inputs(client.get_run(pipeline_run)) if pipeline_run else [])
        variant = inputs[0]["name"] if inputs else ""
        description = version_description(client, model, steps, source_run, metrics, all_tags, variant, model_id)
        version = earlier_version(client, name, pipeline_run, model, source_run_id)
        if version is None:
            version = client.create_model_version(name, source=source, run_id=source_run_id, tags=all_tags,
                                                  description=description)
        describe_run(source_run_id, description, client)
        if model_id:
            _link_logged_model(client, model_id, name, str(version.version))
        mlflow.set_tags({"model.name": name, "model.version": version.version})
    return str(version.version)


def _log_scores(client: MlflowClient, run_id: str, metrics: dict[str, float]) -> None:
    """Log the evaluation ``metrics`` on the model's own run, unless it holds them already."""
    from mlflow.entities import Metric

    logged = client.get_run(run_id).data.metrics
    now = int(time.time() * 1000)
    new = [Metric(key, float(value), now, 0) for key, value in metrics.items() if logged.get(key) != float(value)]
    if new:
        client.log_batch(run_id, metrics=new)


def _link_logged_model(client: MlflowClient, model_id: str, name: str, version: str) -> None:
    """Record the version on its logged model, as ``mlflow.register_model`` does: the model's page lists it."""
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    known = json.loads(client.get_logged_model(model_id).tags.get(MLFLOW_MODEL_VERSIONS, "[]"))
    if {"name": name, "version": version} in known:
        return
    client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(known + [{"name": name, "version": version}])})


def earlier_version(client: MlflowClient, name: str, pipeline_run: str, model: str, source_run_id: str):
    """This pipeline run's version of ``model`` from ``source_run_id`` if an earlier attempt registered it
    (the register step ran again on the same run); versions of ``model`` whose source run a rerun of
    its step superseded (deleted, ``tracking.attempts``) are deleted, the new one takes their place.
    """
    if not pipeline_run:
        return None
    mine = [v for v in client.search_model_versions(f"name='{name}'")
            if v.tags.get("pipeline.run") == pipeline_run and model_label(v.tags) == model]
    for version in mine:
        if version.run_id != source_run_id and _run_deleted(client, version.run_id):
            client.delete_model_version(name, version.version)
    return next((v for v in mine if v.run_id == source_run_id), None)


def _run_deleted(client: MlflowClient, run_id: str) -> bool:
    try:
        return client.get_run(run_id).info.lifecycle_stage == "deleted"
    except MlflowException:
        return True  # gone from the store altogether


def recipe_tags(steps: list) -> dict[str, str]:
    """``recipe.hash`` / ``recipe.name``: the recipes of a pipeline run's data steps (``data_step_runs``), in step order.

    Why look them up: a model's lineage is the whole cleaning chain (filter, then
    caption, ...), and each data step logged its own recipe in its run.
    """
    if not steps:
        return {}
    return {
        "recipe.hash": ",".join(run.data.tags["recipe.hash"] for run in steps),
        "recipe.name": ",".join(run.data.params.get("recipe.name", "") for run in steps),
    }


def version_description(client: MlflowClient, model: str, steps: list, source_run, metrics: dict[str, float],
                        tags: dict[str, str], variant: str = "", model_id: str | None = None) -> str:
    """What the registry shows for a version: a headline (scores, model, recipe, kept), then one line per fact.

    The versions table shows the headline's first 29 characters, beside the version's tags
    (kind, seed, soup method): the scores come first. The rest reads as a list on the version's page.
    """
    recipes = [run.data.params.get("recipe.name", "?") for run in steps]
    kept = steps[-1].data.metrics.get("kept") if steps else None
    dataset_hash = tags.get("dataset.hash", "")
    lines = [run_title(score_line(metrics), model_title(model), " + ".join(recipes), f"{int(kept)} kept samples" if kept is not None else "")]
    if steps:
        lines.append("- recipe: " + ", ".join(f"{n} ({run.data.tags['recipe.hash'][:12]})" for n, run in zip(recipes, steps)))
    if kept is not None:
        lines.append(f"- kept samples: {int(kept)}")
    if dataset_hash:
        lines.append(f"- dataset: {variant + ', ' if variant else ''}DVC hash {dataset_hash}")
    lines.append(f"- TextVQA accuracy: {metrics.get('textvqa_accuracy', float('nan')):.2f}")
    lines.append(f"- MMBench circular: {metrics.get('mmbench_circular', float('nan')):.2f}"
                 + (f" (single {metrics['mmbench_single']:.2f})" if "mmbench_single" in metrics else ""))
    lines.append(f"- score (mean of the two): {ranking_score(metrics):.2f}" if {"textvqa_accuracy", "mmbench_circular"} <= set(metrics) else "")
    if tags.get("soup.method"):
        lines.append(f"- soup ingredients ({tags['soup.method']}): " + _ingredients(client, tags))
    lines.append(f"- run: {source_run.info.run_name} ({source_run.info.run_id})"
                 + (f", logged model {model_id}" if model_id else ""))
    return "\n".join(line for line in lines if line)


def _ingredients(client: MlflowClient, tags: dict[str, str]) -> str:
    """Each soup ingredient by its run's name, with its weight and held-out score."""
    runs = json.loads(tags.get("soup.ingredients", "[]"))
    weights = json.loads(tags.get("soup.weights", "[]"))
    scores = json.loads(tags.get("soup.ingredient_scores", "null")) or [None] * len(runs)
    parts = []
    for run_id, weight, score in zip(runs, weights, scores):
        try:
            title = client.get_run(run_id).info.run_name
        except MlflowException:
            title = run_id  # a local path, or a run of another store
        parts.append(f"{title} (weight {weight:.2f}" + (f", held-out {score:.1f})" if score is not None else ")"))
    return "; ".join(parts)


def version_score(version, metric: str = SCORE_TAG, client: MlflowClient | None = None) -> float | None:
    """A version's value of ``metric``: its ``score`` tag, or an evaluation metric of its source run; None when not recorded."""
    if metric == SCORE_TAG:
        value = version.tags.get(SCORE_TAG)
        return None if value is None else float(value)
    legacy = version.tags.get(f"metric.{metric}")  # versions registered before the metrics moved to the run
    try:
        value = (client or MlflowClient()).get_run(version.run_id).data.metrics.get(metric)
    except MlflowException:
        value = None  # the source run is gone (deleted, or another store's)
    return value if value is not None else None if legacy is None else float(legacy)


def promote_version(name: str, version: str, metric: str = SCORE_TAG) -> dict:
    """Point ``candidate`` at ``version``; move ``champion`` to it only if it beats the holder on ``metric``.

    Higher is better. The first version of a model becomes champion; a holder
    that never recorded ``metric`` keeps the alias (nothing proves it lost).
    """
    client = MlflowClient()
    new = client.get_model_version(name, version)
    new_score = version_score(new, metric, client)
    if new_score is None or math.isnan(new_score):
        raise ValueError(f"metric: version {version} of {name!r} has no recorded {metric!r}")
    client.set_registered_model_alias(name, CANDIDATE, new.version)
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        champion = None
    held = None if champion is None else version_score(champion, metric, client)
    if champion is not None and held is None:
        log.warning("champion %s of %s has no %r: it keeps the alias", champion.version, name, metric)
    moved = champion is None or (held is not None and new_score > held)
    if moved:
        client.set_registered_model_alias(name, CHAMPION, new.version)
    holder = str(new.version if moved else champion.version)
    with step_run("promote-model", params={"model.name": name, "candidate": new.version, "metric": metric},
                  title=["promote"]):
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
    scored = [(version_score(v, metric, client), v) for v in versions]
    if any(score is None for score, _ in scored):
        missing = next(v.version for score, v in scored if score is None)
        raise ValueError(f"metric: version {missing} of {name!r} has no recorded {metric!r}")
    best = max(scored, key=lambda pair: (pair[0], -int(pair[1].version)))[1]  # ties: the earliest version
    return promote_version(name, best.version, metric)

