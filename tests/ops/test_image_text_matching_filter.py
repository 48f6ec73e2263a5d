"""image_text_matching_filter against BlipForImageTextRetrieval's own forward, one (text, image) pair at a time."""

import functools
from pathlib import Path

import pytest
import torch
from ops_testutil import write_image
from PIL import Image, ImageOps

from bettersynth.core.sample import Sample
from bettersynth.engine import Engine, EngineSettings, Failure
from bettersynth.engine.score_cache import ScoreCache
from bettersynth.ops import ImageTextMatchingFilter, OpContext
from bettersynth.recipes.recipe import Recipe
from bettersynth_demo.op_models import build_tiny_blip_itm

MULTI = "<__dj__image> <__dj__image> a red bus on the street <|__dj__eoc|> no image here <|__dj__eoc|> <__dj__image> blue dog <|__dj__eoc|>"
TEXTS = ["a red bus on the street", "blue dog", "a cat", "green tree", "no image here"]


@pytest.fixture(scope="module")
def model_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("itm-models")
    build_tiny_blip_itm(root / "Salesforce" / "blip-itm-base-coco", TEXTS)
    return root


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("itm-data")
    for i in range(5):
        write_image(root / "imgs" / f"{i}.png", seed=20 + i, size=(36 + 6 * i, 44))
    (root / "imgs" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


@functools.cache
def blip(model_dir: Path):
    from transformers import BlipForImageTextRetrieval, BlipProcessor

    return BlipForImageTextRetrieval.from_pretrained(model_dir).eval(), BlipProcessor.from_pretrained(model_dir)


def reference(model_dir: Path, text: str, paths: list[Path], hflip=False, vflip=False) -> list[float]:
    """Data-Juicer's formula: softmax(model(**processor(text, image)).itm_score)[:, 1], per image."""
    model, processor = blip(model_dir)
    out = []
    for path in paths:
        image = Image.open(path).convert("RGB")
        image = ImageOps.mirror(image) if hflip else image
        image = ImageOps.flip(image) if vflip else image
        with torch.no_grad():
            itm = model(**processor(text=text, images=image, return_tensors="pt")).itm_score
        out.append(float(itm.softmax(dim=-1)[0, 1]))
    return out


def make_op(model_root, data_root, batch_size=2, cache=None, **params) -> ImageTextMatchingFilter:
    engine = Engine(EngineSettings(batch_size=batch_size), dataset_root=data_root)
    cfg = ImageTextMatchingFilter.Config(**params)  # hf_blip: the Data-Juicer default name, under model_root
    return ImageTextMatchingFilter(cfg, OpContext(engine=engine, model_root=model_root, score_cache=cache))


def samples() -> list[Sample]:
    return [
        Sample("cat", "<__dj__image> a cat <|__dj__eoc|>", ["imgs/0.png"]),
        Sample("multi", MULTI, ["imgs/1.png", "imgs/2.png", "imgs/3.png"]),
        Sample("text-only", "just words", []),
        Sample("tree", "<__dj__image> green tree", ["imgs/4.png"]),
    ]


@pytest.mark.parametrize("reduce_mode", ["avg", "max", "min"])
def test_itm_matches_blip_forward(model_root, data_root, reduce_mode):
    folder = model_root / "Salesforce" / "blip-itm-base-coco"
    batch = samples()
    make_op(model_root, data_root, reduce_mode=reduce_mode, min_score=0.0).process(batch)
    bus = reference(folder, "a red bus on the street", [data_root / "imgs/1.png", data_root / "imgs/2.png"])
    dog = reference(folder, "blue dog", [data_root / "imgs/3.png"])
    reduce = {"avg": lambda v: sum(v) / len(v), "max": max, "min": min}[reduce_mode]
    assert bus[0] != pytest.approx(bus[1], abs=1e-5)
    assert batch[1].stats["image_text_matching_score"] == pytest.approx([reduce(bus), dog[0]], abs=1e-5)
    assert batch[0].stats["image_text_matching_score"] == pytest.approx(reference(folder, "a cat", [data_root / "imgs/0.png"]), abs=1e-5)
    assert batch[3].stats["image_text_matching_score"] == pytest.approx(reference(folder, "green tree", [data_root / "imgs/4.png"]), abs=1e-5)
    assert batch[2].stats["image_text_matching_score"] == []
    assert all(0.0 <= v <= 1.0 for s in batch for v in s.stats["image_text_matching_score"])


@pytest.mark.parametrize("hflip, vflip", [(True, False), (False, True), (True, True)])
def test_itm_flips(model_root, data_root, hflip, vflip):
    folder = model_root / "Salesforce" / "blip-itm-base-coco"
    sample = Sample("tree", "<__dj__image> green tree", ["imgs/4.png"])
    make_op(model_root, data_root, horizontal_flip=hflip, vertical_flip=vflip).process([sample])
    expected = reference(folder, "green tree", [data_root / "imgs/4.png"], hflip, vflip)
    assert sample.stats["image_text_matching_score"] == pytest.approx(expected, abs=1e-5)
    assert expected != pytest.approx(reference(folder, "green tree", [data_root / "imgs/4.png"]), abs=1e-6)


def test_itm_any_or_all_and_closed_bounds(model_root, data_root):
    probe = samples()[1]
    make_op(model_root, data_root, min_score=0.0).process([probe])
    low, high = sorted(probe.stats["image_text_matching_score"])
    mid = (low + high) / 2
    assert make_op(model_root, data_root, min_score=mid, any_or_all="any").process([samples()[1]])[0].keep
    dropped = make_op(model_root, data_root, min_score=mid, any_or_all="all").process([samples()[1]])[0]
    assert not dropped.keep and dropped.bound == f"min_score={mid}"
    assert make_op(model_root, data_root, min_score=low, max_score=high, any_or_all="all").process([samples()[1]])[0].keep
    over = make_op(model_root, data_root, min_score=0.0, max_score=low - 1e-4, any_or_all="any").process([samples()[1]])[0]
    assert not over.keep and over.bound.startswith("max_score=")
    assert make_op(model_root, data_root, min_score=1.0).process([samples()[2]])[0].keep  # nothing to judge


def test_itm_corrupt_image_mid_batch_rejects_only_its_sample(model_root, data_root):
    batch = samples()
    batch.insert(1, Sample("bad", "<__dj__image> a cat", ["imgs/bad.png"]))
    batch.insert(3, Sample("missing", "<__dj__image> a cat", ["imgs/nope.png"]))
    results = make_op(model_root, data_root, batch_size=3, min_score=0.0).process(batch)
    assert isinstance(results[1], Failure) and "bad.png" in results[1].reason
    assert isinstance(results[3], Failure) and "nope.png" in results[3].reason
    assert sum(isinstance(r, Failure) for r in results) == 2
    alone = samples()
    make_op(model_root, data_root, batch_size=1, min_score=0.0).process(alone)
    for got, want in zip([s for s in batch if s.id not in ("bad", "missing")], alone):
        assert got.stats["image_text_matching_score"] == pytest.approx(want.stats["image_text_matching_score"], abs=1e-5)


def test_itm_dj_recipe_line_and_cache(model_root, data_root, tmp_path):
    recipe = Recipe.from_dict({"process": [{"image_text_matching_filter": {
        "hf_blip": "Salesforce/blip-itm-base-coco", "min_score": 0.003, "max_score": 1.0,
        "horizontal_flip": False, "vertical_flip": False, "any_or_all": "any", "reduce_mode": "avg", "mem_required": "1500MB",
    }}]})
    cache = ScoreCache(tmp_path / "cache")
    context = OpContext(engine=Engine(EngineSettings(batch_size=4), dataset_root=data_root), model_root=model_root, score_cache=cache)
    (op,) = recipe.build_ops(context)
    op.process(samples())
    rerun = ImageTextMatchingFilter(op.config.model_copy(update={"min_score": 0.5}), context)
    rerun.process(samples())
    assert (op.cache_misses, rerun.cache_hits, rerun.cache_misses) == (4, 4, 0)
    flipped = ImageTextMatchingFilter(op.config.model_copy(update={"horizontal_flip": True}), context)
    flipped.process(samples())
    assert flipped.cache_misses == 4  # a scoring setting changes the key


def test_itm_defaults_are_data_juicers():
    cfg = ImageTextMatchingFilter.Config()
    assert (cfg.hf_blip, cfg.min_score, cfg.max_score, cfg.any_or_all, cfg.reduce_mode) == (
        "Salesforce/blip-itm-base-coco", 0.003, 1.0, "any", "avg")
    with pytest.raises(ValueError, match="min_score"):
        ImageTextMatchingFilter.Config(min_score=0.9, max_score=0.1)
