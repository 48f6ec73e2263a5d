"""image_text_similarity_filter on open_clip folders (ViT and timm ConvNeXt towers), checked against
open_clip's own encoders called by hand, one image at a time."""

import functools
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from ops_testutil import write_image
from PIL import Image, ImageOps

from bettersynth.core.sample import Sample
from bettersynth.engine import Engine, EngineSettings, Failure
from bettersynth.engine.score_cache import ScoreCache
from bettersynth.ops import ImageTextSimilarityFilter, OpContext

MULTI = "<__dj__image> <__dj__image> a red bus <|__dj__eoc|> no image here <|__dj__eoc|> <__dj__image> blue dog <|__dj__eoc|>"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("oc-data")
    for i in range(6):
        write_image(root / "imgs" / f"{i}.png", seed=10 + i, size=(40 + 8 * i, 48))
    (root / "imgs" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    return root


@functools.cache
def open_clip_model(model_dir: Path):
    import open_clip

    name = f"local-dir:{model_dir}"
    model, _, transform = open_clip.create_model_and_transforms(name)
    return model.eval(), transform, open_clip.get_tokenizer(name)


def reference(model_dir: Path, text: str, paths: list[Path], hflip=False, vflip=False) -> list[float]:
    """cosine(encode_image, encode_text) with open_clip's own model, transform and tokenizer."""
    model, transform, tokenizer = open_clip_model(model_dir)
    out = []
    with torch.no_grad():
        text_emb = F.normalize(model.encode_text(tokenizer([text])), dim=-1)[0]
        for path in paths:
            image = Image.open(path).convert("RGB")
            image = ImageOps.mirror(image) if hflip else image
            image = ImageOps.flip(image) if vflip else image
            image_emb = F.normalize(model.encode_image(transform(image)[None]), dim=-1)[0]
            out.append(float(image_emb @ text_emb))
    return out


def make_op(model: str, data_root: Path, model_root: Path | None = None, batch_size=2, cache=None, **params):
    engine = Engine(EngineSettings(batch_size=batch_size), dataset_root=data_root)
    cfg = ImageTextSimilarityFilter.Config(hf_clip=model, **params)
    return ImageTextSimilarityFilter(cfg, OpContext(engine=engine, model_root=model_root, score_cache=cache))


def samples() -> list[Sample]:
    return [
        Sample("one", "<__dj__image> a cat", ["imgs/0.png"]),
        Sample("multi", MULTI, ["imgs/1.png", "imgs/2.png", "imgs/3.png"]),
        Sample("text-only", "just words", []),
        Sample("four", "<__dj__image> green tree <|__dj__eoc|>", ["imgs/4.png"]),
    ]


@pytest.mark.parametrize("kind, reduce_mode", [("vit", "avg"), ("convnext", "min"), ("vit", "max")])
def test_open_clip_similarity_matches_open_clip(pico_open_clip, data_root, kind, reduce_mode):
    folder = pico_open_clip[kind]
    batch = samples()
    make_op(f"local-dir:{folder}", data_root, reduce_mode=reduce_mode, min_score=-1.0).process(batch)
    bus = reference(folder, "a red bus", [data_root / "imgs/1.png", data_root / "imgs/2.png"])
    dog = reference(folder, "blue dog", [data_root / "imgs/3.png"])
    reduce = {"avg": lambda v: sum(v) / len(v), "min": min, "max": max}[reduce_mode]
    assert bus[0] != pytest.approx(bus[1], abs=1e-4)  # the reduction is actually exercised
    assert batch[1].stats["image_text_similarity"] == pytest.approx([reduce(bus), dog[0]], abs=1e-4)
    assert batch[0].stats["image_text_similarity"] == pytest.approx(reference(folder, "a cat", [data_root / "imgs/0.png"]), abs=1e-4)
    assert batch[3].stats["image_text_similarity"] == pytest.approx(reference(folder, "green tree", [data_root / "imgs/4.png"]), abs=1e-4)
    assert batch[2].stats["image_text_similarity"] == []


def test_open_clip_folder_found_by_contents_under_model_root(pico_open_clip, data_root, tmp_path):
    """An unchanged Data-Juicer line (`hf_clip: <name>`) works when the named folder is an open_clip one."""
    shutil.copytree(pico_open_clip["vit"], tmp_path / "laion" / "CLIP-ViT-L-14")
    by_name, by_prefix = samples()[:2], samples()[:2]
    make_op("laion/CLIP-ViT-L-14", data_root, model_root=tmp_path, min_score=-1.0).process(by_name)
    make_op(f"local-dir:{pico_open_clip['vit']}", data_root, min_score=-1.0).process(by_prefix)
    assert [s.stats for s in by_name] == [s.stats for s in by_prefix]


@pytest.mark.parametrize("hflip, vflip", [(True, False), (False, True)])
def test_open_clip_similarity_flips(pico_open_clip, data_root, hflip, vflip):
    folder = pico_open_clip["convnext"]
    sample = Sample("four", "<__dj__image> green tree", ["imgs/4.png"])
    make_op(f"local-dir:{folder}", data_root, horizontal_flip=hflip, vertical_flip=vflip, min_score=-1.0).process([sample])
    expected = reference(folder, "green tree", [data_root / "imgs/4.png"], hflip, vflip)
    plain = reference(folder, "green tree", [data_root / "imgs/4.png"])
    assert sample.stats["image_text_similarity"] == pytest.approx(expected, abs=1e-4)
    assert expected != pytest.approx(plain, abs=1e-5)


def test_open_clip_any_or_all_and_closed_bounds(pico_open_clip, data_root):
    model = f"local-dir:{pico_open_clip['vit']}"
    probe = samples()[1]
    make_op(model, data_root, min_score=-1.0).process([probe])
    low, high = sorted(probe.stats["image_text_similarity"])
    mid = (low + high) / 2
    assert make_op(model, data_root, min_score=mid, any_or_all="any").process([samples()[1]])[0].keep
    dropped = make_op(model, data_root, min_score=mid, any_or_all="all").process([samples()[1]])[0]
    assert not dropped.keep and dropped.bound == f"min_score={mid}"
    assert make_op(model, data_root, min_score=low, max_score=high, any_or_all="all").process([samples()[1]])[0].keep


def test_open_clip_corrupt_image_mid_batch_rejects_only_its_sample(pico_open_clip, data_root):
    model = f"local-dir:{pico_open_clip['vit']}"
    batch = samples()
    batch.insert(2, Sample("bad", "<__dj__image> broken", ["imgs/bad.jpg"]))
    results = make_op(model, data_root, batch_size=3, min_score=-1.0).process(batch)
    assert isinstance(results[2], Failure) and "bad.jpg" in results[2].reason
    assert all(not isinstance(r, Failure) for i, r in enumerate(results) if i != 2)
    alone = samples()
    make_op(model, data_root, batch_size=1, min_score=-1.0).process(alone)
    kept = [s for s in batch if s.id != "bad"]
    for got, want in zip(kept, alone):  # batch composition does not change a score
        assert got.stats["image_text_similarity"] == pytest.approx(want.stats["image_text_similarity"], abs=1e-5)


def test_open_clip_threshold_rerun_reads_every_score_from_cache(pico_open_clip, data_root, tmp_path):
    cache = ScoreCache(tmp_path / "cache")
    model = f"local-dir:{pico_open_clip['vit']}"
    first = make_op(model, data_root, cache=cache, min_score=-1.0)
    first.process(computed := samples())
    assert (first.cache_hits, first.cache_misses) == (0, 4)
    second = make_op(model, data_root, cache=cache, min_score=0.5, any_or_all="all")
    decisions = second.process(cached := samples())
    assert (second.cache_hits, second.cache_misses) == (4, 0)
    assert [s.stats for s in cached] == [s.stats for s in computed]
    assert [d.keep for d in decisions] == [False, False, True, False]  # random pico model: cosines far below 0.5


def test_open_clip_folder_without_weights_is_refused(pico_open_clip, data_root, tmp_path):
    empty = tmp_path / "no-weights"
    empty.mkdir()
    shutil.copy(pico_open_clip["vit"] / "open_clip_config.json", empty)
    with pytest.raises(ValueError, match="no weights file"):
        make_op(f"local-dir:{empty}", data_root).process(samples()[:1])
