"""CapFusion: prompt from the recipe, synthetic caption from meta or a captioner, seeded and bounded."""

from __future__ import annotations

import pytest

from bettersynth.core.sample import Sample
from bettersynth.data.algebra import load_variant
from bettersynth.engine import Engine, EngineSettings, Failure
from bettersynth.engine.fusion import GenerationTask
from bettersynth.ops import CapFusionMapper, OpContext
from bettersynth.ops.capfusion_mapper import fill

TEMPLATE = "Merge {original} with {synthetic} now:"


def fuse(pico_causal_lm, pico_models, small_world, samples, batch_size=4, **params):
    engine = Engine(EngineSettings(batch_size=batch_size), dataset_root=small_world.seed_jsonl.parent)
    params = {"hf_llm": str(pico_causal_lm), "prompt_template": TEMPLATE, "max_new_tokens": 8, "top_k": 20} | params
    op = CapFusionMapper(CapFusionMapper.Config(**params), OpContext(engine=engine, model_root=pico_models))
    return op.process(samples)


def with_synthetic(small_world, n=4) -> list[Sample]:
    samples = load_variant(small_world.seed_jsonl.parent)[:n]
    for i, sample in enumerate(samples):
        sample.meta["synthetic_caption"] = f"a plain synthetic caption number {i}"
    return samples


def test_capfusion_fuses_meta_captions_seeded_with_provenance(pico_causal_lm, pico_models, small_world):
    samples = with_synthetic(small_world)
    first = fuse(pico_causal_lm, pico_models, small_world, samples, seed=3)
    again = fuse(pico_causal_lm, pico_models, small_world, samples, seed=3, batch_size=1)
    assert [r.added[0].text for r in first] == [r.added[0].text for r in again]
    for sample, result in zip(samples, first):
        assert result.original is None  # CapFusion replaces by default
        (new,) = result.added
        assert new.id == f"{sample.id}#fuse0" and new.images == sample.images
        assert new.text.startswith("<__dj__image> ") and new.text.endswith(" <|__dj__eoc|>")
        body = new.chunks()[0][0]
        assert body and len(body.split()) <= 8  # bounded by max_new_tokens (a word takes at least one token)
        assert new.meta["synthetic_caption"] == [sample.meta["synthetic_caption"]]
        assert new.meta["provenance"][-1] == {"op": "capfusion_mapper", "source_id": sample.id, "model": str(pico_causal_lm),
                                              "seed": 3, "synthetic_from": "meta"}
    other = fuse(pico_causal_lm, pico_models, small_world, samples, seed=4)
    assert [r.added[0].text for r in other] != [r.added[0].text for r in first]


def test_capfusion_prompt_is_the_recipe_template(pico_causal_lm, pico_models, small_world):
    """The op's output equals a direct generation from the filled template (nothing else is prompted)."""
    sample = with_synthetic(small_world, 1)[0]
    (result,) = fuse(pico_causal_lm, pico_models, small_world, [sample], seed=9)
    prompt = fill(TEMPLATE, sample.chunks()[0][0], sample.meta["synthetic_caption"])
    assert prompt == f"Merge {sample.chunks()[0][0]} with {sample.meta['synthetic_caption']} now:"
    engine = Engine(EngineSettings(batch_size=1), dataset_root=small_world.seed_jsonl.parent)
    task = GenerationTask(model_path=pico_causal_lm, prompts={sample.id: {0: prompt}}, seed=9, max_new_tokens=8, top_k=20)
    (direct,) = engine.run(task, [sample])
    assert result.added[0].chunks()[0][0] == direct[0]


def test_capfusion_captions_in_op_when_meta_lacks_one(pico_causal_lm, pico_models, small_world):
    samples = load_variant(small_world.seed_jsonl.parent)[:3]
    results = fuse(pico_causal_lm, pico_models, small_world, samples, hf_img2seq="captioner", caption_max_new_tokens=5, keep_original_sample=True)
    for sample, result in zip(samples, results):
        assert result.original is sample
        (new,) = result.added
        (synthetic,) = new.meta["synthetic_caption"]
        assert synthetic and new.meta["provenance"][-1]["synthetic_from"] == "captioner"


def test_capfusion_rejects_what_it_cannot_fuse(pico_causal_lm, pico_models, small_world):
    samples = load_variant(small_world.seed_jsonl.parent)[:2]
    samples[1].meta["synthetic_caption"] = ["one", "too many"]
    text_only = Sample("t", "no image here", [])
    missing, wrong, plain = fuse(pico_causal_lm, pico_models, small_world, [*samples, text_only])
    assert isinstance(missing, Failure) and samples[0].id in missing.reason and "no hf_img2seq" in missing.reason
    assert isinstance(wrong, Failure) and "one per chunk" in wrong.reason
    assert plain.original is text_only and plain.added == []
    with pytest.raises(ValueError, match="synthetic"):
        CapFusionMapper.Config(prompt_template="only {original}")
