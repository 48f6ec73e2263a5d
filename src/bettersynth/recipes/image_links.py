"""Where a run's images go: linked (else copied) into the output, never written into the input.

Why: an output variant must hold every image its samples name, without
copying gigabytes when a hard link will do, and an op that creates images
(Stable Diffusion re-synthesis writes under the engine's dataset root) must
not write into the input variant. ``ImageStage`` gives such a run a scratch
dataset root inside the output folder, filled chunk by chunk with links to
the input images; the new images then reach ``out_dir/images`` through the
ordinary export, and the scratch root is removed with the step's ``.resume``.

Example::

    stage = ImageStage(Path("/data/seed"), Path("out/.resume/root"))
    engine.dataset_root = stage.scratch
    samples = stage(samples, reject=lambda sample_id, error: ...)
    place_image("imgs/7.png", stage.scratch, Path("out/images"), placed=set())
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from bettersynth.core.images import ImageError, normalise_rel, resolve_image
from bettersynth.core.sample import Sample
from bettersynth.recipes.step_files import is_full_disk


class ImageStage:
    """Links each chunk's input images into ``scratch``, which becomes the run's dataset root.

    A sample whose image is missing or escapes the dataset root is handed to
    ``reject`` here, by name, and leaves the chunk before any op sees it.
    """

    def __init__(self, source: Path, scratch: Path) -> None:
        self.source, self.scratch = Path(source), Path(scratch)
        self.scratch.mkdir(parents=True, exist_ok=True)

    def __call__(self, samples: list[Sample], reject: Callable[[str, str], None]) -> list[Sample]:
        staged, placed = [], set()
        for sample in samples:
            try:
                for rel in sample.images:
                    place_image(rel, self.source, self.scratch, placed)
            except (ImageError, OSError) as exc:
                if is_full_disk(exc):  # the disk, not the sample
                    raise
                reject(sample.id, f"sample {sample.id!r}: {exc}")
                continue
            staged.append(sample)
        return staged


def place_image(rel: str, root: Path, images_dir: Path, placed: set[str]) -> str:
    """Link (else copy) one image from ``root`` to ``images_dir``, same relative path; returns it.

    Existence and path safety are checked, pixels are not (only ops that use
    images decode them). A target already there from this or an earlier chunk
    (or run) is kept when it is the same file, replaced when stale."""
    source = resolve_image(root, rel)
    if not source.is_file():
        raise ImageError(f"{source}: image file not found")
    rel = normalise_rel(rel)
    if rel in placed:
        return rel
    target = images_dir / rel
    if not _same_file(source, target):
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() or target.is_symlink():
            target.unlink()
        try:
            os.link(source, target)
        except OSError:  # other filesystem, or links not allowed: copy, then rename into place
            partial = target.with_name(target.name + ".partial")
            try:
                shutil.copy2(source, partial)
            except OSError:
                partial.unlink(missing_ok=True)  # a full disk: give the space back, no half image stays
                raise
            os.replace(partial, target)
    placed.add(rel)
    return rel


def _same_file(source: Path, target: Path) -> bool:
    """True if ``target`` is ``source`` (a hard link) or a finished copy of it (same size and mtime)."""
    try:
        a, b = source.stat(), target.stat(follow_symlinks=False)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino) or (a.st_size, a.st_mtime_ns) == (b.st_size, b.st_mtime_ns)
