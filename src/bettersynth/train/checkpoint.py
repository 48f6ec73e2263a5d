"""Resumable training checkpoints: trainable weights, optimizer, schedule position, RNG, data position.

Why: GPU pools preempt. A checkpoint holds everything the loop's next step
depends on, so a killed run resumes where it stopped and ends with the same
weights as an uninterrupted one (bit-exact on CPU). Frozen weights are not
saved: they are re-read from the stage's starting model. A checkpoint is
written into a temporary folder and renamed into place, so a kill during the
save leaves the previous checkpoint intact and never a half-written one.

Layout of ``<checkpoint_dir>/step-000012/``::

    trainable.safetensors  # the parameters with requires_grad, by name
    optimizer.pt           # optimizer.state_dict() (AdamW moments and step counts)
    rng.pt                 # torch (CPU and CUDA) and Python RNG states
    trainer_state.json     # step, losses, samples seen, schedule and data position, the config

Example::

    saved = save_checkpoint(ckpt_dir, state, model, optimizer, keep=2)
    state = load_checkpoint(latest_checkpoint(ckpt_dir), model, optimizer)
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import pickle
import random
import re
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

logger = logging.getLogger(__name__)

CHECKPOINT_RE = re.compile(r"^step-(\d{6,})$")
WEIGHTS_FILE, OPTIMIZER_FILE, RNG_FILE, STATE_FILE = "trainable.safetensors", "optimizer.pt", "rng.pt", "trainer_state.json"

# Settings that may change between a run and its resumption without changing the math.
RESUMABLE_CHANGES = frozenset({"num_workers", "checkpoint_every", "keep_checkpoints"})


@dataclass
class TrainerState:
    """Where the loop stands after ``step`` optimizer steps."""

    step: int  # optimizer steps done; the data position is plan_steps(...)[step:]
    total_steps: int  # length of the plan (the schedule's horizon)
    warmup_steps: int  # the schedule's warmup length
    losses: list[float] = field(default_factory=list)  # loss of every step so far
    samples_seen: int = 0  # examples consumed so far
    config: dict[str, Any] = field(default_factory=dict)  # StageConfig.model_dump() of the run


def checkpoint_path(checkpoint_dir: Path, step: int) -> Path:
    return Path(checkpoint_dir) / f"step-{step:06d}"


def list_checkpoints(checkpoint_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary folders of interrupted saves are ignored)."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and CHECKPOINT_RE.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(CHECKPOINT_RE.match(p.name).group(1)))


def latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    found = list_checkpoints(checkpoint_dir)
    return found[-1] if found else None


class OptimizerSaver(Protocol):
    """Writes and reads the optimizer's part of a checkpoint (``train.engine``'s engines are ones)."""

    def save(self, folder: Path, info: Any) -> None: ...

    def load(self, folder: Path) -> None: ...


def save_checkpoint(
    checkpoint_dir: Path, state: TrainerState, model: nn.Module, optimizer: torch.optim.Optimizer | OptimizerSaver,
    keep: int = 1, info: Any = None,
) -> Path:
    """Write the checkpoint of ``state.step`` atomically; keep the newest ``keep`` checkpoints.

    In a process group every rank calls this (``info``: ``train.engine.DistInfo``);
    rank 0 writes the replicated parts, each rank its share of the optimizer
    where it is sharded (DeepSpeed ZeRO), and rank 0 publishes the folder.
    """
    from bettersynth.train.engine import DistInfo, barrier

    info = info or DistInfo()
    final = checkpoint_path(checkpoint_dir, state.step)
    tmp = final.with_name(f".{final.name}.tmp")
    if info.is_main:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    barrier(info)
    with _writing(final, tmp):
        if isinstance(optimizer, torch.optim.Optimizer):
            if info.is_main:
                torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
        else:
            optimizer.save(tmp, info)
    barrier(info)
    if info.is_main:
        trainable = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
        with _writing(final, tmp):
            save_file(trainable, str(tmp / WEIGHTS_FILE), metadata={"step": str(state.step)})
            torch.save(_rng_state(), tmp / RNG_FILE)
            (tmp / STATE_FILE).write_text(json.dumps(asdict(state), indent=2), encoding="utf-8")
        for path in tmp.rglob("*"):
            _fsync(path)
        if final.exists():  # a previous attempt got this far: replace it with the identical state
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync(final.parent)
        for old in list_checkpoints(checkpoint_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        logger.info("checkpoint at step %d: %s", state.step, final)
    barrier(info)
    return final


class DamagedCheckpoint(ValueError):
    """A checkpoint's file cannot be read back whole (a bad disk, a copy cut short): it is refused, never loaded."""

    def __init__(self, folder: Path, file: str, error: BaseException):
        first = " ".join(str(error).split())[:200]
        super().__init__(f"checkpoint {folder}: {file} is damaged ({type(error).__name__}: {first}); "
                         f"remove {folder} to resume from the checkpoint before it")


def _read(folder: Path, file: str, read: Any) -> Any:
    try:
        return read(folder / file)
    except (OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError, SafetensorError) as exc:
        raise DamagedCheckpoint(folder, file, exc) from exc


def _state(folder: Path) -> dict[str, Any]:
    return _read(folder, STATE_FILE, lambda p: json.loads(p.read_text(encoding="utf-8")))


FULL_BELOW = 1 << 20  # bytes free under which a failed write is reported as a full disk (torch.save says "iostream error")


@contextlib.contextmanager
def _writing(final: Path, tmp: Path) -> Iterator[None]:
    """Writes into ``tmp``; a failure removes the partial folder and, on a full disk, says so naming ``final``."""
    try:
        yield
    except (OSError, RuntimeError, SafetensorError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)  # give back the space; the previous checkpoint stays
        free = shutil.disk_usage(tmp.parent).free if tmp.parent.exists() else 0
        if getattr(exc, "errno", None) == errno.ENOSPC or "os error 28" in str(exc) or free < FULL_BELOW:
            raise OSError(errno.ENOSPC, f"checkpoint {final} not written: no space left on device "
                          f"({free} bytes free in {tmp.parent}); the previous checkpoint is kept, free space "
                          "and rerun to resume") from exc
        raise


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | OptimizerSaver) -> TrainerState:
    """Restore trainable weights, optimizer and RNG from ``path``; return the loop's state.

    A damaged file raises ``DamagedCheckpoint`` naming it, and the loop does not
    start from it (the weights and RNG are read whole before anything is restored).
    """
    path = Path(path)
    state = TrainerState(**_state(path))
    saved = _read(path, WEIGHTS_FILE, lambda p: load_file(str(p)))
    rng = _read(path, RNG_FILE, lambda p: torch.load(p, map_location="cpu", weights_only=True))  # never unpickle code
    moments = (_read(path, OPTIMIZER_FILE, lambda p: torch.load(p, map_location="cpu", weights_only=True))
               if isinstance(optimizer, torch.optim.Optimizer) else None)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if saved.keys() != trainable.keys():
        missing, extra = sorted(trainable.keys() - saved.keys()), sorted(saved.keys() - trainable.keys())
        raise ValueError(f"{path / WEIGHTS_FILE}: trainable parameters differ (missing {missing[:5]}, unexpected {extra[:5]})")
    with torch.no_grad():
        for name, param in trainable.items():
            param.copy_(saved[name])
    if moments is not None:
        optimizer.load_state_dict(moments)
    else:  # an engine reads its own part (sharded under DeepSpeed); a damaged one fails the resume all the same
        _read(path, OPTIMIZER_FILE, lambda _: optimizer.load(path))
    _set_rng_state(rng)
    return state


def check_resumable(path: Path, config: dict[str, Any], total_steps: int) -> int:
    """The step to resume at; refuses a checkpoint written under different settings (naming them)."""
    state = _state(Path(path))
    saved = state["config"]
    changed = sorted(k for k in saved.keys() | config.keys() if k not in RESUMABLE_CHANGES and saved.get(k) != config.get(k))
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {config.get(k)!r}" for k in changed)
        raise ValueError(f"checkpoint {path} was written with other settings ({details}); use a fresh checkpoint_dir")
    if state["total_steps"] != total_steps:
        raise ValueError(f"checkpoint {path} planned {state['total_steps']} steps, this run {total_steps}: the data changed")
    return int(state["step"])


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync(path: Path) -> None:
    """Flush a file or folder to disk, so that the rename publishes complete data."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
