"""image_text_perplexity_filter (POINTS) against caption perplexities computed by hand from
the pico LLaVA's logits, keep_ratio over one call and over a streamed scoring pass."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from bettersynth.core.sample import Sample
from bettersynth.data.jsonl import read_jsonl
from bettersynth.engine import Engine, EngineSettings, Failure
from bettersynth.engine.score_cache import ScoreCache
from bettersynth.ops import OPERATORS, OpContext
from bettersynth.ops.image_text_perplexity_filter import (
    ImageTextPerplexityFilter,
    ratio_threshold,
)
from bettersynth.recipes.stream import NeedsDatasetPass


@pytest.fixture(scope="module")
def seed(small_world, tmp_path_factory) -> tuple[Path, list[Sample]]:
    """Eight seed samples in a private copy of the seed folder, plus a corrupt image file."""
    root = tmp_path_factory.mktemp("ppl-seed")
    samples = [s for s in read_jsonl(small_world.seed_jsonl) if isinstance(s, Sample)][:8]
    for sample in samples:
        target = root / sample.images[0]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(small_world.seed_jsonl.parent / sample.images[0], target)
    (root / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    return root, samples


def fresh(samples: list[Sample]) -> list[Sample]:
    return [Sample(s.id, s.text, list(s.images)) for s in samples]


def hand_perplexity(model_dir: Path, image_path: Path, caption: str) -> float:
    """Unbatched LLaVA forward on ``<image>caption</s>``; NLL of every token after the image tokens."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    processor = AutoProcessor.from_pretrained(model_dir)
    model = LlavaForConditionalGeneration.from_pretrained(model_dir).eval()
    text = "<image>" + caption + processor.tokenizer.eos_token
    inputs = processor(text=[text], images=[Image.open(image_path).convert("RGB")], return_tensors="pt")
    ids = inputs["input_ids"][0]
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    first = int((ids == image_id).nonzero().max()) + 1  # the caption's first token
    with torch.no_grad():
        logits = model(**inputs).logits[0].double()
    logp = torch.log_softmax(logits[first - 1 : -1], dim=-1)
    nll = -logp.gather(1, ids[first:, None])[:, 0]
    return math.exp(nll.mean().item())


def make_op(models: Path, root: Path, batch_size=3, cache=None, **params) -> ImageTextPerplexityFilter:
    engine = Engine(EngineSettings(batch_size=batch_size), dataset_root=root)
    config = ImageTextPerplexityFilter.Config(hf_llava="llava-base", **params)
    return ImageTextPerplexityFilter(config, OpContext(engine=engine, model_root=models, score_cache=cache))


def test_caption_perplexity_matches_hand_computation_and_corrupt_image_fails_alone(pico_models, seed):
    root, samples = seed
    batch = fresh(samples[:5])
    batch[2].images = ["images/corrupt.png"]  # mid-batch: batches are rows 0-2 and 3-4
    stats = make_op(pico_models, root, keep_ratio=None).compute_stats(batch)
    assert isinstance(stats[2], Failure) and "corrupt.png" in stats[2].reason
    for i in (0, 1, 3, 4):
        caption = batch[i].chunks()[0][0]
        assert stats[i] == pytest.approx([hand_perplexity(pico_models / "llava-base", root / batch[i].images[0], caption)], rel=1e-4)


def test_multi_image_chunks_reduce(pico_models, seed):
    root, samples = seed
    a, b = samples[0].images[0], samples[1].images[0]
    multi = Sample("m", "<__dj__image> <__dj__image> two pictures <|__dj__eoc|> no image <|__dj__eoc|>", [a, b])
    per_image = [hand_perplexity(pico_models / "llava-base", root / p, "two pictures") for p in (a, b)]
    for mode, reduce in (("avg", lambda v: sum(v) / 2), ("max", max), ("min", min)):
        stats = make_op(pico_models, root, keep_ratio=None, reduce_mode=mode).compute_stats([fresh([multi])[0]])
        assert stats == [pytest.approx([reduce(per_image)], rel=1e-4)]  # one value: the imageless chunk has none


def test_keep_ratio_keeps_the_lowest_fraction_and_records_the_threshold(pico_models, seed, tmp_path):
    root, samples = seed
    cache = ScoreCache(tmp_path / "cache")
    op = make_op(pico_models, root, cache=cache, keep_ratio=0.25)
    decisions = op.process(fresh(samples))
    scores = sorted(s[0] for s in (d.value for d in decisions))
    assert op.threshold == scores[1]  # ceil(0.25 * 8) = 2nd smallest
    assert sum(d.keep for d in decisions) == 2
    assert all(d.value[0] <= op.threshold for d in decisions if d.keep)
    assert {d.bound for d in decisions if not d.keep} == {f"keep_ratio_ppl={op.threshold}"}
    assert op.extra_counts() == {"keep_ratio": 0.25, "ppl_threshold": op.threshold, "ppl_scores": 8}
    with pytest.raises(RuntimeError, match="first pass"):
        op.process(fresh(samples[:2]))  # a second chunk would be thresholded alone: refused
    # a tighter max_ppl wins over the ratio; a new ratio reads every score from the cache
    tight = make_op(pico_models, root, cache=cache, keep_ratio=0.5, max_ppl=scores[0])
    kept = [d.keep for d in tight.process(fresh(samples))]
    assert sum(kept) == 1 and tight.cache_misses == 0


def test_streamed_scoring_pass_gives_the_same_decisions(pico_models, seed, tmp_path):
    root, samples = seed
    whole = make_op(pico_models, root, cache=ScoreCache(tmp_path / "a"), keep_ratio=0.5)
    expected = [d.keep for d in whole.process(fresh(samples))]
    streamed = make_op(pico_models, root, cache=ScoreCache(tmp_path / "b"), keep_ratio=0.5)
    chunks = [fresh(samples[:3]), fresh(samples[3:6]), fresh(samples[6:])]
    assert isinstance(streamed, NeedsDatasetPass) and streamed.needs_full_pass
    for chunk in chunks:
        streamed.observe(chunk)
    streamed.end_observation()
    got = [d.keep for chunk in chunks for d in streamed.process(chunk)]
    assert got == expected and sum(got) == 4
    assert streamed.threshold == whole.threshold


def test_bounds_only_and_validation(pico_models, seed):
    root, samples = seed
    op = make_op(pico_models, root, keep_ratio=None, min_ppl=0.0, max_ppl=1e9)
    assert not isinstance(op, NeedsDatasetPass)  # no first pass (it would re-run the ops before)
    assert not op.needs_full_pass and all(d.keep for d in op.process(fresh(samples[:3])))
    assert OPERATORS.get("image_text_perplexity_filter") is ImageTextPerplexityFilter
    with pytest.raises(ValueError, match="keep_ratio"):
        ImageTextPerplexityFilter.Config(keep_ratio=0)
    with pytest.raises(ValueError, match="min_ppl"):
        ImageTextPerplexityFilter.Config(min_ppl=3, max_ppl=2)
    assert ratio_threshold([5.0, 1.0, 3.0], 0.5) == 3.0 and ratio_threshold([], 0.2) is None


def test_keep_ratio_through_the_streaming_runner(pico_models, seed, tmp_path):
    from bettersynth.recipes.recipe import Recipe
    from bettersynth.recipes.runner import run_recipe

    root, samples = seed
    whole = make_op(pico_models, root, cache=ScoreCache(tmp_path / "c"), keep_ratio=0.5)
    expected = {s.id for s, d in zip(samples, whole.process(fresh(samples))) if d.keep}
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(s.to_json()) + "\n" for s in samples))
    recipe = Recipe.from_dict({"process": [{"image_text_perplexity_filter": {"hf_llava": "llava-base", "keep_ratio": 0.5}}]})
    report = run_recipe(recipe, tmp_path / "in.jsonl", root, tmp_path / "out", model_root=pico_models,
                        batch_size=2, num_workers=0, cache_dir=tmp_path / "c", chunk_size=3)
    kept = {json.loads(line)["id"] for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()}
    assert kept == expected and report.filtered == len(samples) - len(expected)
