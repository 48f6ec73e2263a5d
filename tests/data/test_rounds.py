"""Multi-round recipes: selection, merge-back, and counts that add up (added / replaced / removed)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bettersynth.core.sample import Sample
from bettersynth.data.algebra import load_variant, replace
from bettersynth.data.jsonl import write_samples
from bettersynth.engine import ClipSimilarityTask, Engine, EngineSettings
from bettersynth.ops import OpContext
from bettersynth.recipes.recipe import Recipe
from bettersynth.recipes.rounds import RoundSelect, run_rounds, selects


def recaption_recipe(low: float, high: float, refilter: float) -> Recipe:
    """The challenge's shape: score, re-caption the [low, high] band, keep re-captions >= refilter."""
    return Recipe.from_dict({
        "name": "rounds-test",
        "rounds": [
            {"name": "score", "process": [{"image_text_similarity_filter": {"hf_clip": "clip", "min_score": low, "max_score": 1.0}}]},
            {"name": "recaption", "where": {"stat": "image_text_similarity", "min": low, "max": high}, "process": [
                {"image_captioning_mapper": {"hf_img2seq": "captioner", "keep_original_sample": False, "max_new_tokens": 6, "seed": 1}},
                {"image_text_similarity_filter": {"hf_clip": "clip", "min_score": refilter, "max_score": 1.0}},
            ]},
        ],
    })


def run(recipe, small_world, pico_models, out: Path, tmp_path: Path):
    seed = small_world.seed_jsonl
    return run_rounds(recipe, seed, seed.parent, out, model_root=pico_models, num_workers=0, cache_dir=tmp_path / "cache")


@pytest.fixture(scope="module")
def similarities(small_world, pico_models) -> dict[str, float]:
    """Each seed sample's similarity, computed here independently of the runner."""
    samples = load_variant(small_world.seed_jsonl.parent)
    engine = Engine(EngineSettings(batch_size=32), dataset_root=small_world.seed_jsonl.parent)
    results = engine.run(ClipSimilarityTask(model_path=pico_models / "clip"), samples)
    return {s.id: next(iter(r.values())) for s, r in zip(samples, results)}


def test_rounds_counts_add_up_and_merge_back(small_world, pico_models, similarities, tmp_path):
    values = sorted(similarities.values())
    low, high = values[len(values) // 5], values[(len(values) * 3) // 4]
    # first pass keeps every re-caption, to see where their scores fall
    probe = run(recaption_recipe(low, high, -1.0), small_world, pico_models, tmp_path / "probe", tmp_path)
    recaptions = {s.id: s.stats["image_text_similarity"][0] for s in load_variant(tmp_path / "probe") if "#cap" in s.id}
    assert probe.rounds[1].replaced == len(recaptions) > 0
    ordered = sorted(recaptions.values())
    refilter = (ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2]) / 2  # a split between two re-captions

    out = tmp_path / "out"
    report = run(recaption_recipe(low, high, refilter), small_world, pico_models, out, tmp_path)
    n = len(similarities)
    survivors = {i for i, v in similarities.items() if v >= low}
    band = {i for i in survivors if v_in(similarities[i], low, high)}
    good_recaptions = {i.split("#")[0] for i, v in recaptions.items() if v >= refilter}
    assert 0 < len(good_recaptions) < len(band)

    score, recaption = report.rounds
    assert (score.n_in, score.selected, score.removed, score.added, score.replaced) == (n, n, n - len(survivors), 0, 0)
    assert (recaption.n_in, recaption.selected, recaption.bypassed) == (len(survivors), len(band), len(survivors) - len(band))
    assert recaption.created == len(band) and recaption.replaced == len(good_recaptions)
    assert recaption.removed == len(band) - len(good_recaptions) and recaption.added == 0
    assert recaption.filtered == len(band) and recaption.kept == 0  # every band sample was swapped out by the mapper
    assert recaption.step["per_op"][0]["replaced"] == len(band)
    for r in report.rounds:  # in = kept + filtered + rejected (+ bypassed), out = in - removed + added
        assert r.n_in == r.bypassed + r.kept + r.filtered + r.rejected
        assert r.n_out == r.n_in - r.removed + r.added
    assert (report.n_in, report.n_out) == (n, n - report.removed + report.added)
    assert report.removed == (n - len(survivors)) + len(band) - len(good_recaptions) and report.replaced == len(good_recaptions)
    # followed per input line: each band pair was filtered (swapped out); the good ones were replaced
    counts = report.step_counts()
    assert counts["n_in"] == counts["kept_from_input"] + counts["filtered"] + counts["rejected"] == n
    assert (counts["kept_from_input"], counts["filtered"], counts["rejected"]) == (len(survivors) - len(band), n - len(survivors) + len(band), 0)
    assert (counts["replaced"], counts["removed"]) == (len(good_recaptions), report.removed)
    assert (counts["added"], counts["added_kept"], counts["kept"]) == (len(band), len(good_recaptions), report.n_out)

    samples = load_variant(out)
    expected = [i if i not in band else f"{i}#cap0" for i in sorted(survivors, key=list(similarities).index)
                if i not in band or i in good_recaptions]
    assert [s.id for s in samples] == expected  # merged back in input order, re-captions where their source was
    originals = {s.id: s for s in load_variant(small_world.seed_jsonl.parent)}
    for sample in samples:
        assert (out / sample.images[0]).is_file()
        if "#cap" in sample.id:
            assert sample.meta["provenance"][-1]["source_id"] == sample.id.split("#")[0]
            assert sample.stats["image_text_similarity"][0] >= refilter
        else:
            assert sample.text == originals[sample.id].text
    outcomes = [json.loads(line) for line in (out / "outcomes.jsonl").read_text().splitlines()]
    assert {o["round"] for o in outcomes} == {"score", "recaption"}
    assert json.loads((out / "report.json").read_text())["replaced"] == len(good_recaptions)
    assert not (tmp_path / ".out.rounds").exists()  # staging removed

    again = run(recaption_recipe(low, high, refilter), small_world, pico_models, tmp_path / "again", tmp_path)
    assert (out / "samples.jsonl").read_bytes() == (tmp_path / "again" / "samples.jsonl").read_bytes()
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(p.name for p in (tmp_path / "again" / "images").iterdir())
    assert again.rounds[1].replaced == report.rounds[1].replaced


def v_in(value: float, low: float, high: float) -> bool:
    return low <= value <= high


def test_rounds_stage_rejects_bad_lines_and_missing_images(small_world, pico_models, tmp_path):
    root = Path(shutil.copytree(small_world.seed_jsonl.parent, tmp_path / "data"))
    samples = load_variant(root)[:3]
    samples.append(Sample("ghost", "<__dj__image> x <|__dj__eoc|>", ["images/ghost.png"]))
    write_samples(root / "samples.jsonl", samples)
    with (root / "samples.jsonl").open("a") as handle:
        handle.write("{not json\n")
    recipe = Recipe.from_dict({"process": [{"words_num_filter": {"min_num": 1}}]})
    report = run_rounds(recipe, root / "samples.jsonl", root, tmp_path / "out", num_workers=0)
    assert (report.n_in, report.staged, report.staging_rejected, report.n_out) == (5, 3, 2, 3)
    rejected = [json.loads(line) for line in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    # the missing image is found by the checks at ingestion, before round 0
    assert {r["op"] for r in rejected} == {"ingest", "reader"} and any("ghost" in r["error"] for r in rejected)


def test_round_selection_and_recipe_checks():
    sample = Sample("a", "x", [], stats={"s": [0.1, 0.5]})
    assert selects(RoundSelect(stat="s", min=0.4), sample) and not selects(RoundSelect(stat="s", min=0.4, any_or_all="all"), sample)
    assert not selects(RoundSelect(stat="missing"), sample)
    chosen = [i for i in range(400) if selects(RoundSelect(fraction=0.25, seed=3), Sample(str(i), "x", []))]
    assert 60 < len(chosen) < 140 and chosen == [i for i in range(400) if selects(RoundSelect(fraction=0.25, seed=3), Sample(str(i), "x", []))]
    base = {"rounds": [{"process": ["words_num_filter"]}, {"where": {"stat": "num_words", "max": 5}, "process": ["words_num_filter"]}]}
    recipe = Recipe.from_dict(base)
    assert recipe.is_multi_round and [r.name for r in recipe.rounds] == ["round-0", "round-1"]
    changed = json.loads(json.dumps(base))
    changed["rounds"][1]["where"]["max"] = 6
    assert Recipe.from_dict(changed).hash() != recipe.hash()
    assert Recipe.from_dict(recipe.to_dict()).hash() == recipe.hash()
    with pytest.raises(ValueError, match="has rounds"):
        recipe.build_ops(OpContext())
    with pytest.raises(ValueError, match="either 'process'"):
        Recipe.from_dict({**base, "process": ["words_num_filter"]})
    with pytest.raises(ValueError, match=r"rounds\[1\]\.where: field 'fractoin'"):
        Recipe.from_dict({"rounds": [{"process": ["words_num_filter"]}, {"where": {"fractoin": 0.2}, "process": ["words_num_filter"]}]})
    with pytest.raises(ValueError, match=r"rounds\[0\]\.process\[0\]"):
        Recipe.from_dict({"rounds": [{"process": ["no_such_op"]}]})


def test_replace_finds_the_source_through_provenance(small_world, tmp_path):
    from bettersynth.data.provenance import with_provenance

    seed_dir = small_world.seed_jsonl.parent
    target = load_variant(seed_dir)[2]
    synth = tmp_path / "synth"
    (synth / "images").mkdir(parents=True)
    (synth / "images" / "n.png").write_bytes((seed_dir / target.images[0]).read_bytes())
    meta = with_provenance({}, op="image_captioning_mapper", source_id=target.id, model="m", seed=0)
    write_samples(synth / "samples.jsonl", [Sample(f"{target.id}#cap0", "<__dj__image> new words <|__dj__eoc|>", ["images/n.png"], meta)])
    report = replace(seed_dir, synth, tmp_path / "out")
    swapped = {s.id: s for s in load_variant(tmp_path / "out")}[target.id]
    assert report.replaced == 1 and "new words" in swapped.text
    assert [r["op"] for r in swapped.meta["provenance"]] == ["image_captioning_mapper", "replace"]
