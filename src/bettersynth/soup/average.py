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
from contextlib import contextmanager
from pathlib import Path

import torch

from bettersynth.soup.checkpoint import SINGLE_FILE, Checkpoint, TensorInfo, check_compatible
from bettersynth.soup.writer import ShardWriter, plan_shards, write_index

log = logging.getLogger(__name__)

DEFAULT_MAX_SHARD_BYTES = 5 * 10**9


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
    with staged(out_dir) as staging:
        for shard in shards:
            with ShardWriter(staging / shard.file, shard.tensors) as writer:
                for name, info in shard.tensors.items():
                    writer.write(name, _mix(name, info, used))
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


def _mix(name: str, info: TensorInfo, used: list[tuple[Checkpoint, float]]) -> torch.Tensor:
    if not info.dtype.is_floating_point:
        first_ckpt, _ = used[0]
        first = first_ckpt.read(name)
        for ckpt, _ in used[1:]:
            if not torch.equal(first, ckpt.read(name)):
                raise ValueError(
                    f"non-floating tensor {name!r} ({info.dtype}) differs between "
                    f"{first_ckpt.path} and {ckpt.path}; it can be copied but not averaged"
                )
        return first
    accumulate = torch.promote_types(info.dtype, torch.float32)
    (first_ckpt, first_weight), rest = used[0], used[1:]
    total = first_ckpt.read(name).to(accumulate).mul_(first_weight)
    for ckpt, weight in rest:
        total.add_(ckpt.read(name).to(accumulate).mul_(weight))
    return total.to(info.dtype)


def _copy_extra_files(checkpoint: Checkpoint, staging: Path) -> None:
    for source in checkpoint.extra_files():
        shutil.copy2(source, staging / source.name)
