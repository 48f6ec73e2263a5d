"""Manifests over the shard store: each format in and back out unchanged, each image stored once."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from bettersynth.data.llava import read_llava_json, write_llava_json
from bettersynth.data.manifest import iter_rows, read_info, rebuilt_line
from bettersynth.data.manifest_export import export_folder, export_llava_json, export_wds, samples
from bettersynth.data.manifest_ingest import ingest_dj_jsonl, ingest_llava_json, ingest_wds
from bettersynth.data.shards import ShardStore


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (6 + seed, 6), (seed * 30 % 256, 0, 0)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def dj(tmp_path) -> Path:
    root = tmp_path / "dj"
    (root / "imgs").mkdir(parents=True)
    records = []
    for i in range(5):
        (root / "imgs" / f"{i}.png").write_bytes(_png(i % 3))  # three distinct contents under five names
        records.append({"id": f"s{i}", "text": f"<__dj__image> caption {i} <|__dj__eoc|>", "images": [f"imgs/{i}.png"]})
    (root / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root / "samples.jsonl"


def test_dj_jsonl_in_and_out_with_each_content_stored_once(dj, tmp_path):
    store = ShardStore(str(tmp_path / "store"), shard_bytes=200)  # tiny shards: blobs spread over several
    first = ingest_dj_jsonl(dj, store, str(tmp_path / "m1"))
    assert (first.added, first.reused, read_info(str(tmp_path / "m1"))["n_samples"]) == (3, 2, 5)
    assert len(first.new_shards) > 1
    again = ingest_dj_jsonl(dj, ShardStore(str(tmp_path / "store")), str(tmp_path / "m2"))
    assert (again.added, again.new_shards) == (0, [])  # a second ingest writes no blob
    out = export_folder(str(tmp_path / "m2"), tmp_path / "out")
    assert (out / "samples.jsonl").read_bytes() == dj.read_bytes()
    for i in range(5):
        assert (out / "imgs" / f"{i}.png").read_bytes() == (dj.parent / "imgs" / f"{i}.png").read_bytes()
    assert [s.id for s in samples(str(tmp_path / "m2"))] == [f"s{i}" for i in range(5)]


def test_llava_json_in_and_out_keeps_ids_questions_and_images(tmp_path):
    root = tmp_path / "llava"
    (root / "images").mkdir(parents=True)
    records = []
    for i in range(3):
        (root / "images" / f"{i}.png").write_bytes(_png(i))
        question = "<image>\nWhat is shown?" if i else "<image>"
        records.append({"id": f"L{i}", "image": f"images/{i}.png",
                        "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": f"thing {i}"}]})
    write_llava_json(root / "pretrain.json", records)
    store = ShardStore(str(tmp_path / "store"))
    ingest_llava_json(root / "pretrain.json", store, str(tmp_path / "m"))
    row = next(iter_rows(str(tmp_path / "m")))
    assert row["text"] == "[[human]]: <image>\n[[gpt]]: thing 0 <|__dj__eoc|>"  # as Data-Juicer's llava_to_dj writes it
    path = export_llava_json(str(tmp_path / "m"), tmp_path / "out", name="pretrain.json")
    assert read_llava_json(path) == records
    assert (tmp_path / "out" / "images" / "2.png").read_bytes() == _png(2)


def test_llava_json_with_a_missing_image_is_refused_by_record(tmp_path):
    record = {"id": "x", "image": "nope.png", "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "c"}]}
    write_llava_json(tmp_path / "l.json", [record])
    with pytest.raises(ValueError, match=r"l.json:1: record 'x': image 'nope.png' not found"):
        ingest_llava_json(tmp_path / "l.json", ShardStore(str(tmp_path / "store")), str(tmp_path / "m"))


def test_webdataset_tars_out_and_back_in_give_the_same_rows(dj, tmp_path):
    store = ShardStore(str(tmp_path / "store"))
    ingest_dj_jsonl(dj, store, str(tmp_path / "m"))
    tars = export_wds(str(tmp_path / "m"), tmp_path / "wds", samples_per_shard=2)
    assert len(tars) == 3
    back = ingest_wds([str(t) for t in tars], store, str(tmp_path / "back"))
    assert back.added == 0  # the same images: nothing new stored
    assert [rebuilt_line(r) for r in iter_rows(str(tmp_path / "back"))] == dj.read_text().splitlines()


def test_img2dataset_style_tars_become_caption_samples(tmp_path):
    from webdataset import TarWriter

    with TarWriter(str(tmp_path / "00000.tar")) as sink:
        sink.write({"__key__": "000000001", "jpg": _png(1), "txt": b"a cat on a mat",
                    "json": json.dumps({"url": "http://example.invalid/1.jpg", "width": 7}).encode()})
    ingest_wds([str(tmp_path / "00000.tar")], ShardStore(str(tmp_path / "store")), str(tmp_path / "m"))
    sample = next(samples(str(tmp_path / "m")))
    assert (sample.id, sample.images, sample.chunks()[0][0]) == ("000000001", ["images/000000001.jpg"], "a cat on a mat")
    assert sample.meta == {"url": "http://example.invalid/1.jpg", "width": 7}


def test_a_damaged_shard_and_an_unfinished_manifest_are_named(dj, tmp_path):
    store = ShardStore(str(tmp_path / "store"))
    result = ingest_dj_jsonl(dj, store, str(tmp_path / "m"))
    shard = tmp_path / "store" / "shards" / result.new_shards[0]
    data = bytearray(shard.read_bytes())
    data[520] ^= 0xFF  # inside the first blob (it starts after one 512-byte header)
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"shard {result.new_shards[0]}: blob at offset 512 does not hash"):
        export_folder(str(tmp_path / "m"), tmp_path / "out", store)
    (tmp_path / "m" / "manifest.json").unlink()
    with pytest.raises(ValueError, match=r"not a manifest \(no manifest.json"):
        list(iter_rows(str(tmp_path / "m")))


def test_cli_ingests_each_format_and_exports_it_back(dj, tmp_path, capsys):
    """``bettersynth data ingest`` / ``data export``: the format from the source's name, the bytes back unchanged."""
    from bettersynth.cli.main import main

    store = str(tmp_path / "store")
    assert main(["data", "ingest", str(dj), "--manifest", str(tmp_path / "m"), "--store", store]) == 0
    line = capsys.readouterr().out
    assert "ingested 5 samples (dj)" in line and "3 images stored, 2 already in" in line
    assert main(["data", "export", str(tmp_path / "m"), "--out", str(tmp_path / "folder")]) == 0
    assert (tmp_path / "folder" / "samples.jsonl").read_bytes() == dj.read_bytes()
    assert main(["data", "ingest", str(tmp_path / "folder"), "--manifest", str(tmp_path / "m-folder"), "--store", store]) == 0
    line = capsys.readouterr().out
    assert "(folder)" in line and "0 images stored, 5 already in" in line  # the store holds every one already
    assert main(["data", "export", str(tmp_path / "m"), "--out", str(tmp_path / "tars"), "--format", "wds"]) == 0
    tars = sorted(str(p) for p in (tmp_path / "tars").glob("*.tar"))
    assert main(["data", "ingest", *tars, "--manifest", str(tmp_path / "m-wds"), "--store", store]) == 0
    assert "ingested 5 samples (wds)" in capsys.readouterr().out
    assert main(["data", "export", str(tmp_path / "m-wds"), "--out", str(tmp_path / "llava"), "--format", "llava"]) == 0
    assert [r["id"] for r in read_llava_json(tmp_path / "llava" / "llava.json")] == [f"s{i}" for i in range(5)]


def test_cli_ingest_of_an_unknown_source_says_how_to_name_its_format(tmp_path, capsys):
    from bettersynth.cli.main import main

    (tmp_path / "data.csv").write_text("id,text\n")
    assert main(["data", "ingest", str(tmp_path / "data.csv"), "--manifest", str(tmp_path / "m"),
                 "--store", str(tmp_path / "store")]) == 1
    err = capsys.readouterr().err
    assert "cannot tell the format of" in err and "give --format (folder, dj, llava, wds)" in err
