"""Write safetensors shards tensor by tensor, with the header planned up front.

Why: every output tensor's shape and dtype are known before any is computed, so
the header can be written first and each tensor appended as soon as it is
averaged; no shard is ever held in memory (``safetensors.torch.save_file``
needs the whole dict, plus a byte copy of it).

Example::

    shards = plan_shards(layout, max_shard_bytes=2 * 10**9)
    with ShardWriter(out / shards[0].file, shards[0].tensors) as writer:
        for name in shards[0].tensors:
            writer.write(name, compute(name))
"""

from __future__ import annotations

import json
import struct
import sys
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import torch

from bettersynth.soup.checkpoint import DTYPE_NAMES, INDEX_FILE, SINGLE_FILE, TensorInfo


@dataclass(frozen=True)
class Shard:
    """One output file and the tensors it holds, in write order."""

    file: str
    tensors: dict[str, TensorInfo]


def plan_shards(layout: dict[str, TensorInfo], max_shard_bytes: int) -> list[Shard]:
    """Pack tensors in order into files of at most ``max_shard_bytes`` (a bigger tensor gets its own).

    A model that fits in one shard is written as ``model.safetensors``, as
    ``save_pretrained`` does; otherwise ``model-0000i-of-0000n.safetensors``.
    """
    if max_shard_bytes <= 0:
        raise ValueError(f"max_shard_bytes: must be positive, got {max_shard_bytes}")
    groups: list[dict[str, TensorInfo]] = [{}]
    size = 0
    for name, info in layout.items():
        if groups[-1] and size + info.nbytes > max_shard_bytes:
            groups.append({})
            size = 0
        groups[-1][name] = info
        size += info.nbytes
    if sum(info.nbytes for info in layout.values()) <= max_shard_bytes:
        return [Shard(SINGLE_FILE, groups[0])]
    count = len(groups)
    return [Shard(f"model-{i:05d}-of-{count:05d}.safetensors", group) for i, group in enumerate(groups, start=1)]


def write_index(out_dir: Path, shards: list[Shard]) -> None:
    """Write ``model.safetensors.index.json`` in the layout ``from_pretrained`` reads."""
    weight_map = {name: shard.file for shard in shards for name in shard.tensors}
    total = sum(info.nbytes for shard in shards for info in shard.tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out_dir / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")


class ShardWriter:
    """Streams one safetensors file: header first, then each tensor's bytes in planned order.

    Writes run on one background thread, so the next tensor is computed while
    the last one goes to the page cache (a soup spends a third of its time writing).
    """

    def __init__(self, path: Path, tensors: dict[str, TensorInfo]) -> None:
        if sys.byteorder != "little":
            raise ValueError("safetensors is little-endian; writing from a big-endian host is not supported")
        self._expected = iter(tensors.items())
        self._handle = open(path, "wb")
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer")
        self._pending: Future[int] | None = None
        header: dict[str, object] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for name, info in tensors.items():
            header[name] = {
                "dtype": DTYPE_NAMES[info.dtype],
                "shape": list(info.shape),
                "data_offsets": [offset, offset + info.nbytes],
            }
            offset += info.nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # keep the data 8-byte aligned, as safetensors does
        self._handle.write(struct.pack("<Q", len(raw)))
        self._handle.write(raw)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        info = self._next(name)
        if tensor.dtype != info.dtype or tuple(tensor.shape) != info.shape:
            raise ValueError(
                f"tensor {name!r} is {tensor.dtype} {list(tensor.shape)}, planned {info.dtype} {list(info.shape)}"
            )
        self._put(tensor)
        self._wait()

    def write_parts(self, name: str, parts: Iterable[torch.Tensor]) -> None:
        """Write tensor ``name`` as consecutive flat pieces (so it is never whole in memory).

        Each part is written by a background thread while the next one is made, so
        a producer must not reuse a part's memory for the part right after it
        (alternate two buffers); it is free again once the one after is handed over.
        """
        info = self._next(name)
        written = 0
        for part in parts:
            if part.dtype != info.dtype:
                raise ValueError(f"tensor {name!r}: a part is {part.dtype}, planned {info.dtype}")
            written += part.numel() * part.dtype.itemsize
            self._put(part)
        if written != info.nbytes:
            raise ValueError(f"tensor {name!r}: wrote {written} bytes, planned {info.nbytes}")

    def _next(self, name: str) -> TensorInfo:
        expected_name, info = next(self._expected, (None, None))
        if name != expected_name or info is None:
            raise ValueError(f"tensor {name!r} written out of planned order (expected {expected_name!r})")
        return info

    def _put(self, tensor: torch.Tensor) -> None:
        data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        self._wait()
        self._pending = self._thread.submit(self._handle.write, memoryview(data))

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        left = next(self._expected, None)
        try:
            self._wait()
        finally:
            self._thread.shutdown()
            self._handle.close()
        if left is not None:
            raise ValueError(f"shard closed before tensor {left[0]!r} was written")

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:
            self._thread.shutdown()  # waits for a write in flight, so the handle closes after it
            self._handle.close()
