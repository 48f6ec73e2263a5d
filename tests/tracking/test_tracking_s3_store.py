"""Manifests and their shard store on an S3-compatible server (moto, on loopback), through fsspec."""

from __future__ import annotations

import json

import pytest

from bettersynth.data.manifest import read_info
from bettersynth.data.manifest_edit import Change, derive
from bettersynth.data.manifest_export import export_folder
from bettersynth.data.manifest_ingest import ingest_folder
from bettersynth.data.shards import ShardStore

pytest.importorskip("s3fs", reason="s3fs (the s3 extra) is not installed")
boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto", reason="moto[server] is not installed")


@pytest.fixture
def s3(tmp_path, monkeypatch):
    from tracking_servers import s3_bucket

    with s3_bucket(tmp_path, monkeypatch, "team") as found:
        yield found


def test_a_folder_and_its_child_on_s3_store_each_image_once(s3, tmp_path):
    client, endpoint = s3
    source = tmp_path / "variant"
    (source / "images").mkdir(parents=True)
    records = []
    for i in range(4):
        (source / "images" / f"{i}.jpg").write_bytes(f"jpeg bytes {i}".encode())
        records.append({"id": str(i), "text": f"<__dj__image> caption {i}", "images": [f"images/{i}.jpg"]})
    (source / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    store = ShardStore("s3://team/store", endpoint_url=endpoint)
    ingest_folder(source, store, "s3://team/manifests/parent", endpoint)
    assert read_info("s3://team/manifests/parent", endpoint)["n_samples"] == 4
    keys = {o["Key"] for o in client.list_objects_v2(Bucket="team")["Contents"]}
    assert sum(k.startswith("store/shards/") for k in keys) == 2  # one shard and its index

    change = Change({"id": "1", "text": "<__dj__image> new caption", "images": ["images/1b.jpg"]}, {"images/1b.jpg": b"new jpeg"})
    child = derive("s3://team/manifests/parent", "s3://team/manifests/child", ShardStore("s3://team/store", endpoint), {"1": change},
                   endpoint_url=endpoint)
    assert (child.added, len(child.new_shards)) == (1, 1)
    out = export_folder("s3://team/manifests/child", tmp_path / "out", ShardStore("s3://team/store", endpoint), endpoint)
    assert (out / "images" / "1b.jpg").read_bytes() == b"new jpeg"
    assert (out / "images" / "0.jpg").read_bytes() == b"jpeg bytes 0" and not (out / "images" / "1.jpg").exists()
    assert json.loads((out / "samples.jsonl").read_text().splitlines()[1]) == change.record
