"""Draw a ``Scene`` as a small RGB image, and encode it as PNG or JPEG bytes.

Why: the images must be reproducible byte for byte and need nothing but Pillow, so shapes
are drawn without anti-aliasing and text uses Pillow's bundled bitmap font (no FreeType,
no font download).

Layout: the image is a 3×3 grid; ``left``/``right``/``top``/``bottom``/``center`` are the
middle-left, middle-right, top-middle, bottom-middle and centre cells. A word sits on a
white sign centred in the top or bottom row, whose middle cell then holds no shapes.

Example::

    image = render_scene(scene, size=64)
    png = encode_image(image, "png")
"""

from __future__ import annotations

import io
from functools import lru_cache
from typing import Literal

from PIL import Image, ImageDraw, ImageFont

from bettersynth_demo.scene import BACKGROUNDS, COLOURS, ObjectGroup, Scene

ImageFormat = Literal["png", "jpeg"]
MIN_SIZE = 64  # below this the bitmap-font word stops fitting its sign band
JPEG_QUALITY = 95  # TextVQA images are JPEGs; high quality keeps the word legible

_CELLS: dict[str, tuple[int, int]] = {
    "left": (0, 1),
    "right": (2, 1),
    "top": (1, 0),
    "bottom": (1, 2),
    "center": (1, 1),
}
# Centres (fractions of a cell) of each shape when a cell holds 1, 2 or 3 of them.
_SLOTS: dict[int, tuple[tuple[float, float], ...]] = {
    1: ((0.5, 0.5),),
    2: ((0.27, 0.5), (0.73, 0.5)),
    3: ((0.27, 0.28), (0.73, 0.28), (0.5, 0.74)),
}
_SHAPE_FRACTION = {1: 0.7, 2: 0.4, 3: 0.36}  # shape side as a fraction of the cell side


def render_scene(scene: Scene, size: int = 64) -> Image.Image:
    """Return the scene as a ``size``×``size`` RGB image."""
    if size < MIN_SIZE:
        raise ValueError(f"image_size must be at least {MIN_SIZE}, got {size}")
    image = Image.new("RGB", (size, size), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(image)
    for group in scene.objects:
        _draw_group(draw, group, size)
    if scene.word:
        _paste_sign(image, scene.word, scene.sign_band)
    return image


def encode_image(image: Image.Image, fmt: ImageFormat) -> bytes:
    """Encode with fixed settings, so equal pixels always give equal bytes."""
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, format="PNG", optimize=False, compress_level=6)
    elif fmt == "jpeg":
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=False)
    else:
        raise ValueError(f"fmt must be 'png' or 'jpeg', got {fmt!r}")
    return buffer.getvalue()


def cell_box(position: str, size: int) -> tuple[int, int, int, int]:
    """Pixel box (x0, y0, x1, y1) of a position's grid cell; tests use it to find shapes."""
    col, row = _CELLS[position]
    edges = [round(size * i / 3) for i in range(4)]
    return edges[col], edges[row], edges[col + 1], edges[row + 1]


def _draw_group(draw: ImageDraw.ImageDraw, group: ObjectGroup, size: int) -> None:
    x0, y0, x1, y1 = cell_box(group.position, size)
    cell = min(x1 - x0, y1 - y0)
    half = cell * _SHAPE_FRACTION[group.count] / 2
    fill = COLOURS[group.colour]
    for fx, fy in _SLOTS[group.count]:
        cx, cy = x0 + fx * (x1 - x0), y0 + fy * (y1 - y0)
        box = (round(cx - half), round(cy - half), round(cx + half) - 1, round(cy + half) - 1)
        _DRAW_SHAPE[group.shape](draw, box, fill)


def _triangle(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], fill: tuple[int, int, int]) -> None:
    left, top, right, bottom = box
    draw.polygon([((left + right) / 2, top), (right, bottom), (left, bottom)], fill=fill)


_DRAW_SHAPE = {
    "circle": lambda draw, box, fill: draw.ellipse(box, fill=fill),
    "square": lambda draw, box, fill: draw.rectangle(box, fill=fill),
    "triangle": _triangle,
}


@lru_cache(maxsize=1)
def _font() -> ImageFont.ImageFont:
    # The bitmap font ships inside Pillow; load_default() would pick FreeType when present.
    return ImageFont.load_default_imagefont()


def _paste_sign(image: Image.Image, word: str, band: str) -> None:
    """Draw the word black on a bordered white sign, scaled up by whole pixels on big images."""
    font = _font()
    _, _, text_w, text_h = font.getbbox(word)
    sign = Image.new("RGB", (text_w + 5, text_h + 4), (255, 255, 255))
    sign_draw = ImageDraw.Draw(sign)
    sign_draw.rectangle((0, 0, sign.width - 1, sign.height - 1), outline=(0, 0, 0))
    sign_draw.text((3, 2), word, fill=(0, 0, 0), font=font)
    scale = image.width // MIN_SIZE
    if scale > 1:
        sign = sign.resize((sign.width * scale, sign.height * scale), Image.Resampling.NEAREST)
    row_top = 0 if band == "top" else round(image.height * 2 / 3)
    row_height = round(image.height / 3)
    x = (image.width - sign.width) // 2
    y = row_top + (row_height - sign.height) // 2
    image.paste(sign, (x, y))
