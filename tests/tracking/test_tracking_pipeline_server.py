"""The quickstart pipeline against a real `mlflow server` (sqlite): runs, artifacts, compare, checkout by run id.

Slow (the whole kfp.local loop, minutes on 2 cores): ``pytest -m slow tests/tracking``.
The same checks on the data steps alone run by default in test_tracking_servers.py.
"""

from __future__ import annotations

import pytest
from mlflow import MlflowClient
from PIL import Image

from bettersynth.cli.main import main
from bettersynth.reports.compare import collect_rows, sort_rows
from bettersynth.tracking.runs import STEP_TAG
from bettersynth.versioning.dvc import checkout, directory_hash, ensure_dvc_project

pytestmark = pytest.mark.slow


def _children(summary):
    client = MlflowClient()
    runs = client.search_runs([summary.experiment_id], f"tags.mlflow.parentRunId = '{summary.parent_run_id}'")
    return {r.data.tags[STEP_TAG]: r for r in runs}


def test_steps_log_recipe_params_per_op_metrics_and_pictures(pipeline_run, sqlite_server, tracking_to, tmp_path):
    tracking_to(sqlite_server)
    _, summary = pipeline_run
    steps = _children(summary)
    assert {"filter", "caption", "version-dataset", "train-seed0", "evaluate-seed0", "soup-uniform"} <= set(steps)
    run = steps["filter"]
    assert run.data.params["recipe.name"] == "quickstart-filter"
    assert len(run.data.params["recipe.hash"]) == 64
    assert run.data.params["words_num_filter.min_num"] == "10"
    assert run.data.params["image_text_similarity_filter.min_score"] == "-0.05"
    client = MlflowClient()
    per_op = client.get_metric_history(run.info.run_id, "op/filtered")
    assert sorted(m.step for m in per_op) == [0, 1]
    assert sum(m.value for m in per_op) == run.data.metrics["filtered"]  # filters only: every drop is one op's
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied through the server
    for name in ("sample_sheet.png", "stat_histograms.png"):
        path = client.download_artifacts(run.info.run_id, f"sheets/{name}", str(tmp_path))
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 300


def test_compare_reads_back_the_run(pipeline_run, sqlite_server, tracking_to, tmp_path, capsys):
    tracking_to(sqlite_server)
    _, summary = pipeline_run
    rows = [r for r in collect_rows(["bettersynth-quickstart"]) if r.pipeline_run == summary.parent_run_id]
    assert {r.model for r in rows} == {"seed0", "soup-uniform"}
    caption = next(d for d in summary.datasets if d["step"] == "caption")
    version = next(d for d in summary.datasets if d["step"] == "version-dataset")
    by_label = {m["model"]: m for m in summary.models}
    for row in rows:
        assert row.kept == caption["kept"]
        assert row.dataset_hash == version["dataset_hash"]
        assert row.recipe_name == "quickstart-filter+quickstart-recaption"
        assert row.textvqa == by_label[row.model]["textvqa"]
        assert row.model_version.startswith("bettersynth-vlm v")
    assert next(r for r in rows if r.model == "soup-uniform").soup_method == "uniform"
    assert sum("champion" in r.model_version for r in rows) == 1
    ordered = sort_rows(rows, "mmbench_circular")
    assert ordered[0].mmbench_circular >= ordered[-1].mmbench_circular

    chart = tmp_path / "compare.png"
    assert main(["compare", "--tracking-uri", sqlite_server, "--experiment", "bettersynth-quickstart", "--chart", str(chart)]) == 0
    out = capsys.readouterr().out
    assert version["dataset_hash"] in out and "quickstart-filter+quickstart-recaption" in out
    with Image.open(chart) as image:
        assert image.format == "PNG"


def test_checkout_by_run_id_in_a_clean_clone(pipeline_run, sqlite_server, tracking_to, tmp_path):
    tracking_to(sqlite_server)
    workspace, summary = pipeline_run
    steps = _children(summary)
    expected = steps["version-dataset"].data.tags["dataset.hash"]
    for reference, how in ((steps["version-dataset"].info.run_id, "pointer artifact"),
                           (summary.parent_run_id, "parent run"),
                           (steps["train-seed0"].info.run_id, "train run tag")):
        clone = tmp_path / how.replace(" ", "-")
        ensure_dvc_project(clone, remote_url=str(workspace / ".dvc-remote"))  # same remote, nothing else
        path, resolved = checkout(clone, reference)
        assert resolved.dataset_hash == expected, how
        assert directory_hash(clone, path) == expected, how
        assert (path / "samples.jsonl").read_bytes() == (workspace / "data" / "variants" / "quickstart" / "samples.jsonl").read_bytes()
    # the pointer artifact carries the lineage meta, so `data log` in the clone shows it
    assert "quickstart.dvc" in {p.name for p in (tmp_path / "pointer-artifact" / "data" / "variants").iterdir()}
