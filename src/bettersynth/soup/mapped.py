"""Ingredient weights as zero-copy views of their memory-mapped safetensors files.

Why: a soup is memory-bound, so the cheapest read is none. A copy-on-write map
(never written) lets the accumulator add straight from the page cache instead
of copying each tensor out first; pages are prefaulted in bulk before use and
dropped from this process's RSS after, so the peak stays one window per
ingredient however big the checkpoints are (the page cache keeps the data).

Example::

    with MappedCheckpoint(ckpt) as mapped:
        part = mapped.view("lm_head.weight", 0, 1 << 20)   # the first 1M elements, flat
        mapped.release("lm_head.weight")
"""

from __future__ import annotations

import mmap
import os
import sys
import warnings
from types import TracebackType

import torch

from bettersynth.soup.checkpoint import Checkpoint

PAGE = mmap.PAGESIZE
FAULT_AROUND = 1 << 20  # more than Linux's fault-around window (64 KiB by default, a sysctl)
# Linux >= 5.14; Python's mmap module names it only from 3.13 on.
MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22 if sys.platform == "linux" else None)


class MappedCheckpoint:
    """Every weight file of one checkpoint mapped read-only-in-practice (ACCESS_COPY, never written)."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        if sys.byteorder != "little":
            raise ValueError("safetensors is little-endian; mapping it on a big-endian host is not supported")
        self.checkpoint = checkpoint
        self._maps: dict[str, mmap.mmap] = {}
        self._bytes: dict[str, torch.Tensor] = {}
        self._populate = MADV_POPULATE_READ is not None
        try:
            for file in dict.fromkeys(info.file for info in checkpoint.tensors.values()):
                self._open(file)
        except BaseException:
            self.close()
            raise

    def _open(self, file: str) -> None:
        path = self.checkpoint.path / file
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            mapped = mmap.mmap(handle.fileno(), size, access=mmap.ACCESS_COPY)
        self._maps[file] = mapped
        with warnings.catch_warnings():  # ACCESS_COPY is writable, but say nothing either way
            warnings.simplefilter("ignore")
            self._bytes[file] = torch.frombuffer(mapped, dtype=torch.uint8)
        for name, info in self.checkpoint.tensors.items():
            if info.file == file and info.start + info.nbytes > size:
                self.close()
                raise ValueError(f"checkpoint {self.checkpoint.path}: {file} is truncated inside tensor {name!r}")

    def view(self, name: str, lo: int, hi: int) -> torch.Tensor:
        """Elements ``lo:hi`` of tensor ``name``, flat, as a view of the map (a copy if misaligned)."""
        info = self.checkpoint.tensors[name]
        size = info.dtype.itemsize
        start, stop = info.start + lo * size, info.start + hi * size
        self._advise(info.file, start, stop, MADV_POPULATE_READ if self._populate else None)
        raw = self._bytes[info.file][start:stop]
        if start % size:  # a view must be aligned to its element size; safetensors only aligns the data block
            raw = raw.clone()
        return raw.view(info.dtype)

    def release(self, name: str, lo: int = 0, hi: int | None = None) -> None:
        """Drop the pages of elements ``lo:hi`` of ``name`` from this process's RSS (the page cache keeps them).

        The range is widened by ``FAULT_AROUND`` on both sides: the kernel maps neighbouring cached pages
        along with the ones asked for, and those would otherwise stay in RSS, a little more per piece.
        """
        info = self.checkpoint.tensors[name]
        size = info.dtype.itemsize
        start = max(0, info.start + lo * size - FAULT_AROUND)
        stop = min(len(self._maps[info.file]), info.start + (info.nbytes if hi is None else hi * size) + FAULT_AROUND)
        self._advise(info.file, start, stop, mmap.MADV_DONTNEED)

    def _advise(self, file: str, start: int, stop: int, option: int | None) -> None:
        if option is None or stop <= start:
            return
        first = start - start % PAGE
        try:
            self._maps[file].madvise(option, first, stop - first)
        except OSError:
            if option != MADV_POPULATE_READ:
                raise
            self._populate = False  # an older kernel: plain page faults from now on, same result

    def close(self) -> None:
        """Forget the maps; each is unmapped once no view of it is left (closing it under a view would crash)."""
        self._bytes.clear()
        self._maps.clear()

    def __enter__(self) -> MappedCheckpoint:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

