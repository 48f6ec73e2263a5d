"""Sharding: plan → cut → (filter → caption) per shard → merge gives what one unsharded run gives.

The reference is ``run_recipe`` over the whole file; the seed set is the
small demo world plus the messes sharding could get wrong: a broken line, an
id repeated in a later shard, a missing image.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bettersynth.recipes.recipe import Recipe
from bettersynth.recipes.runner import run_recipe
from bettersynth.steps.process import seeded_fraction
from bettersynth.steps.shards import cut_shard, fingerprint, merge_shards, plan_shards

FILTER = Path("recipes/quickstart_filter.yaml")
CAPTION = Path("recipes/quickstart_caption.yaml")
COUNTS = ("n_in", "kept", "kept_from_input", "filtered", "rejected", "added", "added_kept")


@pytest.fixture(scope="module")
def messy_seed(small_world, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("messy")
    shutil.copytree(small_world.seed_jsonl.parent, root, dirs_exist_ok=True)
    lines = (root / "samples.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    lines.insert(5, "{not json")
    lines.append(json.dumps(first))  # same id as line 0: a later shard must reject it
    lines.append(json.dumps({"id": "gone", "text": "<__dj__image> a picture of nothing at all here today on a quiet afternoon in the old town", "images": ["images/gone.png"]}))
    (root / "samples.jsonl").write_text("\n".join(lines) + "\n")
    return root


def _process(dataset: Path, out: Path, models: Path) -> dict:
    filtered, captioned = out / "filtered", out / "captioned"
    run_recipe(Recipe.load(FILTER), dataset / "samples.jsonl", dataset, filtered, model_root=models)
    report = run_recipe(Recipe.load(CAPTION), filtered / "samples.jsonl", filtered, captioned, model_root=models,
                        select=seeded_fraction(0.3, 0))
    return {"report": report, "dir": captioned}


def test_merged_shards_equal_the_unsharded_run(messy_seed, pico_models, tmp_path):
    whole = _process(messy_seed, tmp_path / "whole", pico_models)
    plan = plan_shards(messy_seed, 3, [FILTER, CAPTION])
    assert [(s["start"], s["stop"]) for s in plan] == [(0, 9), (9, 18), (18, 27)]
    processed = []
    for shard in reversed(plan):  # the merge must not depend on collection order
        cut = tmp_path / f"shard-{shard['index']}"
        cut_shard(messy_seed, {**shard, "index": float(shard["index"])}, cut)  # KFP hands ints over as floats
        processed.append(_process(cut, tmp_path / f"out-{shard['index']}", pico_models)["dir"])
    merged = merge_shards(processed, messy_seed, tmp_path / "merged")

    # The filter step's counts are identical; the caption step sees the same kept samples.
    expected = json.loads((whole["dir"] / "report.json").read_text())
    whole_filter = json.loads((tmp_path / "whole" / "filtered" / "report.json").read_text())
    shard_filter_in = sum(json.loads((tmp_path / f"out-{s['index']}" / "filtered" / "report.json").read_text())["n_in"] for s in plan)
    assert shard_filter_in == whole_filter["n_in"] == 27
    for key in ("kept", "added"):
        assert merged[key] == expected[key], key
    whole_ids = [json.loads(line)["id"] for line in (whole["dir"] / "samples.jsonl").read_text().splitlines()]
    merged_ids = [json.loads(line)["id"] for line in (tmp_path / "merged" / "samples.jsonl").read_text().splitlines()]
    assert merged_ids == whole_ids
    for record in (json.loads(line) for line in (tmp_path / "merged" / "samples.jsonl").read_text().splitlines()):
        assert all((tmp_path / "merged" / p).is_file() for p in record["images"])


def test_filter_accounting_survives_sharding(messy_seed, pico_models, tmp_path):
    """Filter only: bad line, duplicate across shards and missing image are rejected exactly as unsharded."""
    recipe = Recipe.load(FILTER)
    whole = run_recipe(recipe, messy_seed / "samples.jsonl", messy_seed, tmp_path / "whole", model_root=pico_models)
    outs = []
    for shard in plan_shards(messy_seed, 4, [FILTER]):
        cut_shard(messy_seed, shard, tmp_path / f"s{shard['index']}")
        run_recipe(recipe, tmp_path / f"s{shard['index']}" / "samples.jsonl", tmp_path / f"s{shard['index']}",
                   tmp_path / f"o{shard['index']}", model_root=pico_models)
        outs.append(tmp_path / f"o{shard['index']}")
    merged = merge_shards(outs, messy_seed, tmp_path / "merged")
    for key in COUNTS:
        assert merged[key] == getattr(whole, key), key
    assert whole.rejected == 3
    rejected = [json.loads(line) for line in (tmp_path / "merged" / "rejected.jsonl").read_text().splitlines()]
    assert any("duplicate id" in r["error"] and r["id"] == "seed-00000" for r in rejected)
    outcomes = (tmp_path / "merged" / "outcomes.jsonl").read_text().splitlines()
    assert len(outcomes) == whole.n_in


def test_fingerprint_follows_bytes_and_recipes(messy_seed, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(messy_seed, copy)
    data, config = fingerprint(copy, [FILTER])
    assert (data, config) == fingerprint(messy_seed, [FILTER])
    image = next((copy / "images").iterdir())
    image.write_bytes(image.read_bytes() + b"\0")
    assert fingerprint(copy, [FILTER])[0] != data
    assert fingerprint(copy, [FILTER, CAPTION])[1] != config


@pytest.mark.parametrize("shard, match", [
    ({"index": 0, "start": 0.5, "stop": 3}, "'start'"),
    ({"index": 0, "start": 0}, "'stop'"),
    ({"index": True, "start": 0, "stop": 1}, "'index'"),
])
def test_bad_shard_specs_name_the_field(messy_seed, tmp_path, shard, match):
    with pytest.raises(ValueError, match=match):
        cut_shard(messy_seed, shard, tmp_path / "x")


def test_plan_needs_a_dataset_folder(tmp_path):
    with pytest.raises(ValueError, match="samples.jsonl"):
        plan_shards(tmp_path, 2, [FILTER])
    with pytest.raises(ValueError, match="num_shards"):
        plan_shards(tmp_path, 0, [FILTER])


def test_planning_is_incremental_nothing_known_is_read_again(messy_seed, tmp_path):
    """A second plan over the same images reads none of them; a changed image is read again and changes the hash."""
    from bettersynth.data.file_hashes import FileHashes

    copy = tmp_path / "copy"
    shutil.copytree(messy_seed, copy)
    cache = tmp_path / "cache" / "file_hashes.sqlite"
    n_images = sum(1 for p in (copy / "images").iterdir() if p.is_file())
    with FileHashes(cache) as first:
        planned = fingerprint(copy, [FILTER], hashes=first)
    assert (first.misses, first.hits) == (n_images, 0)
    assert planned == fingerprint(copy, [FILTER])  # remembered or read, the same fingerprint
    with FileHashes(cache) as second:
        assert fingerprint(copy, [FILTER], hashes=second) == planned
    assert (second.misses, second.hits) == (0, n_images)
    image = next((copy / "images").iterdir())
    image.write_bytes(image.read_bytes() + b"\0")
    with FileHashes(cache) as third:
        changed = fingerprint(copy, [FILTER], hashes=third)
    assert (third.misses, third.hits) == (1, n_images - 1)
    assert changed[0] != planned[0] and changed == fingerprint(copy, [FILTER])
    assert plan_shards(copy, 2, [FILTER], hash_cache=cache)[0]["data_hash"] == changed[0]
