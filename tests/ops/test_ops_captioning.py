"""Seeded re-captioning: reproducible, independent of batching, with provenance."""

from pathlib import Path

import pytest
from ops_testutil import write_image

from bettersynth.core.sample import Sample
from bettersynth.engine import Engine, EngineSettings, Failure, clear_model_cache
from bettersynth.ops import ImageCaptioningMapper, OpContext
from bettersynth.ops.simhash import hamming, simhash


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cap")
    for i in range(5):
        write_image(root / "imgs" / f"{i}.png", seed=100 + i)
    return root


def batch() -> list[Sample]:
    return [
        Sample("a", "<__dj__image> a red bus <|__dj__eoc|>", ["imgs/0.png"], meta={"src": "sbu"}),
        Sample("b", "<__dj__image> <__dj__image> two pictures <|__dj__eoc|> plain words <|__dj__eoc|>", ["imgs/1.png", "imgs/2.png"]),
        Sample("t", "text only", []),
        Sample("c", "<__dj__image> dog", ["imgs/3.png"]),
    ]


def run(model_root, data_root, samples=None, batch_size=4, **params):
    engine = Engine(EngineSettings(batch_size=batch_size), dataset_root=data_root)
    cfg = ImageCaptioningMapper.Config(hf_img2seq="blip", max_new_tokens=6, **params)
    op = ImageCaptioningMapper(cfg, OpContext(engine=engine, model_root=model_root))
    return op.process(samples if samples is not None else batch())


def texts(results) -> list[list[str]]:
    return [[s.text for s in r.added] for r in results]


def test_ops_captioning_seeded_is_reproducible(model_root, data_root):
    first = run(model_root, data_root, seed=7)
    clear_model_cache()  # a fresh load must give the same captions too
    second = run(model_root, data_root, seed=7)
    assert texts(first) == texts(second)
    other = run(model_root, data_root, seed=8)
    assert texts(other) != texts(first)
    # batch composition does not change a sample's caption
    alone = run(model_root, data_root, samples=[batch()[3]], batch_size=1, seed=7)
    assert texts(alone)[0] == texts(first)[3]


def test_ops_captioning_new_samples_and_provenance(model_root, data_root):
    results = run(model_root, data_root, seed=3)
    a, b, t, c = results
    assert a.original is not None and a.original.id == "a" and a.original.text == "<__dj__image> a red bus <|__dj__eoc|>"
    new = a.added[0]
    assert new.id == "a#cap0" and new.images == ["imgs/0.png"]
    assert new.meta["provenance"] == [{"source_id": "a", "op": "image_captioning_mapper", "model": "blip", "seed": 3, "candidates": [0]}]
    assert new.meta["src"] == "sbu" and new.stats == {}
    assert new.text.startswith("<__dj__image> ") and new.text.endswith(" <|__dj__eoc|>")
    assert new.text.count("<__dj__image>") == 1
    # two images in the first chunk, the text-only chunk keeps its words
    nb = b.added[0]
    assert nb.text.count("<__dj__image>") == 2 and nb.text.endswith("plain words <|__dj__eoc|>")
    assert len(nb.chunks()) == 2 and nb.images == ["imgs/1.png", "imgs/2.png"]
    # no images: passes unchanged, nothing added
    assert t.original is not None and t.added == []


def test_ops_captioning_candidate_modes(model_root, data_root):
    every = run(model_root, data_root, samples=[batch()[0]], seed=5, caption_num=3, keep_candidate_mode="all")[0]
    assert [s.id for s in every.added] == ["a#cap0", "a#cap1", "a#cap2"]
    candidates = [s.text for s in every.added]
    assert len(set(candidates)) > 1
    similar = run(model_root, data_root, samples=[batch()[0]], seed=5, caption_num=3, keep_candidate_mode="similar_one_simhash")[0]
    assert len(similar.added) == 1
    target = simhash("a red bus")
    distances = [hamming(simhash(Sample("x", t, ["i"]).chunks()[0][0]), target) for t in candidates]
    assert similar.added[0].text == candidates[distances.index(min(distances))]
    anyone = run(model_root, data_root, samples=[batch()[0]], seed=5, caption_num=3, keep_candidate_mode="random_any")[0]
    assert len(anyone.added) == 1 and anyone.added[0].text in candidates


def test_ops_captioning_replace_and_bad_image(model_root, data_root):
    samples = batch()
    samples.insert(1, Sample("missing", "<__dj__image> x", ["imgs/nope.png"]))
    results = run(model_root, data_root, samples=samples, seed=1, keep_original_sample=False)
    assert isinstance(results[1], Failure) and "nope.png" in results[1].reason and "not found" in results[1].reason
    assert results[0].original is None and len(results[0].added) == 1
    assert results[3].original is not None  # text-only sample is kept: nothing to replace it with
