"""End to end: a messy dataset through a recipe; every line accounted for."""

import json
import os
from pathlib import Path

import pytest
from ops_testutil import write_image, write_jsonl

from bettersynth.recipes.recipe import Recipe
from bettersynth.recipes.runner import StepReport, run_recipe

LONG = "a red bus on the street"


def _rec(i, text=LONG, images=None):
    images = [f"imgs/{i}.png"] if images is None else images
    return {"id": str(i), "text": " ".join(["<__dj__image>"] * len(images) + [text, "<|__dj__eoc|>"]), "images": images}


@pytest.fixture
def dataset(tmp_path) -> tuple[Path, Path]:
    root = tmp_path / "data"
    for i in range(12):
        write_image(root / "imgs" / f"{i}.png", seed=i)
    (root / "imgs" / "3.png").write_bytes(b"corrupt bytes, not a png")
    (root / "imgs" / "8.png").unlink()
    (tmp_path / "secret.png").write_bytes((root / "imgs" / "0.png").read_bytes())
    records = [
        _rec(0), _rec(1), _rec(2),
        _rec(3),                                   # corrupt image
        "{not json",                               # bad line
        _rec(5, images=["../secret.png"]),         # escapes the dataset root
        _rec(6, text="bus"),                       # too few words
        _rec(7, images=["imgs/7.png", "imgs/2.png"]),
        _rec(8),                                   # missing image
        _rec(9), _rec(10),
        _rec(1),                                   # duplicate id
        {"id": "txt", "text": "only text without any image at all"},
    ]
    return write_jsonl(tmp_path / "in.jsonl", records), root


def recipe(*steps) -> Recipe:
    return Recipe.from_dict({"name": "t", "process": list(steps)})


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_ops_runner_accounts_for_every_line(model_root, dataset, tmp_path, num_workers):
    input_jsonl, root = dataset
    out = tmp_path / "out"
    r = recipe({"words_num_filter": {"min_num": 3}}, {"image_text_similarity_filter": {"hf_clip": "clip", "min_score": -1.0}})
    report = run_recipe(r, input_jsonl, root, out, model_root=model_root, batch_size=3, num_workers=num_workers)
    assert (report.n_in, report.kept, report.filtered, report.rejected, report.added) == (13, 7, 1, 5, 0)
    outcomes = read(out / "outcomes.jsonl")
    assert len(outcomes) == 13
    status = {(o["id"], o.get("line")): o for o in outcomes}
    by_id = {o["id"]: o for o in outcomes if "line" not in o}
    assert {k for k, o in by_id.items() if o["status"] == "kept"} == {"0", "1", "2", "7", "9", "10", "txt"}
    assert by_id["6"] | {} == {"id": "6", "status": "filtered", "op": "words_num_filter", "stat": "num_words", "value": 1, "bound": "min_num=3"}
    # bad images are rejected at ingestion, before any op: the corrupt, the escaping and the missing one
    assert by_id["3"]["op"] == "ingest" and "3.png" in by_id["3"]["error"] and "not a recognised image" in by_id["3"]["error"]
    assert by_id["5"]["op"] == "ingest" and "../secret.png" in by_id["5"]["error"] and "dataset root" in by_id["5"]["error"]
    assert by_id["8"]["op"] == "ingest" and "8.png" in by_id["8"]["error"] and "not found" in by_id["8"]["error"]
    readers = [o for o in outcomes if o.get("op") == "reader"]
    assert len(readers) == 2 and any("duplicate id" in o["error"] for o in readers) and any("not JSON" in o["error"] for o in readers)
    assert len(status) == 13
    rejected = read(out / "rejected.jsonl")
    assert sorted(str(r["id"]) for r in rejected) == sorted(["3", "5", "8", "None", "1"])
    assert all(set(r) == {"id", "op", "error"} for r in rejected)
    # kept samples: stats written, images linked under out/images with the original layout
    kept = read(out / "samples.jsonl")
    assert [s["id"] for s in kept] == ["0", "1", "2", "7", "9", "10", "txt"]
    assert kept[3]["images"] == ["images/imgs/7.png", "images/imgs/2.png"]
    for sample in kept:
        assert "num_words" in sample["__dj__stats__"] and "image_text_similarity" in sample["__dj__stats__"]
        for rel in sample["images"]:
            target = out / rel
            assert target.is_file() and os.path.samefile(target, root / rel.removeprefix("images/"))
    assert len(kept[3]["__dj__stats__"]["image_text_similarity"]) == 1
    saved = json.loads((out / "report.json").read_text())
    assert saved["kept"] == 7 and saved["recipe_hash"] == r.hash()
    assert [(p["op"], p["in"], p["kept"], p["filtered"], p["rejected"]) for p in report.per_op] == [
        ("words_num_filter", 8, 7, 1, 0),
        ("image_text_similarity_filter", 7, 7, 0, 0),
    ]


def test_ops_runner_mapper_with_select_and_escaping_path_at_export(model_root, dataset, tmp_path):
    input_jsonl, root = dataset
    out = tmp_path / "out"
    r = recipe(
        {"words_num_filter": {"min_num": 3}},
        {"image_captioning_mapper": {"hf_img2seq": "blip", "max_new_tokens": 4, "seed": 1}},
        {"words_num_filter": {"min_num": 0}},
    )
    chosen = {"0", "2", "5", "9"}
    report = run_recipe(r, input_jsonl, root, out, model_root=model_root, batch_size=2,
                        select=lambda op, sample: sample.id in chosen)
    # "5" escapes, "3" is corrupt and "8" missing: all three are rejected at ingestion, whatever the
    # ops read ("3" and "8" are not even selected for the captioner); "0", "2" and "9" get captions
    assert report.added == 3 and report.added_kept == 3
    assert (report.n_in, report.kept_from_input, report.filtered, report.rejected) == (13, 7, 1, 5)
    outcomes = read(out / "outcomes.jsonl")
    assert len(outcomes) == 16
    by_id = {o["id"]: o for o in outcomes if "line" not in o}
    assert by_id["5"]["op"] == "ingest" and "dataset root" in by_id["5"]["error"]
    assert by_id["8"]["op"] == "ingest" and "not found" in by_id["8"]["error"]
    assert by_id["3"]["op"] == "ingest" and "not a recognised image" in by_id["3"]["error"]
    assert by_id["0#cap0"] == {"id": "0#cap0", "status": "kept", "source_id": "0"}
    kept = {s["id"]: s for s in read(out / "samples.jsonl")}
    assert kept["2#cap0"]["meta"]["provenance"][-1]["source_id"] == "2"
    assert kept["2#cap0"]["images"] == ["images/imgs/2.png"]
    assert report.per_op[1]["skipped"] == 4 and report.per_op[1]["added"] == 3  # 7 reach it, 3 of them selected


def test_ops_runner_replacing_mapper_counts_originals_as_filtered(model_root, dataset, tmp_path):
    input_jsonl, root = dataset
    r = recipe({"image_captioning_mapper": {"hf_img2seq": "blip", "max_new_tokens": 3, "keep_original_sample": False}})
    report = run_recipe(r, input_jsonl, root, tmp_path / "out", model_root=model_root,
                        select=lambda op, sample: sample.id in {"0", "1"})
    outcomes = {o["id"]: o for o in read(tmp_path / "out" / "outcomes.jsonl") if "line" not in o}
    assert outcomes["0"]["status"] == "filtered" and outcomes["0"]["replaced_by"] == ["0#cap0"]
    assert report.filtered == 2 and report.added_kept == 2
    assert (report.replaced, report.removed) == (2, report.filtered + report.rejected - 2)  # re-captions stand in for both
    assert report.per_op[0]["replaced"] == report.per_op[0]["filtered"] == 2
    # a rerun into the same folder replaces its files and gives the same result
    first = (tmp_path / "out" / "samples.jsonl").read_text()
    again = run_recipe(r, input_jsonl, root, tmp_path / "out", model_root=model_root,
                       select=lambda op, sample: sample.id in {"0", "1"})
    assert again == report and (tmp_path / "out" / "samples.jsonl").read_text() == first


def test_ops_step_report_check_raises():
    with pytest.raises(RuntimeError, match="accounting"):
        StepReport(n_in=3, kept=1, kept_from_input=1, filtered=1, rejected=0, added=0, added_kept=0).check()
    with pytest.raises(RuntimeError, match="replaced"):  # replaced + removed must cover every dropped input
        StepReport(n_in=2, kept=1, kept_from_input=1, filtered=1, rejected=0, added=0, added_kept=0, replaced=0, removed=0).check()


def test_ops_runner_new_images_go_under_the_output_never_the_input(model_root, dataset, tmp_path):
    """Stable Diffusion re-synthesis through run_recipe: the input folder stays as it was."""
    pytest.importorskip("diffusers")
    from bettersynth_demo.synthesis_models import build_tiny_stable_diffusion

    input_jsonl, root = dataset
    sd = build_tiny_stable_diffusion(tmp_path / "sd", [LONG, "bus", "only text without any image at all"])
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    r = recipe(
        {"image_diffusion_mapper": {"hf_diffusion": str(sd), "num_inference_steps": 2, "keep_original_sample": False}},
        {"image_text_similarity_filter": {"hf_clip": "clip", "min_score": -1.0}},
    )
    out = tmp_path / "out"
    report = run_recipe(r, input_jsonl, root, out, model_root=model_root, num_workers=0,
                        select=lambda op, sample: sample.id in {"0", "1", "5", "9"})
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before  # nothing written, nothing touched
    kept = {s["id"]: s for s in read(out / "samples.jsonl")}
    assert {"0#diff0", "1#diff0", "9#diff0"} <= set(kept) and not {"0", "1", "9"} & set(kept)
    for new in ("0#diff0", "1#diff0", "9#diff0"):
        (path,) = kept[new]["images"]
        assert (out / path).is_file() and not (root / path.removeprefix("images/")).exists()
        assert kept[new]["meta"]["provenance"][-1]["source_id"] == new.split("#")[0]
    outcomes = {o["id"]: o for o in read(out / "outcomes.jsonl") if "line" not in o}
    assert outcomes["5"]["op"] == "ingest" and "dataset root" in outcomes["5"]["error"]  # refused before any op
    assert outcomes["8"]["op"] == "ingest" and "not found" in outcomes["8"]["error"]
    assert (report.replaced, report.added_kept) == (3, 3) and report.removed == report.filtered + report.rejected - 3
    assert not (out / ".resume").exists()  # the scratch root went with it
