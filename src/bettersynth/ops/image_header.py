"""Image facts read from file headers (size, dimensions) without decoding pixels.

Why: size and shape filters run over every sample before any model; reading
only the header keeps them at file-system speed, and a missing or unreadable
file still rejects just its sample, naming it.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from bettersynth.core.images import ImageError, resolve_image
from bettersynth.core.sample import Sample
from bettersynth.engine import Failure


def file_sizes(root: Path, sample: Sample) -> list[int] | Failure:
    """Bytes of each image of ``sample``."""
    try:
        return [resolve_image(root, rel).stat().st_size for rel in sample.images]
    except ImageError as exc:
        return Failure(str(exc))
    except OSError as exc:
        return Failure(f"{exc.filename or sample.images}: cannot read image ({exc.strerror or exc})")


def dimensions(root: Path, sample: Sample) -> list[tuple[int, int]] | Failure:
    """(width, height) of each image of ``sample``, from its header."""
    dims = []
    for rel in sample.images:
        try:
            path = resolve_image(root, rel)
            with Image.open(path) as image:
                dims.append(image.size)
        except ImageError as exc:
            return Failure(str(exc))
        except FileNotFoundError:
            return Failure(f"{rel}: image file not found")
        except (UnidentifiedImageError, OSError) as exc:
            return Failure(f"{rel}: not a readable image ({type(exc).__name__}: {exc})")
    return dims
