"""The CLIP similarity stat against an independent computation with the model's own forward."""

from pathlib import Path

import pytest
import torch
from ops_testutil import write_image
from PIL import Image, ImageOps

from bettersynth.core.sample import Sample
from bettersynth.engine import Engine, EngineSettings, Failure
from bettersynth.ops import ImageTextSimilarityFilter, OpContext

TEXT = "<__dj__image> <__dj__image> a red bus on the street <|__dj__eoc|> no image here <|__dj__eoc|> <__dj__image> blue dog <|__dj__eoc|>"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sim")
    for i in range(6):
        write_image(root / "imgs" / f"{i}.png", seed=i, size=(40 + 8 * i, 48))
    return root


def reference(model_dir: Path, text: str, paths: list[Path], hflip=False, vflip=False) -> list[float]:
    """cosine = logits_per_text / logit_scale, from CLIPModel.forward on an unbatched call."""
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(model_dir).eval()
    processor = CLIPProcessor.from_pretrained(model_dir)
    images = []
    for p in paths:
        image = Image.open(p).convert("RGB")
        image = ImageOps.mirror(image) if hflip else image
        image = ImageOps.flip(image) if vflip else image
        images.append(image)
    with torch.no_grad():
        out = model(**processor(text=[text], images=images, return_tensors="pt", padding=True))
    return (out.logits_per_text[0] / model.logit_scale.exp()).tolist()


def make_op(model_root, data_root, batch_size=2, **params) -> ImageTextSimilarityFilter:
    engine = Engine(EngineSettings(batch_size=batch_size), dataset_root=data_root)
    cfg = ImageTextSimilarityFilter.Config(hf_clip="clip", **params)
    return ImageTextSimilarityFilter(cfg, OpContext(engine=engine, model_root=model_root))


def batch() -> list[Sample]:
    return [
        Sample("s0", "<__dj__image> a cat <|__dj__eoc|>", ["imgs/0.png"]),
        Sample("multi", TEXT, ["imgs/1.png", "imgs/2.png", "imgs/3.png"]),
        Sample("text-only", "just some words", []),
        Sample("s4", "<__dj__image> green tree", ["imgs/4.png"]),
    ]


@pytest.mark.parametrize("reduce_mode", ["avg", "max", "min"])
def test_ops_similarity_matches_reference(model_root, data_root, reduce_mode):
    op = make_op(model_root, data_root, reduce_mode=reduce_mode, min_score=-1.0)
    samples = batch()
    op.process(samples)
    clip = model_root / "clip"
    bus = reference(clip, "a red bus on the street", [data_root / "imgs/1.png", data_root / "imgs/2.png"])
    dog = reference(clip, "blue dog", [data_root / "imgs/3.png"])
    reduce = {"avg": lambda v: sum(v) / len(v), "max": max, "min": min}[reduce_mode]
    assert samples[1].stats["image_text_similarity"] == pytest.approx([reduce(bus), dog[0]], abs=1e-5)
    assert samples[0].stats["image_text_similarity"] == pytest.approx(reference(clip, "a cat", [data_root / "imgs/0.png"]), abs=1e-5)
    assert samples[3].stats["image_text_similarity"] == pytest.approx(reference(clip, "green tree", [data_root / "imgs/4.png"]), abs=1e-5)
    assert samples[2].stats["image_text_similarity"] == []
    assert bus[0] != pytest.approx(bus[1], abs=1e-6)  # the reduction is actually exercised


@pytest.mark.parametrize("hflip, vflip", [(True, False), (False, True), (True, True)])
def test_ops_similarity_flips(model_root, data_root, hflip, vflip):
    op = make_op(model_root, data_root, horizontal_flip=hflip, vertical_flip=vflip)
    sample = Sample("s4", "<__dj__image> green tree", ["imgs/4.png"])
    op.process([sample])
    expected = reference(model_root / "clip", "green tree", [data_root / "imgs/4.png"], hflip, vflip)
    plain = reference(model_root / "clip", "green tree", [data_root / "imgs/4.png"])
    assert sample.stats["image_text_similarity"] == pytest.approx(expected, abs=1e-5)
    assert expected != pytest.approx(plain, abs=1e-6)


def test_ops_similarity_any_or_all_and_bounds(model_root, data_root):
    probe = make_op(model_root, data_root, min_score=-1.0)
    sample = batch()[1]
    probe.process([sample])
    low, high = sorted(sample.stats["image_text_similarity"])
    mid = (low + high) / 2
    keep_any = make_op(model_root, data_root, min_score=mid, any_or_all="any").process([batch()[1]])[0]
    keep_all = make_op(model_root, data_root, min_score=mid, any_or_all="all").process([batch()[1]])[0]
    assert keep_any.keep and not keep_all.keep
    assert keep_all.bound == f"min_score={mid}"
    # closed bounds: a score exactly on either bound is kept
    exact = make_op(model_root, data_root, min_score=low, max_score=high, any_or_all="all").process([batch()[1]])[0]
    assert exact.keep
    over = make_op(model_root, data_root, min_score=-1.0, max_score=low - 1e-3, any_or_all="any").process([batch()[1]])[0]
    assert not over.keep and over.bound.startswith("max_score=")
    # a sample without images has nothing to judge and is kept
    assert make_op(model_root, data_root, min_score=0.99).process([batch()[2]])[0].keep


def test_ops_similarity_bad_images_reject_only_their_sample(model_root, data_root, tmp_path):
    (data_root / "imgs" / "bad.png").write_bytes(b"\x89PNG broken")
    samples = batch()
    samples.insert(1, Sample("bad", "<__dj__image> x", ["imgs/bad.png"]))
    samples.insert(3, Sample("escape", "<__dj__image> y", ["../../etc/passwd"]))
    results = make_op(model_root, data_root, batch_size=3, min_score=-1.0).process(samples)
    assert isinstance(results[1], Failure) and "bad.png" in results[1].reason
    assert isinstance(results[3], Failure) and "escape" in results[3].reason and "etc/passwd" in results[3].reason
    good = [r for i, r in enumerate(results) if i not in (1, 3)]
    assert all(not isinstance(r, Failure) and r.keep for r in good)
    expected = reference(model_root / "clip", "a cat", [data_root / "imgs/0.png"])
    assert samples[0].stats["image_text_similarity"] == pytest.approx(expected, abs=1e-5)


def test_ops_similarity_missing_model_names_field(data_root, tmp_path):
    op = ImageTextSimilarityFilter(ImageTextSimilarityFilter.Config(hf_clip="nope"), OpContext(model_root=tmp_path))
    with pytest.raises(ValueError, match="hf_clip.*'nope'"):
        op.process(batch())
