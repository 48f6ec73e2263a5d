"""The S3 endpoint behind the MLflow server hangs while a step logs its checkpoint: the step fails
in the one-line ``ServiceUnavailable`` naming the tracking server, within the bound its MLflow HTTP
settings give the outage budget, and keeps its checkpoint; rerun once the endpoint answers, the
same run holds the same artifacts, byte for byte, as an uninterrupted run.

As deployed (k8s/base/mlflow.yaml), step pods know only the tracking URI: they PUT each artifact
file to ``mlflow server --serve-artifacts``, which writes it to S3 and answers once it is written.
The endpoint is moto in its own process, frozen with SIGSTOP mid-upload and thawed with SIGCONT
(its buckets intact). The rerun uploads every file again, those already in the bucket included:
MLflow's proxied artifact client PUTs each file of a folder (``HttpArtifactRepository.log_artifacts``)
and the server's listing gives paths and sizes only, no digest a client could skip by.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from fault_services import pausable_moto
from tracking_servers import BIN, _process, free_port

from bettersynth.core.retry import BUDGET_ENV, ServiceUnavailable
from bettersynth.steps.train import _log_checkpoint
from bettersynth.tracking.outage import SERVICE, mlflow_http_settings
from bettersynth.tracking.runs import ensure_experiment, step_run

boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto", reason="moto[server] is not installed")

BUCKET, PREFIX = "mlflow", "artifacts"  # the server's --artifacts-destination s3://mlflow/artifacts
N_SHARDS = 12  # files PUT one at a time: the freeze lands mid-upload, not after it
FREEZE_AFTER = 4  # objects of the run in the bucket when the endpoint freezes
BUDGET = 6  # seconds, for the step that meets the frozen endpoint: 2 s per HTTP try
# For the uninterrupted uploads: a cold server's first S3 write (boto3 loading) can pass the 2 s a
# try gets under BUDGET on a loaded machine, which would be a slow server, not this fault.
RELAXED_BUDGET = 120
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@contextlib.contextmanager
def proxying_mlflow_server(root: Path, s3_endpoint: str) -> Iterator[str]:
    """``mlflow server --serve-artifacts`` on loopback writing artifacts to ``s3://mlflow/artifacts`` at
    ``s3_endpoint`` (credentials in its environment only, as the deployment's Secret); yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination", f"s3://{BUCKET}/{PREFIX}", "--serve-artifacts"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "BETTERSYNTH_"))}
    env |= CREDENTIALS | {"MLFLOW_S3_ENDPOINT_URL": s3_endpoint}
    with _process(args, root / "mlflow-server.log", f"{url}/health", env=env):
        yield url


@pytest.fixture
def served(tmp_path, monkeypatch):
    """(boto3 client on the bucket, moto's process, experiment id) with MLflow pointed at the server."""
    previous = mlflow.get_tracking_uri()
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "BETTERSYNTH_PARENT_RUN_ID", "BETTERSYNTH_KFP_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    with pausable_moto(tmp_path) as (endpoint, moto):
        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket=BUCKET)
        with proxying_mlflow_server(tmp_path, endpoint) as url:
            monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
            mlflow.set_tracking_uri(url)
            try:
                yield client, moto, ensure_experiment("faults")
            finally:
                mlflow.set_tracking_uri(previous)


def _checkpoint(folder: Path) -> dict[str, bytes]:
    """A checkpoint folder as a trainer leaves it (config + shards of seeded bytes); its files' bytes."""
    folder.mkdir()
    rng = random.Random(0)
    (folder / "config.json").write_text(json.dumps({"model_type": "llava"}))
    for i in range(N_SHARDS):
        (folder / f"model-{i + 1:05d}-of-{N_SHARDS:05d}.safetensors").write_bytes(rng.randbytes(64 << 10))
    return _files(folder)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _train_step(checkpoint: Path, run_id: str, monkeypatch) -> None:
    """What the train step does with its final checkpoint, in the run KFP's MLflow plugin made for it."""
    monkeypatch.setenv("MLFLOW_RUN_ID", run_id)  # the plugin's injection: a retried step logs into the same run
    with step_run("train-seed0", tags={"train.seed": "0"}) as run:
        _log_checkpoint(checkpoint, {"train.seed": "0"}, run.info.run_id)


def _run_prefix(run_id: str) -> str:
    """The S3 prefix of the run's artifacts (``mlflow-artifacts:/<exp>/<run>/artifacts`` on the server)."""
    return f"{PREFIX}/{mlflow.get_run(run_id).info.artifact_uri.removeprefix('mlflow-artifacts:/')}/"


def _objects(client, prefix: str) -> dict[str, dict]:
    """Key below ``prefix`` -> its listing entry, every page."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {o["Key"].removeprefix(prefix): o for page in pages for o in page.get("Contents", [])}


def _bodies(client, prefix: str) -> dict[str, bytes]:
    return {key: client.get_object(Bucket=BUCKET, Key=prefix + key)["Body"].read() for key in _objects(client, prefix)}


def _settled(client, prefix: str) -> dict[str, dict]:
    """The listing once a thawed endpoint has written what the server's stuck requests held (two equal listings)."""
    previous = _objects(client, prefix)
    while True:
        time.sleep(0.5)
        current = _objects(client, prefix)
        if current == previous:
            return current
        previous = current


def _bound_s(budget: float) -> float:
    """How long MLflow's client may wait on a server that never answers, under ``mlflow_http_settings(budget)``:
    every try's read timeout and the waits urllib3 puts between them (none before the first retry,
    ``factor * 2**(n - 1)`` plus jitter before the n-th)."""
    settings = mlflow_http_settings(budget)
    tries = int(settings["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]) + 1
    factor = float(settings["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"])
    jitter = float(settings["MLFLOW_HTTP_REQUEST_BACKOFF_JITTER"])
    waits = sum(factor * 2 ** (n - 1) + jitter for n in range(2, tries))
    return tries * int(settings["MLFLOW_HTTP_REQUEST_TIMEOUT"]) + waits


@pytest.mark.slow  # moto and an MLflow server in their own processes, three uploads, one frozen: 60 to 110 s
def test_faults_mlflow_artifact_store_hangs_mid_upload_and_rerun_completes_the_run(served, tmp_path, monkeypatch):
    client, moto, experiment_id = served
    local = _checkpoint(tmp_path / "checkpoint")
    new_run = lambda: mlflow.MlflowClient().create_run(experiment_id).info.run_id  # noqa: E731  KFP's backend

    monkeypatch.setenv(BUDGET_ENV, str(RELAXED_BUDGET))
    reference_run = new_run()
    _train_step(tmp_path / "checkpoint", reference_run, monkeypatch)  # the uninterrupted upload
    reference = _bodies(client, _run_prefix(reference_run))
    assert reference == {f"checkpoint/{name}": data for name, data in local.items()}

    monkeypatch.setenv(BUDGET_ENV, str(BUDGET))
    run_id = new_run()
    prefix = _run_prefix(run_id)
    failed: list[BaseException] = []

    def upload() -> None:
        try:
            _train_step(tmp_path / "checkpoint", run_id, monkeypatch)
        except BaseException as exc:  # noqa: BLE001  handed to the test thread
            failed.append(exc)

    uploader = threading.Thread(target=upload, daemon=True)
    uploader.start()
    while len(_objects(client, prefix)) < FREEZE_AFTER and uploader.is_alive():
        time.sleep(0.02)
    os.kill(moto.pid, signal.SIGSTOP)  # the server's S3 endpoint hangs mid-upload
    frozen = time.monotonic()
    uploader.join(timeout=3 * _bound_s(BUDGET))
    assert not uploader.is_alive(), "the step outlived 3x its HTTP bound"  # left to end when moto is killed
    took = time.monotonic() - frozen
    # every try of the file in flight times out; 2 s more for marking the run failed on a loaded machine
    assert took <= _bound_s(BUDGET) + 2, took
    assert len(failed) == 1 and isinstance(failed[0], ServiceUnavailable), failed
    error = failed[0]
    assert (error.service, error.url) == (SERVICE, mlflow.get_tracking_uri())
    assert "ReadTimeoutError" in error.cause and "\n" not in str(error)
    assert _files(tmp_path / "checkpoint") == local  # nothing local lost
    run = mlflow.get_run(run_id)
    assert run.info.status == "FAILED" and "model.id" not in run.data.tags  # no model names a partial checkpoint

    os.kill(moto.pid, signal.SIGCONT)  # the endpoint answers again, its buckets intact
    before = _settled(client, prefix)
    assert FREEZE_AFTER <= len(before) < len(reference), sorted(before)  # the upload was cut short
    time.sleep(1.1)  # S3 listings date objects to the second: a rewrite must read as later
    monkeypatch.setenv(BUDGET_ENV, str(RELAXED_BUDGET))
    _train_step(tmp_path / "checkpoint", run_id, monkeypatch)  # the rerun, in the same run
    assert _bodies(client, prefix) == reference
    after = _objects(client, prefix)
    # MLflow re-uploads every file, those already there too (see the module docstring)
    assert all(after[key]["LastModified"] > entry["LastModified"] for key, entry in before.items())
    run = mlflow.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["model.id"]
    (model,) = [m for m in mlflow.search_logged_models([experiment_id], output_format="list")
                if m.source_run_id == run_id]  # made once, by the rerun, on the whole checkpoint
    assert model.model_id == run.data.tags["model.id"]
    assert model.tags["checkpoint.artifact"] == f"runs:/{run_id}/checkpoint"
