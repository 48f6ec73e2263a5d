"""A DVC remote on an S3-compatible server (moto, on loopback), chosen by configuration only."""

from __future__ import annotations

import pytest

from bettersynth.versioning.dvc import (
    ENDPOINT_ENV,
    REMOTE_ENV,
    cache_objects,
    checkout,
    directory_hash,
    version_variant,
)

pytest.importorskip("dvc_s3", reason="dvc-s3 is not installed")
boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto", reason="moto[server] is not installed")


@pytest.fixture
def s3(tmp_path, monkeypatch):
    from tracking_servers import s3_bucket

    with s3_bucket(tmp_path, monkeypatch, "variants") as (client, endpoint):
        monkeypatch.setenv(REMOTE_ENV, "s3://variants/dvc")
        monkeypatch.setenv(ENDPOINT_ENV, endpoint)
        yield client


def test_push_to_s3_and_check_out_in_a_clean_project(s3, tmp_path):
    source = tmp_path / "variant"
    (source / "images").mkdir(parents=True)
    (source / "samples.jsonl").write_text('{"id": "1", "text": "x", "images": ["images/a.png"]}\n')
    (source / "images" / "a.png").write_bytes(b"pixels")
    version = version_variant(tmp_path / "project", source, "v1")
    assert version.remote_url == "s3://variants/dvc"
    assert "testing" not in (tmp_path / "project" / ".dvc" / "config").read_text()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="variants")["Contents"]]
    assert len(keys) == 3  # two files + the directory manifest
    assert len(cache_objects(tmp_path / "project")) == 2

    path, _ = checkout(tmp_path / "clone", version.dataset_hash, name="v1")  # env names the remote
    assert directory_hash(tmp_path / "clone", path) == version.dataset_hash
    assert (path / "images" / "a.png").read_bytes() == b"pixels"
