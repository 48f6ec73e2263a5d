"""The one inference path: batching across samples, device, dtype, ``inference_mode``.

Why: Data-Juicer runs models sample by sample and a corrupt image in a
batched op drops the whole batch. Here a DataLoader flattens every sample into
rows, workers decode and preprocess images (returning a ``Failure`` marker
instead of raising), full batches go to the model, and outputs are grouped
back per sample; a bad image rejects exactly its own sample. With
``decode="device"`` (tasks that opt in) workers only read JPEG bytes and the
model's device decodes each batch (``bettersynth.engine.device_decode``), one
batch ahead of the model, for GPUs the CPU cores cannot keep fed.

Example::

    engine = Engine(EngineSettings(batch_size=64, num_workers=4), dataset_root=Path("/data/seed"))
    results = engine.run(task, samples)   # per sample: {row.key: output} or Failure
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable, Literal, get_args

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.functional import pil_to_tensor
from tqdm import tqdm

from bettersynth.core.device import DeviceSetting, DtypeSetting, resolve_device, resolve_dtype
from bettersynth.core.images import DEFAULT_MAX_PIXELS, ImageError, load_image, resolve_image
from bettersynth.core.sample import Sample
from bettersynth.engine.device_decode import decode_batch, read_jpeg
from bettersynth.engine.models import ModelBundle, load_model
from bettersynth.engine.task import Failure, InferenceTask, Row

log = logging.getLogger(__name__)

SampleResult = dict[Hashable, Any] | Failure
DecodeSetting = Literal["cpu", "device", "auto"]
WORKER_NICENESS = 10  # how much lower than the model's process decoding workers run
PREPROCESSING_ERRORS = (OSError, ValueError, RuntimeError, TypeError)  # what rejects a row's sample, not the run
PLACEHOLDER_SIDE = 8  # a black square stands in for an image the device could not decode; its output is dropped
# A batch from the loader: good row indices, their inputs, failures, and (decode="device") their undecoded images.
Batch = tuple[list[int], dict[str, Any] | None, list[tuple[int, Failure]], list[Any] | None]


@dataclass(frozen=True)
class EngineSettings:
    batch_size: int = 32  # rows (images) per model call, across samples
    num_workers: int = 0  # DataLoader workers decoding images; 0 = in the main process
    device: DeviceSetting = "auto"  # auto = cuda if available, else cpu
    dtype: DtypeSetting = "auto"  # auto = bf16 on cuda, fp32 on cpu
    max_pixels: int = DEFAULT_MAX_PIXELS  # decompression-bomb limit per image
    # Where JPEGs are decoded, for tasks that can (CLIP similarity): cpu = PIL in the workers; device = whole
    # batches on the model's device (nvjpeg on CUDA), workers only read the bytes; auto = device on CUDA.
    decode: DecodeSetting = "cpu"

    def __post_init__(self) -> None:
        if self.decode not in get_args(DecodeSetting):
            raise ValueError(f"decode: must be one of {', '.join(map(repr, get_args(DecodeSetting)))}, got {self.decode!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {self.batch_size}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers: must be >= 0, got {self.num_workers}")
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels: must be >= 1, got {self.max_pixels}")


class _RowDataset(Dataset):
    """Decodes and preprocesses one row; failures come back as markers, never raised.

    With ``on_device`` the image is not decoded here: a JPEG comes back as its
    checked bytes, anything else decoded by PIL as a uint8 tensor, both for
    the model's process to finish on the device.
    """

    def __init__(self, rows: list[Row], task: InferenceTask, processor: Any, info: dict, root: Path, max_pixels: int,
                 on_device: bool = False):
        self.rows, self.task, self.processor, self.info = rows, task, processor, info
        self.root, self.max_pixels, self.on_device = root, max_pixels, on_device

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[int, dict[str, Any] | Failure, Any]:
        row = self.rows[index]
        try:
            if self.on_device:
                raw = self._undecoded(row.image) if row.image is not None else None
                return index, self.task.prepare(row, None, self.processor, self.info), raw
            image = None
            if row.image is not None:
                image = load_image(resolve_image(self.root, row.image), self.max_pixels)
                image = self.task.transform_image(row, image)
            return index, self.task.prepare(row, image, self.processor, self.info), None
        except ImageError as exc:
            return index, Failure(str(exc)), None
        except (OSError, ValueError) as exc:
            return index, Failure(f"{row.image}: preprocessing failed ({type(exc).__name__}: {exc})"), None

    def _undecoded(self, rel: str) -> Any:
        path = resolve_image(self.root, rel)
        return read_jpeg(path, self.max_pixels) or pil_to_tensor(load_image(path, self.max_pixels))


class _Collate:
    """Splits a batch into failures and good rows, and stacks the good ones."""

    def __init__(self, task: InferenceTask, processor: Any, info: dict, rows: list[Row]):
        self.task, self.processor, self.info, self.rows = task, processor, info, rows

    def __call__(self, items: list[tuple[int, dict[str, Any] | Failure, Any]]) -> Batch:
        failures = [(i, p) for i, p, _ in items if isinstance(p, Failure)]
        good = [item for item in items if not isinstance(item[1], Failure)]
        if not good:
            return [], None, failures, None
        try:
            inputs = self.task.collate([p for _, p, _ in good], self.processor, self.info)
            return [i for i, _, _ in good], inputs, failures, _raws(good)
        except PREPROCESSING_ERRORS:
            # Batch preprocessing failed: find the culprit rows one by one, keep the rest.
            ok = []
            for index, prepared, raw in good:
                try:
                    self.task.collate([prepared], self.processor, self.info)
                    ok.append((index, prepared, raw))
                except PREPROCESSING_ERRORS as exc:
                    failures.append((index, Failure(f"{self.rows[index].image}: preprocessing failed ({type(exc).__name__}: {exc})")))
            inputs = self.task.collate([p for _, p, _ in ok], self.processor, self.info) if ok else None
            return [i for i, _, _ in ok], inputs, failures, _raws(ok)


def _raws(items: list[tuple[int, Any, Any]]) -> list[Any] | None:
    """The undecoded images of a decode="device" batch, None on the CPU path (no rows carry one)."""
    raws = [raw for _, _, raw in items]
    return raws if any(raw is not None for raw in raws) else None


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
        decode = self.settings.decode
        self.decode_on_device = decode == "device" or (decode == "auto" and self.device.startswith("cuda"))

    def run(self, task: InferenceTask, samples: list[Sample]) -> list[SampleResult]:
        """Per sample, ``{row.key: output}`` (empty if it needs no model) or a ``Failure``."""
        rows = [row for idx, sample in enumerate(samples) for row in task.rows(idx, sample)]
        results: list[SampleResult] = [{} for _ in samples]
        if not rows:
            return results
        bundle = load_model(task.loader, task.model_path, self.device, self.dtype)
        on_device = self.decode_on_device and task.decodes_on_device(bundle.processor)
        if self.decode_on_device and not on_device:
            log.info("%s: decodes its images on the CPU (it cannot take them decoded on the device)", type(task).__name__)
        dataset = _RowDataset(rows, task, bundle.processor, bundle.info, self.dataset_root, self.settings.max_pixels,
                              on_device)
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
        batches = self._device_batches(loader, task, bundle, rows) if on_device else self._host_batches(loader)
        with torch.inference_mode(), bar:
            for good, inputs, failures, dropped in batches:
                bar.update(len(good) + len(failures) - len(dropped))
                for index, failure in failures:
                    errors.setdefault(rows[index].sample_idx, []).append(failure.reason)
                if inputs is None:
                    continue
                batch_rows = [rows[i] for i in good]
                outputs = task.forward(bundle, inputs, batch_rows)
                if len(outputs) != len(batch_rows):
                    raise RuntimeError(f"{type(task).__name__}.forward returned {len(outputs)} outputs for {len(batch_rows)} rows")
                for index, row, output in zip(good, batch_rows, outputs):
                    if index not in dropped:
                        results[row.sample_idx][row.key] = output
        for sample_idx, reasons in errors.items():
            results[sample_idx] = Failure("; ".join(reasons))
        log.info("%s: %d rows from %d samples, %d samples failed", type(task).__name__, len(rows), len(samples), len(errors))
        return results

    def _host_batches(self, loader: Iterable[Batch]) -> Iterator[tuple[list[int], dict[str, Any] | None, list, set[int]]]:
        """The loader's batches with their inputs moved to the device; no row's output is dropped."""
        for good, inputs, failures, _ in loader:
            yield good, self._to_device(inputs) if inputs is not None else None, failures, set()

    def _device_batches(self, loader: Iterable[Batch], task: InferenceTask, bundle: ModelBundle,
                        rows: list[Row]) -> Iterator[tuple[list[int], dict[str, Any] | None, list, set[int]]]:
        """The loader's batches with their images decoded on the device, each decoded while the model runs the one before.

        A helper thread (on its own CUDA stream) decodes batch k+1 while this
        thread runs batch k. A row whose image fails to decode gets a black
        placeholder so the batch keeps its shape; its failure is reported and
        its index is in the returned set, whose outputs the caller drops.
        """
        stream = torch.cuda.Stream(self.device) if self.device.startswith("cuda") else None

        def finish(batch: Batch):
            good, inputs, failures, raws = batch
            if inputs is None:
                return good, None, failures, set(), None
            with torch.inference_mode(), torch.cuda.stream(stream) if stream is not None else nullcontext():
                images, reasons = decode_batch(raws or [None] * len(good), self.device)
                inputs = self._completed(task, bundle, inputs, images, reasons, [rows[i] for i in good])
                dropped = {good[position] for position in reasons}
                failures = failures + [(good[position], Failure(reason)) for position, reason in reasons.items()]
                if len(dropped) == len(good):
                    return [], None, failures, set(), None
                ready = torch.cuda.Event() if stream is not None else None
                if ready is not None:
                    ready.record(stream)
            return good, inputs, failures, dropped, ready

        def handed_over(done):
            good, inputs, failures, dropped, ready = done
            if ready is not None:  # the model's stream waits for the decode, and the allocator for the model
                current = torch.cuda.current_stream(self.device)
                current.wait_event(ready)
                for value in inputs.values():
                    if isinstance(value, torch.Tensor) and value.is_cuda:
                        value.record_stream(current)
            return good, inputs, failures, dropped

        with ThreadPoolExecutor(1, thread_name_prefix="device-decode") as pool:
            pending = None
            for batch in loader:
                upcoming = pool.submit(finish, batch)
                if pending is not None:
                    yield handed_over(pending.result())
                pending = upcoming
            if pending is not None:
                yield handed_over(pending.result())

    def _completed(self, task: InferenceTask, bundle: ModelBundle, inputs: dict[str, Any], images: list[Any],
                   reasons: dict[int, str], batch_rows: list[Row]) -> dict[str, Any] | None:
        """``task.device_inputs`` on the device with failed images (``reasons``) replaced by a black placeholder.

        If the batch's preprocessing fails, each image is tried alone (the
        others black) and the culprits join ``reasons``, as on the CPU path.
        """
        black = torch.zeros(3, PLACEHOLDER_SIDE, PLACEHOLDER_SIDE, dtype=torch.uint8, device=self.device)

        def attempt(own: set[int] | None = None) -> dict[str, Any]:
            chosen = [image if position not in reasons and (own is None or position in own) else black
                      for position, image in enumerate(images)]
            return task.device_inputs(bundle, inputs, chosen, batch_rows)

        if len(reasons) == len(images):
            return None
        try:
            return self._to_device(attempt())
        except PREPROCESSING_ERRORS:
            for position, row in enumerate(batch_rows):
                if position in reasons:
                    continue
                try:
                    attempt({position})
                except PREPROCESSING_ERRORS as exc:
                    reasons[position] = f"{row.image}: preprocessing failed ({type(exc).__name__}: {exc})"
            return self._to_device(attempt()) if len(reasons) < len(images) else None

    def _to_device(self, inputs: dict[str, Any]) -> dict[str, Any]:
        moved = {}
        for name, value in inputs.items():
            if isinstance(value, torch.Tensor):
                value = value.to(self.device, non_blocking=True)
                if value.is_floating_point():
                    value = value.to(self.dtype)
            moved[name] = value
        return moved
