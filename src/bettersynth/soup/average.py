"""Weighted average of N checkpoints, streamed tensor by tensor.

Why: soups of multi-GB VLM checkpoints must run on the machine that holds
them, so peak memory is one tensor per ingredient plus an fp32 accumulator
(mergekit's approach), never N full models (WePOINTS' approach). Output goes to a
hidden staging directory renamed into place at the end, so a refused soup
leaves nothing behind.

Example::

    average_checkpoints([run_a, run_b, run_c], [1, 1, 2], out / "soup")
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch

from bettersynth.soup.checkpoint import SINGLE_FILE, Checkpoint, TensorInfo, check_compatible
from bettersynth.soup.mapped import MappedCheckpoint
from bettersynth.soup.writer import ShardWriter, plan_shards, write_index

log = logging.getLogger(__name__)

DEFAULT_MAX_SHARD_BYTES = 5 * 10**9
# Elements per piece of a tensor: 4 MiB of fp32 accumulator, which stays in a core's cache.
CHUNK_ELEMENTS = 1 << 20


def normalise_weights(weights: Sequence[float] | None, count: int) -> list[float]:
    """Uniform when ``None``; otherwise non-negative, finite, not all zero, scaled to sum to 1."""
    if weights is None:
        return [1.0 / count] * count
    weights = [float(w) for w in weights]
    if len(weights) != count:
        raise ValueError(f"weights: got {len(weights)} for {count} checkpoints")
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise ValueError(f"weights: must be finite and non-negative, got {weights}")
    total = sum(weights)
    if total <= 0:
        raise ValueError("weights: at least one must be positive")
    return [w / total for w in weights]


def average_checkpoints(
    paths: Sequence[str | Path],
    weights: Sequence[float] | None,
    out_dir: str | Path,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> Path:
    """Write sum_i w_i * theta_i (fp32 accumulation, cast back) to ``out_dir``; return it.

    Floating tensors are averaged; other tensors (int position ids, bool masks)
    must be identical across ingredients and are copied. Ingredients with weight
    0 are checked for compatibility but never read. Non-weight files come from
    the first checkpoint. The key set is kept as is, so tied weights that
    ``save_pretrained`` stored once stay stored once and tie again on load.
    """
    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    checkpoints = [Checkpoint.open(path) for path in paths]
    check_compatible(checkpoints)
    weights = normalise_weights(weights, len(checkpoints))
    used = [(ckpt, w) for ckpt, w in zip(checkpoints, weights) if w > 0]
    shards = plan_shards(checkpoints[0].tensors, max_shard_bytes)
    log.info("averaging %d checkpoints into %s (%d shard(s))", len(used), out_dir, len(shards))
    with ExitStack() as maps, staged(out_dir) as staging:
        mixer = _Mixer([(maps.enter_context(MappedCheckpoint(ckpt)), w) for ckpt, w in used])
        for shard in shards:
            with ShardWriter(staging / shard.file, shard.tensors) as writer:
                for name, info in shard.tensors.items():
                    writer.write_parts(name, mixer.parts(name, info))
        if len(shards) > 1 or shards[0].file != SINGLE_FILE:
            write_index(staging, shards)
        _copy_extra_files(checkpoints[0], staging)
    return out_dir


def copy_checkpoint(path: str | Path, out_dir: str | Path) -> Path:
    """Copy one checkpoint's weights and non-weight files (the 'maximum' soup), staged like an average."""
    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    checkpoint = Checkpoint.open(path)
    with staged(out_dir) as staging:
        for file in checkpoint.weight_files:
            shutil.copy2(checkpoint.path / file, staging / file)
        _copy_extra_files(checkpoint, staging)
    return out_dir


@contextmanager
def staged(out_dir: Path) -> Iterator[Path]:
    """Yield a hidden sibling directory, renamed to ``out_dir`` on success and deleted on failure."""
    check_out_dir(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        yield staging
        publish(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish(staging: Path, out_dir: Path) -> None:
    """Rename a finished directory into place (same filesystem, so the switch is atomic)."""
    check_out_dir(out_dir)
    if out_dir.exists():
        out_dir.rmdir()
    os.chmod(staging, 0o755)
    os.rename(staging, out_dir)


def check_out_dir(out_dir: Path) -> None:
    """Refuse to write over anything: ``out_dir`` must be missing or an empty directory."""
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ValueError(f"out_dir: {out_dir} already exists and is not empty")


class _Mixer:
    """Weighted sums of one tensor at a time, in pieces of at most ``CHUNK_ELEMENTS``.

    Each piece is added straight from the ingredients' mapped pages into an
    accumulator reused for every other piece (small enough to stay in cache),
    cast into a reused output buffer and handed to the writer: no per-tensor
    allocation, and each ingredient byte is read once.
    """

    def __init__(self, used: list[tuple[MappedCheckpoint, float]]) -> None:
        self.used = used
        self._buffers: dict[tuple[torch.dtype, int], torch.Tensor] = {}
        self._slot = 0  # two sets of buffers, alternated: the writer is still writing the last part

    def _buffer(self, dtype: torch.dtype, count: int) -> torch.Tensor:
        buffer = self._buffers.get((dtype, self._slot))
        if buffer is None:
            buffer = self._buffers[dtype, self._slot] = torch.empty(CHUNK_ELEMENTS, dtype=dtype)
        return buffer[:count]

    def parts(self, name: str, info: TensorInfo) -> Iterator[torch.Tensor]:
        numel = info.nbytes // info.dtype.itemsize
        for lo in range(0, numel, CHUNK_ELEMENTS):
            hi = min(lo + CHUNK_ELEMENTS, numel)
            yield self._mix(name, info, lo, hi) if info.dtype.is_floating_point else self._same(name, info, lo, hi)
            self._slot ^= 1

    def _mix(self, name: str, info: TensorInfo, lo: int, hi: int) -> torch.Tensor:
        accumulate = torch.promote_types(info.dtype, torch.float32)
        total = self._buffer(accumulate, hi - lo)
        (first, first_weight), rest = self.used[0], self.used[1:]
        if accumulate == info.dtype:
            torch.mul(first.view(name, lo, hi), first_weight, out=total)
        else:  # cast first: bf16 * w would round in bf16
            total.copy_(first.view(name, lo, hi)).mul_(first_weight)
        first.release(name, lo, hi)  # one ingredient's piece mapped at a time, whatever N is
        for mapped, weight in rest:
            total.add_(mapped.view(name, lo, hi), alpha=weight)
            mapped.release(name, lo, hi)
        if accumulate == info.dtype:
            return total
        return self._buffer(info.dtype, hi - lo).copy_(total)

    def _same(self, name: str, info: TensorInfo, lo: int, hi: int) -> torch.Tensor:
        (first, _), rest = self.used[0], self.used[1:]
        part = self._buffer(info.dtype, hi - lo).copy_(first.view(name, lo, hi))
        first.release(name, lo, hi)
        for mapped, _ in rest:
            same = torch.equal(part, mapped.view(name, lo, hi))
            mapped.release(name, lo, hi)
            if not same:
                raise ValueError(
                    f"non-floating tensor {name!r} ({info.dtype}) differs between "
                    f"{first.checkpoint.path} and {mapped.checkpoint.path}; it can be copied but not averaged"
                )
        return part


def _copy_extra_files(checkpoint: Checkpoint, staging: Path) -> None:
    for source in checkpoint.extra_files():
        shutil.copy2(source, staging / source.name)
