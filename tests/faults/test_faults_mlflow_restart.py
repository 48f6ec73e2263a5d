"""The MLflow server killed mid-pipeline and restarted on the same store: the rerun of the same quickstart
completes and reads as one uninterrupted pipeline run: each model registered once, each step once under
one parent run, the same scores and dataset hash as a run that was never interrupted.

Real servers: ``mlflow server`` on sqlite on loopback, SIGKILLed as a process group the moment its
store holds a model version (a thread watches the sqlite file), restarted on the same store and port.
The whole-pipeline case is slow (three kfp.local runs: ``pytest -m slow tests/faults``); the register
step's half of it runs by default.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import dvc.repo  # noqa: F401  DVC binds its log handlers to sys.stdout on first import
import mlflow
import pytest
from mlflow import MlflowClient
from tracking_servers import BIN, _wait_http, free_port

from bettersynth.core.retry import BUDGET_ENV, ServiceUnavailable
from bettersynth.steps.register import model_label, register_version
from bettersynth.tracking.attempts import ATTEMPT_ENV, parent_run, pipeline_key
from bettersynth.tracking.outage import outage_policy
from bettersynth.tracking.runs import PARENT_RUN_ENV, STEP_TAG, ensure_experiment, step_run
from bettersynth_demo.quickstart import QuickstartConfig, run_quickstart
from bettersynth_demo.world import WorldConfig

MODEL = "bettersynth-vlm"
BUDGET_S = 6  # the outage budget while the server is away: the failure must come within a few of it
# tests/tracking's pipeline world: the smallest the quickstart's recipes and benchmarks accept
WORLD = WorldConfig(n_seed_samples=40, n_instruct=16, n_textvqa=6, n_mmbench=4, n_heldout_textvqa=4, n_heldout_mmbench=3)


@contextlib.contextmanager
def killable_mlflow(root: Path, port: int) -> Iterator[subprocess.Popen]:
    """``mlflow server`` on 127.0.0.1:``port`` over ``root/mlflow.db``, in its own process group; yields the process.

    Why not ``tracking_servers.mlflow_server``: a restart needs the same port and store, and the kill a process.
    """
    (root / "artifacts").mkdir(parents=True, exist_ok=True)
    args = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", (root / "artifacts").as_uri()]
    with (root / "mlflow-server.log").open("a") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", process, root / "mlflow-server.log")
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def kill_on_first_version(process: subprocess.Popen, store: Path) -> dict[str, float]:
    """SIGKILL the server's process group as soon as ``store`` (its sqlite file) holds a model version;
    the returned dict gets ``killed_at`` (``time.monotonic()``) then."""
    seen: dict[str, float] = {}

    def watch() -> None:
        while process.poll() is None:
            try:
                with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=1)) as db:
                    versions = db.execute("SELECT count(*) FROM model_versions").fetchone()[0]
            except sqlite3.Error:  # not created yet, or locked by a write
                versions = 0
            if versions:
                os.killpg(process.pid, signal.SIGKILL)
                seen["killed_at"] = time.monotonic()
                return
            time.sleep(0.02)

    threading.Thread(target=watch, daemon=True).start()
    return seen


@pytest.fixture
def clean_tracking(monkeypatch):
    """No pipeline run inherited from the environment; this process's tracking URI put back afterwards."""
    previous = mlflow.get_tracking_uri()
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", PARENT_RUN_ENV, ATTEMPT_ENV):
        monkeypatch.delenv(name, raising=False)
    yield
    mlflow.set_tracking_uri(previous)


def _config(workspace: Path, url: str) -> QuickstartConfig:
    return QuickstartConfig(workspace=workspace, seeds=[0], world=WORLD, soup_methods=("uniform",), tracking_uri=url)


def _variant_files(workspace: Path) -> dict[str, str]:
    """The versioned dataset's files and their digests (the data step's own record, which names its MLflow
    run, is not versioned: ``steps.version``)."""
    folder = workspace / "data" / "variants" / "quickstart"
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def _record(url: str, summary) -> dict:
    """What a pipeline run left in the store at ``url``: registered models, step runs, top-level runs, scores, data."""
    mlflow.set_tracking_uri(url)
    client = MlflowClient()
    versions = client.search_model_versions(f"name='{MODEL}'")
    dataset_hash = next(row["dataset_hash"] for row in summary.datasets if row["step"] == "version-dataset")
    children = client.search_runs([summary.experiment_id], f"tags.mlflow.parentRunId = '{summary.parent_run_id}'",
                                  max_results=1000)
    everything = client.search_runs([summary.experiment_id], "", max_results=1000)
    return {
        "registered": sorted(model_label(v.tags) for v in versions),
        "registered_by": {v.tags.get("pipeline.run") for v in versions},
        "lineage_hashes": {v.tags.get("dataset.hash") for v in versions} | {m["dataset_hash"] for m in summary.models},
        "dataset_hash": dataset_hash,
        "steps": Counter((r.data.tags[STEP_TAG], r.info.run_name) for r in children),
        "step_status": {r.info.status for r in children},
        "parents": [r.info.run_id for r in everything if "mlflow.parentRunId" not in r.data.tags],
        "parent_status": client.get_run(summary.parent_run_id).info.status,
        "models": sorted((m["model"], m["textvqa"], m["mmbench_circular"]) for m in summary.models),
        "datasets": [{k: v for k, v in row.items() if k not in ("run_id", "dataset_hash")} for row in summary.datasets],
        "variant": _variant_files(summary.workspace),
        "registry": sorted((r["kind"], r["score"]) for r in summary.registry),
        "aliases": sorted(summary.aliases),
    }


@pytest.mark.slow
def test_faults_mlflow_killed_mid_pipeline_rerun_reads_as_one_run(tmp_path, clean_tracking, monkeypatch):
    monkeypatch.setenv(BUDGET_ENV, str(BUDGET_S))
    reference_port, port = free_port(), free_port()
    (tmp_path / "reference").mkdir()
    with killable_mlflow(tmp_path / "reference", reference_port):
        url = f"http://127.0.0.1:{reference_port}"
        expected = _record(url, run_quickstart(_config(tmp_path / "ws-reference", url)))
    assert expected["registered"] == ["seed0", "soup-uniform"] and expected["parent_status"] == "FINISHED"

    url, root, workspace = f"http://127.0.0.1:{port}", tmp_path / "server", tmp_path / "ws"
    root.mkdir()
    with killable_mlflow(root, port) as server:
        kill = kill_on_first_version(server, root / "mlflow.db")
        with pytest.raises(ServiceUnavailable) as err, outage_policy(kept=f"the workspace {workspace}"):
            run_quickstart(_config(workspace, url))
        failed_at = time.monotonic()
    assert "killed_at" in kill, "the pipeline failed before the server was killed"
    assert err.value.url == url and str(err.value).startswith(f"MLflow tracking server at {url} unreachable")
    assert "\n" not in str(err.value)
    # the step that met the dead server gave up within its budget, then the driver's own last call did
    assert failed_at - kill["killed_at"] < 3 * BUDGET_S + 15, failed_at - kill["killed_at"]

    with killable_mlflow(root, port):  # the same store, the same port
        mlflow.set_tracking_uri(url)
        client = MlflowClient()
        interrupted = client.search_model_versions(f"name='{MODEL}'")
        assert [model_label(v.tags) for v in interrupted] == ["seed0"]  # killed after one registration, before the soup's
        killed_parent = interrupted[0].tags["pipeline.run"]
        assert client.get_run(killed_parent).info.status != "FINISHED"
        summary = run_quickstart(_config(workspace, url))
        rerun = _record(url, summary)

    assert summary.parent_run_id == killed_parent and rerun["parents"] == [killed_parent]  # one pipeline run
    assert rerun["parent_status"] == "FINISHED" and rerun["step_status"] == {"FINISHED"}
    assert max(rerun["steps"].values()) == 1, rerun["steps"]  # every step once among the live children
    assert rerun["steps"] == expected["steps"]
    assert rerun["registered"] == expected["registered"] and rerun["registered_by"] == {killed_parent}
    assert rerun["lineage_hashes"] == {rerun["dataset_hash"]}  # the versions name the rerun's dataset, not the killed one's
    for key in ("models", "datasets", "variant", "dataset_hash", "registry", "aliases"):
        assert rerun[key] == expected[key], key


def test_faults_register_step_rerun_registers_each_model_once(tmp_path, clean_tracking):
    """The register step's half: rerun on the same source run it keeps its version; rerun after its
    train step was rerun (the earlier train run superseded) the new version takes the old one's place."""
    # the store a server would use, without the server: this half needs no HTTP
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = MlflowClient()
    experiment_id = ensure_experiment("restart")
    metrics = {"textvqa_accuracy": 10.0, "mmbench_circular": 20.0}
    tags = {"kind": "finetune", "train.seed": "0"}
    with parent_run(experiment_id, "pipeline", pipeline_key("pipeline", experiment_id, {})) as parent:
        os.environ.update({PARENT_RUN_ENV: parent.info.run_id, "MLFLOW_EXPERIMENT_ID": experiment_id})
        try:
            os.environ[ATTEMPT_ENV] = "first"
            with step_run("train-seed0", title=["seed 0"]) as first_train:
                pass
            first = register_version("vlm", first_train.info.run_id, metrics, tags)

            os.environ[ATTEMPT_ENV] = "second"  # only the register step again, on the same run
            assert register_version("vlm", first_train.info.run_id, metrics, tags) == first

            os.environ[ATTEMPT_ENV] = "third"  # train and register again
            with step_run("train-seed0", title=["seed 0"]) as train:
                pass
            again = register_version("vlm", train.info.run_id, metrics, tags)
        finally:
            for name in (PARENT_RUN_ENV, "MLFLOW_EXPERIMENT_ID", ATTEMPT_ENV):
                os.environ.pop(name, None)
    versions = client.search_model_versions("name='vlm'")
    assert [(str(v.version), v.run_id) for v in versions] == [(str(again), train.info.run_id)] and again != first
    assert client.get_run(first_train.info.run_id).info.lifecycle_stage == "deleted"  # superseded, restorable
    children = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(r.data.tags[STEP_TAG] for r in children) == ["register-finetune", "train-seed0"]
