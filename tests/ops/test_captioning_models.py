"""Re-captioning with BLIP-2, GIT and a chat VLM (LLaVA), and CLIP-chosen candidates (similar_one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bettersynth.core.sample import Sample
from bettersynth.engine import (
    ClipSimilarityTask,
    Engine,
    EngineSettings,
    clear_model_cache,
)
from bettersynth.ops import ImageCaptioningMapper, OpContext
from bettersynth_demo.synthesis_models import build_tiny_blip2, build_tiny_git
from bettersynth_demo.world import all_texts


@pytest.fixture(scope="module")
def captioners(tmp_path_factory, small_world, pico_models) -> Path:
    """A model root with blip2/, git/ (built here) next to the shared clip/ and llava-base/."""
    root = tmp_path_factory.mktemp("captioners")
    texts = all_texts(small_world)
    build_tiny_blip2(root / "blip2", texts)
    build_tiny_git(root / "git", texts)
    for name in ("clip", "llava-base"):
        (root / name).symlink_to(pico_models / name, target_is_directory=True)
    yield root
    clear_model_cache()


def seed_samples(small_world, n=4) -> list[Sample]:
    from bettersynth.data.algebra import load_variant

    return load_variant(small_world.seed_jsonl.parent)[:n]


def caption(root, small_world, batch_size=4, samples=None, **params):
    engine = Engine(EngineSettings(batch_size=batch_size), dataset_root=small_world.seed_jsonl.parent)
    op = ImageCaptioningMapper(ImageCaptioningMapper.Config(max_new_tokens=6, **params), OpContext(engine=engine, model_root=root))
    return op.process(samples if samples is not None else seed_samples(small_world))


@pytest.mark.parametrize("model, prompt", [("blip2", None), ("blip2", "a photo of"), ("git", None), ("git", "a photo of"), ("llava-base", None)])
def test_captioning_model_families_are_seeded(captioners, small_world, model, prompt):
    first = caption(captioners, small_world, hf_img2seq=model, prompt=prompt, seed=4)
    again = caption(captioners, small_world, hf_img2seq=model, prompt=prompt, seed=4, batch_size=1)
    texts = [[s.text for s in r.added] for r in first]
    assert texts == [[s.text for s in r.added] for r in again]  # same seed, other batching: same captions
    for sample, result in zip(seed_samples(small_world), first):
        (new,) = result.added
        assert new.id == f"{sample.id}#cap0" and new.images == sample.images
        assert new.text.startswith("<__dj__image> ") and new.text.endswith(" <|__dj__eoc|>")
        assert new.meta["provenance"][-1] == {"op": "image_captioning_mapper", "source_id": sample.id, "model": model, "seed": 4, "candidates": [0]}
        if prompt:
            assert not new.chunks()[0][0].startswith(prompt)  # the prefix is not part of the caption
    other = caption(captioners, small_world, hf_img2seq=model, prompt=prompt, seed=5)
    assert [[s.text for s in r.added] for r in other] != texts


def test_captioning_similar_one_keeps_the_clip_best_candidate(captioners, small_world):
    samples = seed_samples(small_world, 3)
    every = caption(captioners, small_world, samples=samples, hf_img2seq="blip2", caption_num=3, keep_candidate_mode="all", seed=2)
    best = caption(captioners, small_world, samples=samples, hf_img2seq="blip2", caption_num=3, keep_candidate_mode="similar_one",
                   hf_clip="clip", seed=2)
    engine = Engine(EngineSettings(batch_size=8), dataset_root=small_world.seed_jsonl.parent)
    task = ClipSimilarityTask(model_path=captioners / "clip")
    for all_result, best_result in zip(every, best):
        candidates = all_result.added
        scores = [next(iter(r.values())) for r in engine.run(task, candidates)]
        (chosen,) = best_result.added
        assert chosen.text == candidates[scores.index(max(scores))].text
        assert chosen.meta["provenance"][-1]["candidates"] == [scores.index(max(scores))]


def test_captioning_similar_one_needs_a_clip_model():
    with pytest.raises(ValueError, match="hf_clip"):
        ImageCaptioningMapper.Config(keep_candidate_mode="similar_one")
