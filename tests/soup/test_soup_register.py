"""Registration and alias moves against a real MLflow store (sqlite registry, file artifacts)."""

from __future__ import annotations

import json

import mlflow
import pytest

from bettersynth.steps.register import (
    CANDIDATE,
    CHAMPION,
    promote_best,
    promote_version,
    register_version,
    soup_tags,
)
from bettersynth.tracking.runs import PARENT_RUN_ENV


def source_run() -> str:
    with mlflow.start_run() as run:
        mlflow.log_dict({}, "checkpoint/config.json")
    return run.info.run_id


def metrics(textvqa: float, mmbench: float) -> dict[str, float]:
    return {"textvqa_accuracy": textvqa, "mmbench_circular": mmbench}


def aliases(client, name: str) -> dict[str, str]:
    return {alias: str(version) for alias, version in client.get_registered_model(name).aliases.items()}


def test_soup_register_first_champion_then_only_better_moves_it(mlflow_store):
    client = mlflow_store
    first = register_version("vlm", source_run(), metrics(40, 50), {"kind": "finetune"})
    assert promote_version("vlm", first) == {"candidate": "1", "champion_moved": True, "champion": "1"}
    assert aliases(client, "vlm") == {CANDIDATE: "1", CHAMPION: "1"}

    worse = register_version("vlm", source_run(), metrics(30, 50), {"kind": "finetune"})  # score 40 < 45
    assert promote_version("vlm", worse) == {"candidate": "2", "champion_moved": False, "champion": "1"}
    assert aliases(client, "vlm") == {CANDIDATE: "2", CHAMPION: "1"}

    tie = register_version("vlm", source_run(), metrics(50, 40), {"kind": "finetune"})  # 45: must *beat* it
    assert promote_version("vlm", tie)["champion"] == "1"

    better = register_version("vlm", source_run(), metrics(60, 50), {"kind": "finetune"})
    assert promote_version("vlm", better) == {"candidate": "4", "champion_moved": True, "champion": "4"}
    assert aliases(client, "vlm") == {CANDIDATE: "4", CHAMPION: "4"}
    promote_run = client.search_runs([mlflow.get_experiment_by_name("soup-tests").experiment_id],
                                     "tags.`bettersynth.step` = 'promote-model'", max_results=1)[0]
    assert promote_run.data.tags["champion.moved"] == "True"


def test_soup_register_chosen_metric_decides(mlflow_store):
    low_tvqa = register_version("m", source_run(), metrics(10, 90), {})
    promote_version("m", low_tvqa, metric="textvqa_accuracy")
    high_tvqa = register_version("m", source_run(), metrics(20, 0), {})  # worse on 'score', better on textvqa
    assert promote_version("m", high_tvqa, metric="textvqa_accuracy")["champion"] == high_tvqa
    assert promote_version("m", low_tvqa, metric="textvqa_accuracy")["champion"] == high_tvqa
    assert promote_version("m", low_tvqa, metric="score")["champion"] == low_tvqa  # score 50 beats 10
    with pytest.raises(ValueError, match="no recorded 'rouge'"):
        promote_version("m", low_tvqa, metric="rouge")


def test_soup_register_version_carries_soup_lineage(mlflow_store):
    runs = ["a" * 32, "b" * 32, "c,with,commas"]
    tags = soup_tags("greedy", runs, [61.5, 60.25, 59.0], [0.5, 0.0, 0.5])
    soup_run = source_run()
    version = register_version("vlm", soup_run, metrics(70, 50), tags)
    registered = mlflow_store.get_model_version("vlm", version)
    assert registered.run_id == soup_run
    assert registered.source.endswith("/checkpoint")
    assert registered.tags["kind"] == "soup" and registered.tags["soup.method"] == "greedy"
    assert json.loads(registered.tags["soup.ingredients"]) == runs
    assert json.loads(registered.tags["soup.ingredient_scores"]) == [61.5, 60.25, 59.0]
    assert json.loads(registered.tags["soup.weights"]) == [0.5, 0.0, 0.5]
    assert float(registered.tags["score"]) == 60.0
    assert not [key for key in registered.tags if key.startswith("metric.")]  # scores: description and source run
    assert registered.description.startswith("TextVQA 70.0 · MMBench 50.0")
    source = mlflow_store.get_run(soup_run)
    assert source.data.metrics == metrics(70, 50) and source.data.tags["mlflow.note.content"] == registered.description
    with pytest.raises(ValueError, match="3 ingredients but 2 weights"):
        soup_tags("uniform", runs, None, [0.5, 0.5])


def test_soup_register_promote_best_of_one_pipeline_run(mlflow_store, monkeypatch):
    pipelines = []
    for _ in range(2):
        with mlflow.start_run(run_name="pipeline") as parent:
            pipelines.append(parent.info.run_id)
    monkeypatch.setenv(PARENT_RUN_ENV, pipelines[0])
    for textvqa in (30, 50, 40):
        register_version("vlm", source_run(), metrics(textvqa, 0), {})
    assert promote_best("vlm", pipelines[0]) == {"candidate": "2", "champion_moved": True, "champion": "2"}
    monkeypatch.setenv(PARENT_RUN_ENV, pipelines[1])
    register_version("vlm", source_run(), metrics(45, 0), {})  # best of run 2, worse than the champion
    assert promote_best("vlm", pipelines[1]) == {"candidate": "4", "champion_moved": False, "champion": "2"}
    with pytest.raises(ValueError, match="pipeline run nope"):
        promote_best("vlm", "nope")
