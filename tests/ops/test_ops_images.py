import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bettersynth.core.images import ImageError, load_image, normalise_rel, resolve_image


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "data" / "imgs").mkdir(parents=True)
    Image.new("RGB", (8, 6), (10, 20, 30)).save(tmp_path / "data" / "imgs" / "a.png")
    return tmp_path / "data"


def test_ops_resolve_inside(root):
    assert resolve_image(root, "imgs/a.png") == (root / "imgs" / "a.png").resolve()
    assert resolve_image(root, "./imgs/a.png") == (root / "imgs" / "a.png").resolve()
    assert normalise_rel("./imgs//a.png") == "imgs/a.png"


@pytest.mark.parametrize("rel", ["../outside.png", "imgs/../../outside.png", "/etc/passwd", "C:\\x.png", "..\\x.png"])
def test_ops_resolve_refuses_escapes(root, rel):
    with pytest.raises(ImageError) as err:
        resolve_image(root, rel)
    assert repr(rel) in str(err.value)


def test_ops_resolve_refuses_symlink_out(root, tmp_path):
    outside = tmp_path / "secret.png"
    Image.new("RGB", (4, 4)).save(outside)
    os.symlink(outside, root / "imgs" / "link.png")
    os.symlink(root / "imgs" / "a.png", root / "imgs" / "inner.png")
    with pytest.raises(ImageError, match="outside the dataset root"):
        resolve_image(root, "imgs/link.png")
    assert resolve_image(root, "imgs/inner.png") == (root / "imgs" / "a.png").resolve()


def test_ops_load_ok_converts_to_rgb(tmp_path):
    path = tmp_path / "g.png"
    Image.new("LA", (5, 4), (100, 50)).save(path)
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (5, 4)
    assert image.getpixel((0, 0)) == (100, 100, 100)


def test_ops_load_errors_name_file_and_reason(tmp_path):
    missing = tmp_path / "missing.png"
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"definitely not an image" * 10)
    buf = io.BytesIO()
    Image.fromarray(np.random.RandomState(0).randint(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    for path, reason in [(missing, "not found"), (empty, "empty"), (corrupt, "not a recognised image"), (truncated, "truncated")]:
        with pytest.raises(ImageError) as err:
            load_image(path)
        assert str(path) in str(err.value) and reason in str(err.value)
    assert isinstance(err.value, ValueError)


def test_ops_load_pixel_limit(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (100, 100)).save(path)
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(path, max_pixels=9_999)
    assert load_image(path, max_pixels=10_000).size == (100, 100)
