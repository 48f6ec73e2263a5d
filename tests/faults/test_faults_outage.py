"""One outage policy at every entry point: MLflow or the DVC remote away ends a command in one line
naming the service, its URL, what was kept and how to resume, within the retry budget.

Services are really away (a closed port, a port that accepts and never answers), not mocked.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from fault_services import closed_port, hung_server
from robust_data import clean_dataset

from bettersynth.cli.main import EXIT_UNAVAILABLE, main
from bettersynth.core.retry import BUDGET_ENV, Backoff, ServiceUnavailable, outage_budget, with_retries
from bettersynth.tracking.outage import as_service_unavailable, mlflow_http_settings, outage_policy, require_tracking_server
from bettersynth.versioning.dvc import ENDPOINT_ENV, REMOTE_ENV, version_variant

REPO = Path(__file__).resolve().parents[2]
BETTERSYNTH = Path(sys.executable).parent / "bettersynth"  # the installed command


@pytest.fixture
def tracking_at(monkeypatch):
    """Point MLflow (this process and its children) at a URL for one test."""
    previous = mlflow.get_tracking_uri()

    def point(url: str) -> str:
        mlflow.set_tracking_uri(url)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        return url

    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "BETTERSYNTH_PARENT_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    yield point
    mlflow.set_tracking_uri(previous)


@pytest.mark.parametrize("variant", [["--pico"], pytest.param([], marks=pytest.mark.slow)], ids=["pico", "proxy world"])
def test_faults_quickstart_with_mlflow_down_ends_in_one_line(tmp_path, variant):
    url = f"http://127.0.0.1:{closed_port()}"
    workspace = tmp_path / "ws"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "BETTERSYNTH_PARENT"))}
    done = subprocess.run([str(BETTERSYNTH), "quickstart", "--workspace", str(workspace), "--tracking-uri", url,
                           *variant], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == EXIT_UNAVAILABLE, done.stderr[-3000:]
    assert len(lines) == 1, done.stderr[-3000:]
    line = lines[0]
    assert line.startswith("bettersynth quickstart: MLflow tracking server at " + url + " unreachable")
    assert f"kept: everything already under the workspace {workspace}" in line
    assert f"to resume: rerun `bettersynth quickstart --workspace {workspace} --tracking-uri {url}{''.join(' ' + a for a in variant)}`" in line
    assert not (workspace / "data").exists()  # failed before building anything


def test_faults_verbose_shows_the_traceback(tmp_path, tracking_at, capsys):
    url = tracking_at(f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(ServiceUnavailable, match="MLflow tracking server at " + url):
        main(["-v", "compare", "--workspace", str(tmp_path)])
    assert main(["compare", "--workspace", str(tmp_path)]) == EXIT_UNAVAILABLE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"bettersynth compare: MLflow tracking server at {url} unreachable")
    assert "(-v for the traceback)" in err[0] and "Traceback" not in err[0]


def test_faults_mlflow_call_with_server_down_raises_service_unavailable(tracking_at):
    url = tracking_at(f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(ServiceUnavailable) as err, outage_policy(kept="the run folder", resume="rerun it"):
        mlflow.get_experiment_by_name("anything")
    assert (err.value.service, err.value.url) == ("MLflow tracking server", url)
    assert err.value.attempts == 3 and "ConnectionError" in err.value.cause
    assert "kept: the run folder; to resume: rerun it" in str(err.value)
    assert "\n" not in str(err.value)
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # the bound is lifted after the block


def test_faults_mlflow_errors_that_are_not_outages_pass_through():
    from mlflow.exceptions import MlflowException

    refused = MlflowException("Run '00' not found", error_code="RESOURCE_DOES_NOT_EXIST")
    with pytest.raises(MlflowException) as err, outage_policy():
        raise refused
    assert err.value is refused and as_service_unavailable(refused) is None


def test_faults_hung_tracking_server_is_bounded_by_the_budget(tracking_at, monkeypatch):
    monkeypatch.setenv(BUDGET_ENV, "2")
    assert outage_budget() == 2.0 and mlflow_http_settings()["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "1"
    with hung_server() as url, pytest.raises(ServiceUnavailable) as err:
        require_tracking_server(url)
    # one try of the 1 s read timeout, then the next wait and try would pass the 2 s budget
    assert err.value.attempts == 1 and "timed out" in err.value.cause


def test_faults_budget_env_is_checked(monkeypatch):
    monkeypatch.setenv(BUDGET_ENV, "soon")
    with pytest.raises(ValueError, match=f"{BUDGET_ENV}: 'soon' is not a number of seconds"):
        outage_budget()
    monkeypatch.setenv(BUDGET_ENV, "0")
    with pytest.raises(ValueError, match="must be above 0"):
        outage_budget()


def test_faults_retries_stop_at_the_budget():
    calls = []

    def refuse() -> None:
        calls.append(1)
        raise ConnectionRefusedError("refused")

    with pytest.raises(ServiceUnavailable) as err:
        with_retries(refuse, "S", "u", backoff=Backoff(attempts=10, first_delay=0.2, factor=1.0), budget_s=0.3)
    assert len(calls) == err.value.attempts == 2  # waits of 0.2 s: a third try would start past 0.3 s
    with pytest.raises(ServiceUnavailable):
        with_retries(refuse, "S", "u", backoff=Backoff(attempts=3, first_delay=0.0), budget_s=60)
    assert len(calls) == 2 + 3


def test_faults_service_unavailable_reads_back_from_a_step_log():
    error = ServiceUnavailable("DVC remote (push)", "s3://team/dvc (endpoint http://127.0.0.1:9)", 2, 3.25,
                               ConnectionRefusedError("refused\nsecond line"))
    log = f"noise\nTraceback (most recent call last):\nbettersynth.core.retry.ServiceUnavailable: {error}\nmore noise\n"
    back = ServiceUnavailable.parse(log)
    assert str(back) == str(error) and (back.service, back.url, back.attempts) == (error.service, error.url, 2)
    assert back.explain(kept="the workspace", resume="rerun").kept == "the workspace"  # defaults give way
    assert ServiceUnavailable.parse("Task failed: ValueError") is None


def test_faults_dvc_remote_down_fails_in_one_line_and_keeps_the_variant(tmp_path, monkeypatch):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", REMOTE_ENV: "s3://variants/dvc", ENDPOINT_ENV: endpoint}.items():
        monkeypatch.setenv(key, value)
    clean_dataset(tmp_path / "source", 3)
    with pytest.raises(ServiceUnavailable) as err:
        version_variant(tmp_path / "project", tmp_path / "source", "v1")
    assert err.value.service == "DVC remote (push)" and err.value.url == f"s3://variants/dvc (endpoint {endpoint})"
    assert "EndpointConnectionError" in err.value.cause and "AWS_MAX_ATTEMPTS" not in os.environ
    variant = tmp_path / "project" / "data" / "variants" / "v1"
    assert (variant / "samples.jsonl").read_bytes() == (tmp_path / "source" / "samples.jsonl").read_bytes()
    assert variant.with_suffix(".dvc").is_file()


def test_faults_hung_s3_endpoint_is_bounded_by_the_budget(tmp_path, monkeypatch):
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", REMOTE_ENV: "s3://variants/dvc", BUDGET_ENV: "6"}.items():
        monkeypatch.setenv(key, value)
    clean_dataset(tmp_path / "source", 2)
    with hung_server() as endpoint, pytest.raises(ServiceUnavailable) as err:
        monkeypatch.setenv(ENDPOINT_ENV, endpoint)
        version_variant(tmp_path / "project", tmp_path / "source", "v1")
    # 1 s reads (budget / 6), no botocore retries; each DVC attempt ends at its first unanswered timeout
    # (core.stalled_s3), so both attempts fit in the budget
    assert 1 <= err.value.attempts <= 2 and err.value.waited <= 6, err.value
    assert "ReadTimeoutError" in err.value.cause or "timed out unanswered" in err.value.cause


def test_faults_artifact_uploads_wait_for_the_server_to_store_their_largest_file(tmp_path, monkeypatch):
    """A proxying server answers a PUT once the file is in its store: the timeout grows with the largest file."""
    from bettersynth.tracking.outage import SLOWEST_STORE_BYTES_PER_S, TIMEOUT_ENV, log_artifact_folder, upload_timeout

    assert upload_timeout(2 << 30, 10) == 10 + (2 << 30) // SLOWEST_STORE_BYTES_PER_S  # a 2 GiB checkpoint: 112 s
    assert upload_timeout(64 << 10, 2) == 2  # small files keep the budget's share
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with open(folder / "model.safetensors", "wb") as handle:  # sparse: 100 MiB on paper, nothing on disk
        handle.truncate(100 << 20)
    seen: list[str | None] = []
    real = mlflow.log_artifacts
    monkeypatch.setattr(mlflow, "log_artifacts", lambda *a, **k: (seen.append(os.environ.get(TIMEOUT_ENV)), real(*a, **k)))
    monkeypatch.setenv(TIMEOUT_ENV, "3")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        with mlflow.start_run() as run:
            log_artifact_folder(folder, "checkpoint")
        assert seen == [str(3 + (100 << 20) // SLOWEST_STORE_BYTES_PER_S)]  # 3 + 5 s while uploading
        assert os.environ[TIMEOUT_ENV] == "3"  # restored after
        listed = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "checkpoint")}
        assert listed == {"checkpoint/config.json", "checkpoint/model.safetensors"}
    finally:
        mlflow.set_tracking_uri(None)
