"""What the engine runs: rows cut from samples, and a task that turns rows into outputs.

Why: batching across samples needs one flat list of work items. A sample with
several chunks and images becomes several ``Row``s (sample_idx, key, image),
which the engine batches freely and hands back grouped by sample.

Example::

    class MyTask(InferenceTask):
        loader = "hf_clip"
        def rows(self, sample_idx, sample): return image_rows(sample_idx, sample)
        def prepare(self, row, image, processor, info): return {"pixel_values": ...}
        def collate(self, prepared, processor, info): return {"pixel_values": torch.stack(...)}
        def forward(self, bundle, inputs, rows): return [...one output per row...]
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable

from PIL import Image

from bettersynth.core.sample import Sample
from bettersynth.engine.models import ModelBundle


@dataclass(frozen=True)
class Row:
    """One unit of model work: an image (and its chunk text) of one sample."""

    sample_idx: int
    key: Hashable  # identifies the row within its sample, e.g. (chunk, image, k)
    image: str | None  # path relative to the dataset root; None for text-only rows
    text: str = ""
    seed: int | None = None


@dataclass(frozen=True)
class Failure:
    """Why a sample could not be processed; it rejects that sample only."""

    reason: str


class InferenceTask(ABC):
    """A model family's batched computation; operators build tasks, the engine runs them."""

    loader: str  # name in MODEL_LOADERS
    model_path: Path

    @abstractmethod
    def rows(self, sample_idx: int, sample: Sample) -> list[Row]:
        """The rows a sample needs; runs in the main process."""

    def transform_image(self, row: Row, image: Image.Image) -> Image.Image:
        """Per-row image change before preprocessing (e.g. flips); runs in a worker."""
        return image

    @abstractmethod
    def prepare(self, row: Row, image: Image.Image | None, processor: Any, info: dict) -> dict[str, Any]:
        """Preprocess one row; runs in a worker, errors here reject only this row's sample."""

    @abstractmethod
    def collate(self, prepared: list[dict[str, Any]], processor: Any, info: dict) -> dict[str, Any]:
        """Stack prepared rows into model inputs; runs in a worker."""

    @abstractmethod
    def forward(self, bundle: ModelBundle, inputs: dict[str, Any], rows: list[Row]) -> list[Any]:
        """One output per row; runs in the main process under ``inference_mode``."""

    # Decoding on the model's device (``EngineSettings.decode``), for tasks that opt in: workers
    # then read the files but decode nothing, ``prepare`` gets ``None`` for the image, ``collate``
    # builds every input but the pixels, and ``device_inputs`` adds those from the decoded batch.

    def decodes_on_device(self, processor: Any) -> bool:
        """Whether this task can take its images decoded on the model's device; most cannot."""
        return False

    def device_inputs(self, bundle: ModelBundle, inputs: dict[str, Any], images: list[Any], rows: list[Row]) -> dict[str, Any]:
        """``inputs`` completed with the batch's images (uint8 RGB CHW tensors on the device, one per row,
        in row order; ``transform_image``'s change is this method's to make); runs in the model's process,
        on a helper thread one batch ahead of ``forward``."""
        raise NotImplementedError(f"{type(self).__name__} does not decode on the device")


def image_rows(sample_idx: int, sample: Sample, repeat: int = 1, seed: int | None = None) -> list[Row]:
    """One row per (chunk, image, repeat k), keyed ``(chunk_idx, image_idx, k)``; chunks
    without images need no model.

    With ``seed`` set each row gets its own seed derived from the sample id and
    its position, so results do not depend on batch composition.
    """
    rows = []
    for chunk_idx, (text, images) in enumerate(sample.chunks()):
        for image_idx, image in enumerate(images):
            for k in range(repeat):
                row_seed = None if seed is None else derive_seed(seed, sample.id, chunk_idx, image_idx, k)
                rows.append(Row(sample_idx, (chunk_idx, image_idx, k), image, text, row_seed))
    return rows


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any parts (unlike ``hash()``, same in every process)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1
