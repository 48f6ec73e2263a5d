"""Size, aspect-ratio and shape filters: stats from the files themselves, Data-Juicer semantics."""

from pathlib import Path

import pytest
from ops_testutil import write_image

from bettersynth.core.sample import Sample
from bettersynth.engine import Engine, Failure
from bettersynth.ops import ImageAspectRatioFilter, ImageShapeFilter, ImageSizeFilter, OpContext
from bettersynth.ops.image_size_filter import size_to_bytes
from bettersynth.recipes.recipe import Recipe

SIZES = {"wide": (90, 30), "tall": (20, 80), "square": (50, 50)}


@pytest.fixture
def root(tmp_path) -> Path:
    for i, (name, size) in enumerate(SIZES.items()):
        write_image(tmp_path / f"{name}.png", seed=i, size=size)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    return tmp_path


def op(cls, root, **params):
    return cls(cls.Config(**params), OpContext(engine=Engine(dataset_root=root)))


def sample(*names) -> Sample:
    return Sample("s-" + "-".join(names), " ".join(["<__dj__image>"] * len(names)) + " text", [f"{n}.png" for n in names])


def test_ops_size_to_bytes_units():
    assert size_to_bytes("0") == 0 and size_to_bytes("300") == 300
    assert size_to_bytes("10KB") == 10 * 1024 and size_to_bytes("2mib") == 2 * 1024**2 and size_to_bytes("1TB") == 1024**4
    assert size_to_bytes("1.5MB") == int(1.5 * 1024**2)  # Data-Juicer would read 15 MB
    with pytest.raises(ValueError, match="not a size"):
        size_to_bytes("big")


def test_ops_image_size_filter(root):
    sizes = {n: (root / f"{n}.png").stat().st_size for n in SIZES}
    cut = sorted(sizes.values())[1]
    s = sample("wide", "tall", "square")
    op(ImageSizeFilter, root, min_size=str(cut)).process([s])
    assert s.stats["image_sizes"] == [sizes["wide"], sizes["tall"], sizes["square"]]
    keep_all = op(ImageSizeFilter, root, min_size=str(cut), any_or_all="all").process([sample("wide", "tall", "square")])[0]
    assert not keep_all.keep and keep_all.bound == f"min_size={cut}"
    exact = op(ImageSizeFilter, root, min_size=str(cut), max_size=str(cut)).process([sample("wide", "tall", "square")])[0]
    assert exact.keep  # closed bounds
    with pytest.raises(ValueError, match="max_size"):
        Recipe.from_dict({"process": [{"image_size_filter": {"max_size": "lots"}}]})


def test_ops_image_aspect_ratio_filter(root):
    decisions = op(ImageAspectRatioFilter, root, min_ratio=0.5, max_ratio=2.0).process(
        [sample("wide"), sample("tall"), sample("square"), sample("wide", "square"), Sample("t", "no image")]
    )
    assert [d.keep for d in decisions] == [False, False, True, True, True]
    assert decisions[0].value == [3.0] and decisions[0].bound == "max_ratio=2.0"
    assert decisions[1].value == [0.25] and decisions[1].bound == "min_ratio=0.5"
    both = op(ImageAspectRatioFilter, root, min_ratio=0.5, max_ratio=2.0, any_or_all="all").process([sample("wide", "square")])[0]
    assert not both.keep


def test_ops_image_shape_filter(root):
    f = op(ImageShapeFilter, root, min_width=30, max_height=60)
    s = sample("wide", "tall", "square")
    decisions = f.process([s, sample("tall"), sample("wide")])
    assert s.stats["image_width"] == [90, 20, 50] and s.stats["image_height"] == [30, 80, 50]
    assert [d.keep for d in decisions] == [True, False, True]
    assert decisions[1].bound == "min_width=30"
    height = op(ImageShapeFilter, root, max_height=60).process([sample("tall")])[0]
    assert not height.keep and height.stat == "image_height" and height.bound == "max_height=60"
    assert not op(ImageShapeFilter, root, min_width=30, any_or_all="all").process([sample("wide", "tall")])[0].keep


@pytest.mark.parametrize("cls", [ImageSizeFilter, ImageAspectRatioFilter, ImageShapeFilter])
def test_ops_image_header_filters_reject_only_bad_samples(root, cls):
    results = op(cls, root).process([sample("square"), sample("missing"), sample("square"), Sample("esc", "<__dj__image>", ["../x.png"])])
    assert not isinstance(results[0], Failure) and not isinstance(results[2], Failure)
    assert isinstance(results[1], Failure) and "missing.png" in results[1].reason
    assert isinstance(results[3], Failure) and "x.png" in results[3].reason
    if cls is not ImageSizeFilter:  # the size filter reads no pixels, so a broken file has a size
        assert isinstance(op(cls, root).process([sample("bad")])[0], Failure)
