"""The S3 endpoint of the DVC remote hangs in the middle of a variant's push: the push ends in the
one-line ``ServiceUnavailable`` within the outage budget (each attempt stops sending at its first
unanswered timeout, ``core.stalled_s3``), the variant stays local, and
once the endpoint answers again the same call pushes only the objects that are missing, leaving the
bucket equal to an uninterrupted push.

The endpoint is moto's S3 server in its own process, frozen with SIGSTOP (as a hung endpoint: it
accepts connections and answers nothing) and thawed with SIGCONT, which keeps its in-memory buckets.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from fault_services import pausable_moto
from robust_data import clean_dataset

from bettersynth.core.retry import BUDGET_ENV, ServiceUnavailable
from bettersynth.versioning.dvc import DEFAULT_REMOTE, ENDPOINT_ENV, REMOTE_ENV, ensure_dvc_project, version_variant

pytest.importorskip("dvc_s3", reason="dvc-s3 is not installed")
boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto", reason="moto[server] is not installed")

N_IMAGES = 12  # objects pushed one at a time (jobs = 1): the freeze lands mid-push, not after it
FREEZE_AFTER = 4  # objects in the bucket when the endpoint freezes
BUDGET = 6  # seconds: 1 s connect and read timeouts on the S3 client
READ_TIMEOUT = 1


@pytest.fixture
def s3(tmp_path, monkeypatch):
    """A frozen-able moto with the buckets ``variants`` (the test's) and ``reference`` (an uninterrupted push's)."""
    with pausable_moto(tmp_path) as (endpoint, process):
        for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "AWS_DEFAULT_REGION": "us-east-1", ENDPOINT_ENV: endpoint, BUDGET_ENV: str(BUDGET)}.items():
            monkeypatch.setenv(key, value)
        client = boto3.client("s3", endpoint_url=endpoint)
        for bucket in ("variants", "reference"):
            client.create_bucket(Bucket=bucket)
        yield client, process


def _objects(client, bucket: str) -> dict[str, dict]:
    """Key -> its listing entry (ETag, LastModified, Size), every page."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {o["Key"]: o for page in pages for o in page.get("Contents", [])}


def _bodies(client, bucket: str) -> dict[str, bytes]:
    return {key: client.get_object(Bucket=bucket, Key=key)["Body"].read() for key in _objects(client, bucket)}


def _settled(client, bucket: str) -> dict[str, dict]:
    """The listing once a thawed endpoint has finished the requests it held (two equal listings in a row)."""
    previous = _objects(client, bucket)
    while True:
        time.sleep(0.5)
        current = _objects(client, bucket)
        if current.keys() == previous.keys():
            return current
        previous = current


@pytest.mark.slow  # moto in its own process, two DVC pushes and one frozen: about 20 s
def test_faults_s3_endpoint_hangs_mid_push_and_rerun_pushes_only_what_is_missing(s3, tmp_path, monkeypatch):
    client, moto = s3
    source = tmp_path / "source"
    clean_dataset(source, N_IMAGES)
    monkeypatch.setenv(REMOTE_ENV, "s3://reference/dvc")
    version_variant(tmp_path / "reference", source, "v1")  # the uninterrupted push
    reference = _bodies(client, "reference")
    assert len(reference) == N_IMAGES + 2  # the images, samples.jsonl, the directory manifest

    monkeypatch.setenv(REMOTE_ENV, "s3://variants/dvc")
    project = tmp_path / "project"
    ensure_dvc_project(project)
    (project / ".dvc" / "config.local").write_text(f"['remote \"{DEFAULT_REMOTE}\"']\n    jobs = 1\n")
    failed: list[BaseException] = []

    def push() -> None:
        try:
            version_variant(project, source, "v1")
        except BaseException as exc:  # noqa: BLE001  handed to the test thread
            failed.append(exc)

    pusher = threading.Thread(target=push, daemon=True)
    pusher.start()
    while len(_objects(client, "variants")) < FREEZE_AFTER and pusher.is_alive():
        time.sleep(0.02)
    os.kill(moto.pid, signal.SIGSTOP)  # the endpoint hangs mid-push
    frozen = time.monotonic()
    pusher.join(timeout=3 * BUDGET)
    assert not pusher.is_alive(), "the push outlived the outage budget (3x)"  # left to end when moto is killed
    assert time.monotonic() - frozen <= BUDGET + 2 * READ_TIMEOUT  # the budget, plus the request in flight at the end
    assert len(failed) == 1 and isinstance(failed[0], ServiceUnavailable), failed
    error = failed[0]
    assert error.service == "DVC remote (push)" and error.url == f"s3://variants/dvc (endpoint {os.environ[ENDPOINT_ENV]})"
    assert 1 <= error.attempts <= 2 and "\n" not in str(error)  # each attempt gives up at its first timeout
    variant = project / "data" / "variants" / "v1"
    assert (variant / "samples.jsonl").read_bytes() == (source / "samples.jsonl").read_bytes()
    assert variant.with_suffix(".dvc").is_file()  # nothing local lost

    os.kill(moto.pid, signal.SIGCONT)  # the endpoint answers again, its buckets intact
    before = _settled(client, "variants")
    assert FREEZE_AFTER <= len(before) < len(reference)  # the push was cut short
    version_variant(project, source, "v1")
    after = _objects(client, "variants")
    assert _bodies(client, "variants") == reference
    assert {key: after[key]["LastModified"] for key in before} == {k: o["LastModified"] for k, o in before.items()}
