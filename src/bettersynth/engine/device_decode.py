"""JPEG decoding on the model's device: workers read the bytes, the model's process decodes whole batches.

Why: on a GPU the model outpaces what the CPU cores can decode, so nvjpeg
(``torchvision.io.decode_jpeg(..., device="cuda")``) decodes each batch on the
device instead (``EngineSettings.decode``). Workers still refuse what the CPU
path refuses, without decoding: the caller resolves the path inside the
dataset root, and the header's width x height must be within the pixel budget,
so a decompression bomb costs its sample before any decode. Only plain 8-bit
Huffman JPEGs in grayscale or YCbCr come here; anything else (PNG, CMYK,
RGB-coded, lossless or arithmetic JPEG, an unreadable or empty file) gets
``None`` and is decoded by the CPU path, so colours never depend on which
decoder ran and a bad file fails with the CPU path's own message. A file the
device cannot decode in its batch is retried alone, then with PIL as on the
CPU path; only if that fails too is its sample rejected.

Example::

    raw = read_jpeg(path, max_pixels)                  # EncodedJpeg, or None: decode it with load_image
    images, errors = decode_batch([raw, ...], "cuda")  # uint8 RGB CHW tensors on the device; errors by position
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.functional import pil_to_tensor

from bettersynth.core.images import ImageError, load_image

JPEG_MAGIC = b"\xff\xd8\xff"
PLAIN_FRAMES = frozenset({0xC0, 0xC1, 0xC2})  # SOF0-2: baseline, extended and progressive Huffman
OTHER_FRAMES = frozenset({0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})  # lossless, hierarchical, arithmetic
NO_LENGTH = frozenset({0x01, *range(0xD0, 0xD8)})  # markers without a length field (TEM, RSTn)
SOS, EOI, APP14 = 0xDA, 0xD9, 0xEE


@dataclass(frozen=True)
class EncodedJpeg:
    """A JPEG file's bytes as a worker read them, checked but not decoded."""

    path: str  # the resolved path, for messages and the PIL retry
    data: bytearray  # the whole file (writable, as torch.frombuffer wants)
    width: int
    height: int


def read_jpeg(path: Path, max_pixels: int) -> EncodedJpeg | None:
    """The file's bytes when the device can decode it within ``max_pixels``; None sends it to the CPU path.

    Over budget is None too: ``load_image`` then refuses it from the header
    alone, with the message the CPU path gives.
    """
    try:
        with open(path, "rb") as file:
            if file.read(3) != JPEG_MAGIC:
                return None
            data = bytearray(JPEG_MAGIC + file.read())
    except OSError:
        return None
    size = jpeg_size(data)
    if size is None:
        return None
    pixels = size[0] * size[1]
    if pixels > max_pixels or (Image.MAX_IMAGE_PIXELS and pixels > 2 * Image.MAX_IMAGE_PIXELS):
        return None
    return EncodedJpeg(str(path), data, *size)


def jpeg_size(data: bytes | bytearray) -> tuple[int, int] | None:
    """(width, height) from the frame header of a plain 8-bit Huffman JPEG in grayscale or YCbCr, else None.

    Reads the marker segments up to the first scan, decoding nothing. An Adobe
    segment saying "no colour transform", or component ids ``R G B``, means
    RGB-coded data: libjpeg honours that, nvjpeg need not, so those go to the CPU.
    """
    if data[:3] != JPEG_MAGIC:
        return None
    pos, frame, adobe_transform = 2, None, None
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in NO_LENGTH:
            pos += 2
            continue
        if marker == EOI:
            return None
        if marker == SOS:
            break
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        segment = data[pos + 4 : pos + 2 + length]
        if length < 2 or len(segment) != length - 2 or marker in OTHER_FRAMES:
            return None
        if marker == APP14 and segment[:5] == b"Adobe" and len(segment) >= 12:
            adobe_transform = segment[11]
        if marker in PLAIN_FRAMES:
            if frame is not None or len(segment) < 6:
                return None
            frame = segment
        pos += 2 + length
    if frame is None:
        return None
    precision, height, width, components = frame[0], int.from_bytes(frame[1:3], "big"), int.from_bytes(frame[3:5], "big"), frame[5]
    ids = bytes(frame[6 + 3 * i] for i in range(components) if 6 + 3 * i < len(frame))
    if precision != 8 or components not in (1, 3) or not width or not height:
        return None
    if components == 3 and (adobe_transform == 0 or ids == b"RGB"):
        return None
    return width, height


def decode_batch(images: list[EncodedJpeg | torch.Tensor | None], device: str) -> tuple[list[torch.Tensor | None], dict[int, str]]:
    """Each image as a uint8 RGB CHW tensor on ``device``, and why each one that failed did (by position).

    ``EncodedJpeg`` entries are decoded in one batched call (nvjpeg on CUDA);
    tensors (decoded by the CPU path in a worker) are moved; None stays None,
    as does a failed entry.
    """
    out: list[torch.Tensor | None] = [None] * len(images)
    errors: dict[int, str] = {}
    jpegs = [i for i, image in enumerate(images) if isinstance(image, EncodedJpeg)]
    for i, image in enumerate(images):
        if isinstance(image, torch.Tensor):
            out[i] = image.to(device, non_blocking=True)
    if not jpegs:
        return out, errors
    data = [torch.frombuffer(images[i].data, dtype=torch.uint8) for i in jpegs]
    try:
        decoded = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:  # one bad file fails the whole call: decode them one by one
        decoded = [_decode_alone(images[i], encoded, device) for i, encoded in zip(jpegs, data)]
    for i, image in zip(jpegs, decoded):
        if isinstance(image, str):
            errors[i] = image
        else:
            out[i] = image
    return out, errors


def _decode_alone(image: EncodedJpeg, data: torch.Tensor, device: str) -> torch.Tensor | str:
    """One file on the device, else through PIL as the CPU path decodes it; the CPU path's message if both fail."""
    try:
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        pass
    try:
        # Its header already passed the pixel budget: the budget here is the file's own size.
        return pil_to_tensor(load_image(Path(image.path), image.width * image.height)).to(device)
    except ImageError as exc:
        return str(exc)
    except (OSError, ValueError) as exc:
        return f"{image.path}: decoding failed ({type(exc).__name__}: {exc})"
