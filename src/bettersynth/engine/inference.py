"""The one inference path: batching across samples, device, dtype, ``inference_mode``.

Why: Data-Juicer runs models sample by sample and a corrupt image in a
batched op drops the whole batch. Here a DataLoader flattens every sample into
rows, workers decode and preprocess images (returning a ``Failure`` marker
instead of raising), full batches go to the model, and outputs are grouped
back per sample; a bad image rejects exactly its own sample.

Example::

    engine = Engine(EngineSettings(batch_size=64, num_workers=4), dataset_root=Path("/data/seed"))
    results = engine.run(task, samples)   # per sample: {row.key: output} or Failure
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from bettersynth.core.device import DeviceSetting, DtypeSetting, resolve_device, resolve_dtype
from bettersynth.core.images import DEFAULT_MAX_PIXELS, ImageError, load_image, resolve_image
from bettersynth.core.sample import Sample
from bettersynth.engine.models import load_model
from bettersynth.engine.task import Failure, InferenceTask, Row

log = logging.getLogger(__name__)

SampleResult = dict[Hashable, Any] | Failure
WORKER_NICENESS = 10  # how much lower than the model's process decoding workers run


@dataclass(frozen=True)
class EngineSettings:
    batch_size: int = 32  # rows (images) per model call, across samples
    num_workers: int = 0  # DataLoader workers decoding images; 0 = in the main process
    device: DeviceSetting = "auto"  # auto = cuda if available, else cpu
    dtype: DtypeSetting = "auto"  # auto = bf16 on cuda, fp32 on cpu
    max_pixels: int = DEFAULT_MAX_PIXELS  # decompression-bomb limit per image

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {self.batch_size}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers: must be >= 0, got {self.num_workers}")
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels: must be >= 1, got {self.max_pixels}")


class _RowDataset(Dataset):
    """Decodes and preprocesses one row; failures come back as markers, never raised."""

    def __init__(self, rows: list[Row], task: InferenceTask, processor: Any, info: dict, root: Path, max_pixels: int):
        self.rows, self.task, self.processor, self.info = rows, task, processor, info
        self.root, self.max_pixels = root, max_pixels

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[int, dict[str, Any] | Failure]:
        row = self.rows[index]
        try:
            image = None
            if row.image is not None:
                image = load_image(resolve_image(self.root, row.image), self.max_pixels)
                image = self.task.transform_image(row, image)
            return index, self.task.prepare(row, image, self.processor, self.info)
        except ImageError as exc:
            return index, Failure(str(exc))
        except (OSError, ValueError) as exc:
            return index, Failure(f"{row.image}: preprocessing failed ({type(exc).__name__}: {exc})")


class _Collate:
    """Splits a batch into failures and good rows, and stacks the good ones."""

    def __init__(self, task: InferenceTask, processor: Any, info: dict, rows: list[Row]):
        self.task, self.processor, self.info, self.rows = task, processor, info, rows

    def __call__(self, items: list[tuple[int, dict[str, Any] | Failure]]):
        failures = [(i, p) for i, p in items if isinstance(p, Failure)]
        good = [(i, p) for i, p in items if not isinstance(p, Failure)]
        if not good:
            return [], None, failures
        try:
            return [i for i, _ in good], self.task.collate([p for _, p in good], self.processor, self.info), failures
        except (OSError, ValueError, RuntimeError, TypeError):
            # Batch preprocessing failed: find the culprit rows one by one, keep the rest.
            ok = []
            for index, prepared in good:
                try:
                    self.task.collate([prepared], self.processor, self.info)
                    ok.append((index, prepared))
                except (OSError, ValueError, RuntimeError, TypeError) as exc:
                    failures.append((index, Failure(f"{self.rows[index].image}: preprocessing failed ({type(exc).__name__}: {exc})")))
            inputs = self.task.collate([p for _, p in ok], self.processor, self.info) if ok else None
            return [i for i, _ in ok], inputs, failures


def _lower_priority(_worker_id: int) -> None:
    """Workers yield the CPU to the model: they fill its idle cycles instead of competing."""
    try:
        os.nice(WORKER_NICENESS)
    except OSError:  # not permitted here: run at normal priority
        pass


def auto_workers() -> int:
    """One decoding worker per spare core, at least one (it runs at lower priority), at most 8."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


class Engine:
    """Runs inference tasks over samples with one model copy per process."""

    def __init__(self, settings: EngineSettings | None = None, dataset_root: Path | None = None):
        self.settings = settings or EngineSettings()
        self.dataset_root = Path(dataset_root) if dataset_root is not None else Path.cwd()
        self.device = resolve_device(self.settings.device)
        self.dtype = resolve_dtype(self.settings.dtype, self.device)

    def run(self, task: InferenceTask, samples: list[Sample]) -> list[SampleResult]:
        """Per sample, ``{row.key: output}`` (empty if it needs no model) or a ``Failure``."""
        rows = [row for idx, sample in enumerate(samples) for row in task.rows(idx, sample)]
        results: list[SampleResult] = [{} for _ in samples]
        if not rows:
            return results
        bundle = load_model(task.loader, task.model_path, self.device, self.dtype)
        dataset = _RowDataset(rows, task, bundle.processor, bundle.info, self.dataset_root, self.settings.max_pixels)
        loader = DataLoader(
            dataset,
            batch_size=self.settings.batch_size,
            shuffle=False,
            num_workers=self.settings.num_workers,
            collate_fn=_Collate(task, bundle.processor, bundle.info, rows),
            worker_init_fn=_lower_priority,
            prefetch_factor=4 if self.settings.num_workers else None,
            pin_memory=self.device.startswith("cuda"),
        )
        errors: dict[int, list[str]] = {}
        # A bar with rows/s on stderr for long runs; tqdm hides it when stderr is not a terminal.
        bar = tqdm(total=len(rows), desc=type(task).__name__, unit="row", file=sys.stderr, disable=None, leave=False)
        with torch.inference_mode(), bar:
            for good, inputs, failures in loader:
                bar.update(len(good) + len(failures))
                for index, failure in failures:
                    errors.setdefault(rows[index].sample_idx, []).append(failure.reason)
                if inputs is None:
                    continue
                batch_rows = [rows[i] for i in good]
                outputs = task.forward(bundle, self._to_device(inputs), batch_rows)
                if len(outputs) != len(batch_rows):
                    raise RuntimeError(f"{type(task).__name__}.forward returned {len(outputs)} outputs for {len(batch_rows)} rows")
                for row, output in zip(batch_rows, outputs):
                    results[row.sample_idx][row.key] = output
        for sample_idx, reasons in errors.items():
            results[sample_idx] = Failure("; ".join(reasons))
        log.info("%s: %d rows from %d samples, %d samples failed", type(task).__name__, len(rows), len(samples), len(errors))
        return results

    def _to_device(self, inputs: dict[str, Any]) -> dict[str, Any]:
        moved = {}
        for name, value in inputs.items():
            if isinstance(value, torch.Tensor):
                value = value.to(self.device, non_blocking=True)
                if value.is_floating_point():
                    value = value.to(self.dtype)
            moved[name] = value
        return moved
