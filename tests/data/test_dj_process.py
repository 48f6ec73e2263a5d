"""``bettersynth process --config``: a Data-Juicer recipe file, unchanged, run as ``dj-process`` runs it.

What Data-Juicer does that these tests hold the command to (``data_juicer/core/exporter.py``,
``data_juicer/config/config.py``, ``data_juicer/core/tracer.py``): kept samples go to
``export_path``; ``__dj__stats__`` is removed from them unless ``keep_stats_in_res_ds`` and goes
to ``<export name>_stats.jsonl``; hashes stay only with ``keep_hashes_in_res_ds``;
``export_shard_size`` > 0 splits the export into ``int(bytes / size) + 1`` contiguous shards
named ``<name>-<i>-of-<n>.<suffix>`` with one digit of padding more than ``n`` has; the tracer
writes ``trace/filter-<op>.jsonl`` (filtered samples) and ``trace/duplicate-<op>.jsonl`` (pairs)
under ``work_dir``, at most ``trace_num`` each.
"""

from __future__ import annotations

import json
from pathlib import Path

import dvc  # noqa: F401 - imported at collection: `import dvc` binds its log handlers to the sys.stdout of the moment,
import numpy as np  # and a test's captured stdout (capsys) is closed after it
import pytest
import yaml
from PIL import Image

from bettersynth.cli.main import main

EOC = "<|__dj__eoc|>"
CAPTION = "<__dj__image> a small red bus parked on a quiet street " + EOC


def png(path: Path, seed: int, size=(12, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.RandomState(seed).randint(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def write_recipe(path: Path, process: list, **keys) -> Path:
    path.write_text(yaml.safe_dump({**keys, "process": process}, sort_keys=False))
    return path


@pytest.fixture
def messy(tmp_path) -> Path:
    """A Data-Juicer jsonl: good samples (a numeric id, LLaVA's token spelling, an extra field) and bad ones."""
    data = tmp_path / "data"
    for i in range(6):
        png(data / "imgs" / f"{i}.png", seed=i)
    (data / "imgs" / "corrupt.png").write_bytes(b"not an image at all" * 3)
    lines = [
        {"id": 1, "text": CAPTION, "images": ["imgs/0.png"], "source": "web"},                             # 1 kept
        {"id": "s1", "text": "<image>\na  blue  car near a tall building today " + EOC, "images": ["imgs/1.png"]},  # 2 kept
        '{"id": "broken", "text": ',                                                                        # 3 not JSON
        {"id": "short", "text": "<__dj__image> a bus " + EOC, "images": ["imgs/2.png"]},                  # 4 filtered
        {"id": "corrupt", "text": CAPTION.replace("red", "green"), "images": ["imgs/corrupt.png"]},       # 5 bad image
        {"id": "mismatch", "text": "<__dj__image> <image> two tokens but one image " + EOC, "images": ["imgs/3.png"]},  # 6
        {"id": "notext", "images": []},                                                                     # 7 no text
        "",                                                                                                 # 8 blank
        {"id": "dup", "text": "<__dj__image> a white van at a busy corner " + EOC, "images": ["imgs/4.png"]},  # 9 kept
        {"id": "dup", "text": "<__dj__image> another white van at a corner " + EOC, "images": ["imgs/5.png"]},  # 10 dup id
        {"id": "copy", "text": CAPTION, "images": ["imgs/5.png"]},                                         # 11 same text as 1
    ]
    raw = [line if isinstance(line, str) else json.dumps(line) for line in lines]
    (data / "in.jsonl").write_text("\n".join(raw) + "\n", encoding="utf-8")
    return data / "in.jsonl"


PROCESS = [{"words_num_filter": {"min_num": 5}}, {"document_deduplicator": {}}, {"image_shape_filter": {"min_width": 1}}]


def test_process_runs_a_data_juicer_recipe_as_dj_process(messy, tmp_path, capsys):
    out = tmp_path / "out"
    config = write_recipe(tmp_path / "recipe.yaml", PROCESS, project_name="dj-demo", dataset_path=str(messy),
                          export_path=str(out / "demo.jsonl"), np=1, text_keys="text", image_special_token="<image>",
                          open_tracer=True, trace_num=5, use_cache=False, op_fusion=True, open_monitor=False)
    assert main(["process", "--config", str(config)]) == 0  # no op loads a model: no --model-root
    assert "10 read, 3 kept" in capsys.readouterr().out

    kept = read(out / "demo.jsonl")
    originals: dict[str, dict] = {}
    for line in messy.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        originals.setdefault(json.dumps(record["id"]), record)
    assert [r["id"] for r in kept] == [1, "s1", "dup"] and type(kept[0]["id"]) is int  # ids keep their JSON type
    assert kept[0]["source"] == "web"  # fields this platform does not use pass through
    for record in kept:
        source = originals[json.dumps(record["id"])]
        assert record["text"] == source["text"]  # byte for byte: both token spellings, double spaces
        assert "__dj__stats__" not in record  # keep_stats_in_res_ds is false
        (image,) = record["images"]
        assert (out / image).read_bytes() == (messy.parent / source["images"][0]).read_bytes()  # relative to the export

    stats = read(out / "demo_stats.jsonl")  # Data-Juicer's stats file: one row per exported sample
    assert len(stats) == 3 and all(set(row) == {"__dj__stats__"} for row in stats)
    assert stats[0]["__dj__stats__"]["num_words"] == 9 and stats[0]["__dj__stats__"]["image_width"] == [12]
    assert not any("text_md5" in row["__dj__stats__"] for row in stats)  # hashes are not stats

    rejected = read(out / "demo_rejected.jsonl")
    assert [(r["file"], r["line"], r["id"], r["op"]) for r in rejected] == [
        ("in.jsonl", 3, None, "reader"), ("in.jsonl", 5, "corrupt", "ingest"), ("in.jsonl", 6, "mismatch", "reader"),
        ("in.jsonl", 7, "notext", "reader"), ("in.jsonl", 10, "dup", "reader"),
    ]
    reasons = [r["reason"] for r in rejected]
    for phrase, reason in zip(["not JSON", "not a recognised image", "2 image tokens but 1 images", "'text' missing",
                               "duplicate id 'dup'"], reasons):
        assert phrase in reason, (phrase, reason)

    filtered = read(out / "demo_filtered.jsonl")
    assert [(r["line"], r["id"], r["op"], r["stat"], r["value"], r["bound"]) for r in filtered] == [
        (4, "short", "words_num_filter", "num_words", 2, "min_num=5"),
        (11, "copy", "document_deduplicator", "text_md5", filtered[1]["value"], "duplicate_of=1"),
    ]
    assert filtered[0]["sample"]["text"] == "<__dj__image> a bus " + EOC

    report = json.loads((out / "demo_report.json").read_text())
    assert (report["n_in"], report["kept"], report["filtered"], report["rejected"]) == (10, 3, 2, 5)  # 11 lines, one blank
    assert report["n_in"] == report["kept_from_input"] + report["filtered"] + report["rejected"]
    assert report["keys"]["np"].startswith("honoured") and report["keys"]["op_fusion"].startswith("no effect")
    assert [p["in"] for p in report["per_op"]] == [5, 4, 3]  # the bad lines and the bad image never reached an op

    trace = out / "trace"
    assert [r["id"] for r in read(trace / "filter-words_num_filter.jsonl")] == ["short"]
    (pair,) = read(trace / "duplicate-document_deduplicator.jsonl")
    assert pair["dup1"]["id"] == 1 and pair["dup2"]["id"] == "copy"

    first = (out / "demo.jsonl").read_bytes()
    assert main(["process", "--config", str(config)]) == 0  # a rerun: same result, nothing left behind
    assert (out / "demo.jsonl").read_bytes() == first and not (out / ".demo.ingest").exists()


def test_process_export_options_stats_hashes_and_shards(messy, tmp_path):
    out = tmp_path / "out"
    config = write_recipe(tmp_path / "recipe.yaml", PROCESS, dataset_path=str(messy), export_path=str(out / "res.v1.jsonl"),
                          keep_stats_in_res_ds=True, keep_hashes_in_res_ds=True, export_shard_size=300, np=1)
    assert main(["process", "--config", str(config)]) == 0
    report = json.loads((out / "res.v1_report.json").read_text())
    shards = [Path(p) for p in report["files"]["export"]]
    rows = [r for shard in shards for r in read(shard)]
    size = sum(len(json.dumps(r, ensure_ascii=False)) + 1 for r in rows)
    n = min(size // 300 + 1, len(rows))
    width = len(str(n)) + 1
    assert [p.name for p in shards] == [f"res-{i:0{width}d}-of-{n:0{width}d}.jsonl" for i in range(n)]
    assert [len(read(p)) for p in shards] == [len(rows) // n + (1 if i < len(rows) % n else 0) for i in range(n)]
    assert not (out / "res.v1.jsonl").exists()
    assert [r["id"] for r in rows] == [1, "s1", "dup"]
    assert all(r["__dj__stats__"]["num_words"] > 4 and "text_md5" not in r["__dj__stats__"] for r in rows)
    assert all(len(r["__dj__hash"]) == 32 for r in rows)  # the deduplicator's md5, Data-Juicer's column
    assert len(read(out / "res.v1_stats.jsonl")) == 3


def test_process_reads_a_folder_of_llava_json_and_jsonl(tmp_path):
    data = tmp_path / "data"
    for i in range(3):
        png(data / "imgs" / f"{i}.png", seed=i)
    llava = [
        {"id": 7, "image": "imgs/0.png", "conversations": [{"from": "human", "value": "<image>\nDescribe the photo."},
                                                           {"from": "gpt", "value": "a red bus parked on the street"}]},
        {"id": "mid", "image": "imgs/1.png", "conversations": [{"from": "human", "value": "Look at <image> now"},
                                                               {"from": "gpt", "value": "a car near a building"}]},
    ]
    (data / "a_llava.json").write_text(json.dumps(llava, indent=1))
    (data / "b.jsonl").write_text(json.dumps({"id": "j", "text": "<__dj__image> a green tree by a lake " + EOC,
                                              "images": [str(data / "imgs" / "2.png")]}) + "\n")  # absolute, under the root
    (data / "notes.txt").write_text("not read: suffixes select .json and .jsonl")
    out = tmp_path / "out"
    config = write_recipe(tmp_path / "r.yaml", [{"words_num_filter": {"min_num": 1}}], dataset_path=str(data),
                          export_path=str(out / "all.json"), suffixes=[".json", "jsonl"], add_suffix=True)
    assert main(["process", "--config", str(config), "--only-keep-caption"]) == 0
    kept = json.loads((out / "all.json").read_text())  # a .json export is one JSON list
    assert [(r["id"], r["text"], r["__dj__suffix__"]) for r in kept] == [
        (7, "<image>\na red bus parked on the street " + EOC, ".json"),
        ("j", "<__dj__image> a green tree by a lake " + EOC, ".jsonl"),
    ]
    assert all((out / r["images"][0]).is_file() for r in kept)
    (bad,) = read(out / "all_rejected.jsonl")
    assert (bad["file"], bad["line"], bad["id"], bad["op"]) == ("a_llava.json", 16, "mid", "llava_to_dj")
    assert "neither at its start nor at its end" in bad["reason"]
    assert json.loads((out / "all_report.json").read_text())["files_read"] == ["a_llava.json", "b.jsonl"]


@pytest.mark.parametrize("key, value, phrase", [
    ("executor_type", "ray", "executor_type='ray' is not supported"),
    ("skip_op_error", False, "skip_op_error=False is not supported"),
    ("np", 0, "np: must be an integer >= 1"),
    ("export_type", "parquet", "export_type='parquet' is not supported"),
    ("open_insight_mining", True, "open_insight_mining=True is not supported"),
    ("text_keys", "content", "text_keys='content' is not supported"),
])
def test_process_refuses_keys_it_cannot_honour_by_name_and_line(messy, tmp_path, key, value, phrase):
    out = tmp_path / "out"
    config = write_recipe(tmp_path / "recipe.yaml", PROCESS, dataset_path=str(messy), export_path=str(out / "x.jsonl"),
                          **{key: value})
    with pytest.raises(ValueError) as err:
        main(["process", "--config", str(config)])
    line = 1 + next(i for i, text in enumerate(config.read_text().splitlines()) if text.startswith(f"{key}:"))
    assert f"{config}:{line}:" in str(err.value) and phrase in str(err.value)
    assert not out.exists()


def test_process_needs_model_root_only_for_ops_that_load_a_model(messy, tmp_path):
    out = tmp_path / "out"
    config = write_recipe(tmp_path / "recipe.yaml", [{"words_num_filter": {"min_num": 1}},
                                                     {"image_text_similarity_filter": {"hf_clip": "clip", "min_score": 0.1}}],
                          dataset_path=str(messy), export_path=str(out / "x.jsonl"))
    with pytest.raises(ValueError, match=r"'image_text_similarity_filter': field 'hf_clip': model 'clip' not found.*--model-root"):
        main(["process", "--config", str(config)])
    assert not out.exists()  # checked before any work
    config = write_recipe(tmp_path / "unset.yaml", PROCESS, export_path=str(out / "x.jsonl"))
    with pytest.raises(ValueError, match="dataset_path: not set"):
        main(["process", "--config", str(config)])


def test_process_scores_with_a_model_and_versions_the_result(small_world, pico_models, mlflow_store, tmp_path):
    from bettersynth.versioning.dvc import list_variants

    out, workspace = tmp_path / "out", tmp_path / "ws"
    config = write_recipe(tmp_path / "recipe.yaml", [
        {"image_captioning_mapper": {"hf_img2seq": "captioner", "max_new_tokens": 4, "seed": 1, "keep_original_sample": True}},
        {"image_text_similarity_filter": {"hf_clip": "clip", "min_score": -1.0}},
    ], project_name="clip-any", dataset_path=str(small_world.seed_jsonl), export_path=str(out / "clip.jsonl"),
        keep_stats_in_res_ds=True, np=1, open_tracer=True, trace_num=3, work_dir=str(tmp_path / "work"))
    assert main(["process", "--config", str(config), "--model-root", str(pico_models), "--version", "clip-any",
                 "--workspace", str(workspace)]) == 0
    kept = read(out / "clip.jsonl")
    assert len(kept) == 48 and all(len(r["__dj__stats__"]["image_text_similarity"]) == 1 for r in kept)
    seed = {r["id"]: r["text"] for r in read(small_world.seed_jsonl)}
    traced = read(tmp_path / "work" / "trace" / "mapper-image_captioning_mapper.jsonl")  # Data-Juicer's mapper trace
    assert len(traced) == 3 and all(t["original text"] in seed.values() and t["processed_text"] for t in traced)
    report = json.loads((out / "clip_report.json").read_text())
    assert (report["n_in"], report["kept_from_input"], report["added_kept"]) == (24, 24, 24)
    (variant,) = list_variants(workspace)
    assert variant["name"] == "clip-any" and variant["dataset_hash"] == report["version"]["dataset_hash"]
    assert variant["meta"]["recipe_hash"] == report["recipe_hash"] and variant["meta"]["kept"] == 48
    assert variant["meta"]["parent"] == str(small_world.seed_jsonl)
    versioned = workspace / "data" / "variants" / "clip-any"
    assert (versioned / "samples.jsonl").read_bytes() == (out / "clip_variant" / "samples.jsonl").read_bytes()


def test_process_runs_a_recipe_with_rounds(messy, tmp_path):
    out = tmp_path / "out"
    config = tmp_path / "rounds.yaml"
    config.write_text(yaml.safe_dump({
        "dataset_path": str(messy), "export_path": str(out / "r.jsonl"),
        "rounds": [{"name": "count", "process": [{"words_num_filter": {"min_num": 1}}]},
                   {"name": "long-only", "where": {"stat": "num_words", "max": 6},
                    "process": [{"words_num_filter": {"min_num": 7}}]}],
    }, sort_keys=False))
    assert main(["process", "--config", str(config)]) == 0
    report = json.loads((out / "r_report.json").read_text())
    assert report["n_in"] == 10 == report["kept_from_input"] + report["filtered"] + report["rejected"]
    assert [(r["line"], r["id"], r["bound"]) for r in read(out / "r_filtered.jsonl")] == [(4, "short", "min_num=7")]
    assert [r["line"] for r in read(out / "r_rejected.jsonl")] == [3, 5, 6, 7, 10]
    assert [r["id"] for r in read(out / "r.jsonl")] == [1, "s1", "dup", "copy"]


def test_process_decode_device_scores_jpegs_as_the_cpu_path_does(small_world, pico_models, tmp_path, caplog):
    """``--decode device`` decodes the JPEGs in batches with torchvision on the model's device (the CPU
    here): the same kept samples and the same similarity stats as PIL in the workers."""
    jpegs = sorted(small_world.textvqa.images.glob("*.jpg")) + sorted(small_world.heldout_textvqa.images.glob("*.jpg"))
    assert len(jpegs) >= 8
    (tmp_path / "images").mkdir()
    for path in jpegs:
        (tmp_path / "images" / path.name).write_bytes(path.read_bytes())
    dataset = tmp_path / "jpegs.jsonl"
    dataset.write_text("".join(json.dumps({"id": f"s{i}", "text": f"<__dj__image> a sign number {i} " + EOC, "images": [f"images/{p.name}"]})
                               + "\n" for i, p in enumerate(jpegs)))
    stats = {}
    caplog.set_level("INFO", logger="bettersynth.engine.inference")
    for decode in ("cpu", "device"):
        out = tmp_path / decode
        config = write_recipe(tmp_path / f"{decode}.yaml", [{"image_text_similarity_filter": {"hf_clip": "clip", "min_score": -1.0}}],
                              project_name=decode, dataset_path=str(dataset), export_path=str(out / "x.jsonl"),
                              keep_stats_in_res_ds=True, np=1, ds_cache_dir=str(tmp_path / f"cache-{decode}"))  # no shared scores
        assert main(["process", "--config", str(config), "--model-root", str(pico_models), "--decode", decode]) == 0
        stats[decode] = {r["id"]: r["__dj__stats__"]["image_text_similarity"] for r in read(out / "x.jsonl")}
    assert len(stats["cpu"]) == len(jpegs) and stats["device"] == stats["cpu"]
    assert "decodes its images on the CPU" not in caplog.text  # the device path ran, not its fallback
