"""Safe image access: paths stay inside the dataset root, bad files fail one sample.

Why: datasets are scraped and "messy"; a path like ``../../etc/passwd``, a
zero-byte download or a decompression bomb must cost exactly the sample that
names it, with an error that says which file and why.

Example::

    path = resolve_image(Path("/data/seed"), "imgs/7.jpg")
    image = load_image(path)          # RGB PIL image, or ImageError
    check_image(Path("/data/seed"), "imgs/7.jpg")   # what ingestion asks of every image, or ImageError
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path, PurePosixPath, PureWindowsPath

from PIL import Image, UnidentifiedImageError

# Default pixel budget: generous for photos (≈ 8k x 8k), small enough to stop bombs.
DEFAULT_MAX_PIXELS = 64_000_000


class ImageError(ValueError):
    """An image that cannot be used; the message names the file and the reason."""


def resolve_image(root: Path, rel: str) -> Path:
    """Return the real path of ``rel`` under ``root``, refusing anything that escapes it.

    Refused: absolute paths (POSIX or Windows style), ``..`` components, and
    symlinks whose target lies outside ``root``. Why string paths and a
    remembered root: this runs several times per sample, ``realpath`` stats
    every folder from ``/`` and pathlib parses at every step; only a link
    below the root sends the path through ``realpath``.
    """
    parts = _relative_parts(rel)
    real_root = _real_root(os.path.abspath(root))
    path, linked = real_root, False
    for part in parts:
        path = os.path.join(path, part)
        linked = linked or os.path.islink(path)
    if not linked:
        return Path(path)
    real = os.path.realpath(path)
    if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
        raise ImageError(f"image path {rel!r} resolves to {real!r}, outside the dataset root")
    return Path(real)


_REAL_ROOTS: dict[str, str] = {}  # absolute root -> its real path, for roots that exist


def _real_root(absolute_root: str) -> str:
    """The real path of a dataset root, remembered once the root exists (roots are few and not re-pointed mid-run)."""
    known = _REAL_ROOTS.get(absolute_root)
    if known is None:
        known = os.path.realpath(absolute_root)
        if os.path.isdir(known) and len(_REAL_ROOTS) < 1024:
            _REAL_ROOTS[absolute_root] = known
    return known


def _relative_parts(rel: str) -> list[str]:
    """The parts of a relative image path, without ``.``; absolute, empty and ``..`` paths are refused."""
    if not rel or not rel.strip():
        raise ImageError("empty image path")
    plain = "\\" not in rel and ":" not in rel and not rel.startswith("/")  # the common case, parsed without pathlib
    if not plain and (PurePosixPath(rel).is_absolute() or PureWindowsPath(rel).is_absolute()
                      or PureWindowsPath(rel).drive):
        raise ImageError(f"image path {rel!r} is absolute; paths must be relative to the dataset root")
    parts = [p for p in rel.replace("\\", "/").split("/") if p and p != "."]
    if ".." in parts:
        raise ImageError(f"image path {rel!r} contains '..' and would escape the dataset root")
    return parts


def normalise_rel(rel: str) -> str:
    """The canonical relative form of an image path (forward slashes, no ``.`` parts)."""
    return PurePosixPath(*[p for p in PurePosixPath(rel.replace("\\", "/")).parts if p != "."]).as_posix()


def check_image(root: Path, rel: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Path:
    """What a sample's image must pass before any op sees it; returns its real path or raises ``ImageError``.

    Stricter than ``resolve_image``: the path and every folder on it below
    ``root`` must not be a symlink (even one pointing inside the root), and
    the file must decode completely: not empty, not truncated, not over
    ``max_pixels`` (a decompression bomb), a format PIL recognises.
    """
    parts = _relative_parts(rel)
    current = os.fspath(root)
    for i, part in enumerate(parts):
        current = os.path.join(current, part)
        if os.path.islink(current):
            what = "image" if i == len(parts) - 1 else "folder"
            raise ImageError(f"image path {rel!r}: {what} {current!r} is a symlink (to {os.readlink(current)!r}); "
                             "symlinks are refused")
    real = resolve_image(root, rel)  # the root itself may be a link; what lies under it may not
    _decode(real, max_pixels, convert=False)
    return real


def load_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode ``path`` fully into an RGB image, or raise ``ImageError`` naming it.

    The whole file is decoded here (not lazily) so truncation is caught now,
    inside the worker that owns the sample, rather than later inside a batch.
    """
    return _decode(path, max_pixels, convert=True)


def _decode(path: Path, max_pixels: int, convert: bool) -> Image.Image | None:
    """Decode ``path`` completely (then as RGB if ``convert``), or raise ``ImageError`` naming the file and reason."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageError(f"{path}: image file not found") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot stat image ({exc.strerror or exc})") from None
    if not path.is_file():
        raise ImageError(f"{path}: not a regular file")
    if size == 0:
        raise ImageError(f"{path}: image file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Our own limit below replaces PIL's global warning threshold.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageError(
                        f"{path}: image has {width}x{height} = {width * height} pixels, "
                        f"over the limit of {max_pixels} (possible decompression bomb)"
                    )
                image.load()
                return image.convert("RGB") if convert else None
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path}: decompression bomb refused ({exc})") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not a recognised image (corrupt or wrong format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        # PIL reports truncated files as OSError("image file is truncated ...").
        raise ImageError(f"{path}: corrupt or truncated image ({exc})") from None
