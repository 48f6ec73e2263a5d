"""With the MLflow server or the DVC remote down, a step fails fast naming the URL, after bounded
retries; nothing local is deleted; the same step completes once the service is back.

Real services on loopback: ``mlflow server`` and moto's S3 server, started, killed and started
again on the same port.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow.exceptions import MlflowException
from robust_data import clean_dataset

from bettersynth.core.retry import ServiceUnavailable
from bettersynth.recipes.recipe import Recipe
from bettersynth.recipes.runner import run_recipe
from bettersynth.steps.process import process_dataset
from bettersynth.steps.version import version_dataset
from bettersynth.tracking.runs import step_run
from bettersynth.versioning.dvc import ENDPOINT_ENV, REMOTE_ENV, directory_hash

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow  # each test starts real servers twice


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _server(args: list[str], health: str, log: Path) -> Iterator[None]:
    """A server child process, up once ``health`` answers; stopped by its own process group id."""
    with log.open("a") as handle:
        process = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log.read_text()[-2000:]
            try:
                with urllib.request.urlopen(health, timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, f"{health} did not come up"
                time.sleep(0.3)
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 9)
        process.wait()


def _mlflow_server(root: Path, port: int):
    args = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", (root / "artifacts").as_uri()]
    return _server(args, f"http://127.0.0.1:{port}/health", root / "mlflow.log")


@pytest.fixture
def tracking_server_url(tmp_path, monkeypatch):
    """A URL for an MLflow server (not started); tracking points at it for the test."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    previous = mlflow.get_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "BETTERSYNTH_PARENT_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    mlflow.set_tracking_uri(url)
    (tmp_path / "server" / "artifacts").mkdir(parents=True)
    yield url, port, tmp_path / "server"
    mlflow.set_tracking_uri(previous)


def test_robust_mlflow_down_fails_fast_keeps_outputs_and_rerun_completes(tracking_server_url, tmp_path, caplog):
    url, port, server_root = tracking_server_url
    data = tmp_path / "data"
    clean_dataset(data, 20)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"process": [{"words_num_filter": {"min_num": 3}}]}))
    out = tmp_path / "out"
    # the data work of an earlier attempt is on disk; its tracking failed
    run_recipe(Recipe.load(recipe), data / "samples.jsonl", data, out, resume_key="fraction=1.0,seed=0", chunk_size=2048)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    started = time.monotonic()
    with pytest.raises(ServiceUnavailable) as err:
        process_dataset("filter", data, recipe, out, data)
    assert time.monotonic() - started < 30
    assert url in str(err.value) and "MLflow tracking server" in str(err.value) and "3 attempt(s)" in str(err.value)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before

    with _mlflow_server(server_root, port), caplog.at_level(logging.INFO, logger="bettersynth"):
        summary = process_dataset("filter", data, recipe, out, data)
        run = mlflow.get_run(summary["mlflow_run_id"])
    assert "nothing to do" in caplog.text  # the data work was not repeated
    assert run.data.metrics["kept"] == summary["kept"] == 20
    assert (out / "step.json").is_file()


def test_robust_mlflow_dying_mid_step_fails_within_bounded_retries(tracking_server_url):
    url, port, server_root = tracking_server_url
    with _mlflow_server(server_root, port):
        context = step_run("mid-step")
        context.__enter__()
    started = time.monotonic()
    with pytest.raises(MlflowException) as err:  # MLflow's own error, raised after the step's bounded retries
        mlflow.log_metric("kept", 1)
    assert time.monotonic() - started < 30
    assert f"127.0.0.1:{port}" in str(err.value)
    with pytest.raises(ServiceUnavailable, match=f"MLflow tracking server at {url} unreachable"):
        context.__exit__(None, None, None)  # ending the run fails the same bounded way, as the one outage error
    assert mlflow.active_run() is None
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # the step's bound is lifted after it


def test_robust_dvc_remote_down_fails_fast_keeps_variant_and_rerun_pushes(tmp_path, monkeypatch, mlflow_store):
    import boto3

    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv(REMOTE_ENV, "s3://variants/dvc")
    monkeypatch.setenv(ENDPOINT_ENV, endpoint)
    source = tmp_path / "variant"
    clean_dataset(source, 3)
    workspace = tmp_path / "project"

    started = time.monotonic()
    with pytest.raises(ServiceUnavailable) as err:
        version_dataset(source, workspace, "v1", {"parent": "seed"})
    assert time.monotonic() - started < 60
    assert "s3://variants/dvc" in str(err.value) and endpoint in str(err.value)
    variant = workspace / "data" / "variants" / "v1"
    assert (variant / "samples.jsonl").read_bytes() == (source / "samples.jsonl").read_bytes()
    assert (variant.with_suffix(".dvc")).is_file() and (source / "samples.jsonl").is_file()

    with _server([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], f"{endpoint}/moto-api/", tmp_path / "moto.log"):
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="variants")
        result = version_dataset(source, workspace, "v1", {"parent": "seed"})
        keys = [o["Key"] for o in boto3.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket="variants")["Contents"]]
    assert result["dataset_hash"] == directory_hash(workspace, variant)
    assert len(keys) == 4 + 1  # three images, samples.jsonl, the directory manifest
