"""Open a Hugging Face checkpoint directory lazily: tensor names, shapes and dtypes, no weights.

Why: a soup of N checkpoints must be checked (same keys, same shapes) before a
single byte is written, and must never hold N full models in memory. Only the
safetensors headers are read here; ``soup.mapped`` maps the weights when they are averaged.

Example::

    ckpts = [Checkpoint.open(p) for p in paths]
    check_compatible(ckpts)          # ValueError naming the first offending key
    ckpts[0].tensors["model.embed_tokens.weight"].shape
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# Files that hold weights or trainer state: never copied as "metadata" next to a soup.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".msgpack", ".h5", ".index.json")

SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U64": torch.uint64,
    "U32": torch.uint32,
    "U16": torch.uint16,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
DTYPE_NAMES: dict[torch.dtype, str] = {dtype: name for name, dtype in SAFETENSORS_DTYPES.items()}


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives and what it looks like, read from the safetensors header."""

    file: str  # file name inside the checkpoint directory
    shape: tuple[int, ...]
    dtype: torch.dtype
    start: int = 0  # byte offset of the data in the file (header included)

    @property
    def nbytes(self) -> int:
        numel = 1
        for size in self.shape:
            numel *= size
        return numel * self.dtype.itemsize


@dataclass(frozen=True)
class Checkpoint:
    """A ``save_pretrained`` directory, single-file or sharded, opened header-only."""

    path: Path
    tensors: dict[str, TensorInfo]  # in file order, then header order
    weight_files: tuple[str, ...]  # safetensors files plus the index, if any

    @classmethod
    def open(cls, path: str | Path) -> Checkpoint:
        path = Path(path)
        if not path.is_dir():
            raise ValueError(f"checkpoint {path} is not a directory")
        if (path / INDEX_FILE).is_file():
            files = _files_from_index(path)
            weight_files = (*files, INDEX_FILE)
        elif (path / SINGLE_FILE).is_file():
            files = [SINGLE_FILE]
            weight_files = (SINGLE_FILE,)
        else:
            raise ValueError(f"checkpoint {path} has neither {SINGLE_FILE} nor {INDEX_FILE}")
        tensors: dict[str, TensorInfo] = {}
        for file in files:
            data_start, offsets = _data_offsets(path / file)
            try:
                handle = safe_open(path / file, framework="pt")
            except Exception as exc:  # safetensors' own error type names neither file nor checkpoint
                raise ValueError(f"checkpoint {path}: {file} is not a complete safetensors file ({exc})") from None
            with handle:
                for name in handle.keys():
                    if name in tensors:
                        raise ValueError(f"checkpoint {path}: tensor {name!r} is stored twice")
                    view = handle.get_slice(name)
                    dtype_name = view.get_dtype()
                    if dtype_name not in SAFETENSORS_DTYPES:
                        raise ValueError(f"checkpoint {path}: tensor {name!r} has unsupported dtype {dtype_name}")
                    shape = tuple(view.get_shape())
                    tensors[name] = TensorInfo(file, shape, SAFETENSORS_DTYPES[dtype_name], data_start + offsets[name])
        if (path / INDEX_FILE).is_file():
            _check_index_matches(path, tensors)
        return cls(path, tensors, weight_files)

    def extra_files(self) -> list[Path]:
        """Top-level non-weight files (config, generation config, tokenizer, processor, chat template)."""
        return sorted(
            entry
            for entry in self.path.iterdir()
            if entry.is_file() and not entry.name.endswith(WEIGHT_SUFFIXES)
        )


def check_compatible(checkpoints: list[Checkpoint]) -> None:
    """Refuse ingredients whose key sets, shapes or dtypes differ from the first one's.

    Keys are compared in sorted order so the error names the same key every run.
    """
    if not checkpoints:
        raise ValueError("paths: need at least one checkpoint")
    reference = checkpoints[0]
    for other in checkpoints[1:]:
        missing = set(reference.tensors) - set(other.tensors)
        extra = set(other.tensors) - set(reference.tensors)
        if missing or extra:
            first = min(missing | extra)
            verb, other_verb = ("lacks", "has") if first in missing else ("has", "lacks")
            raise ValueError(
                f"key sets differ: checkpoint {other.path} {verb} tensor {first!r} "
                f"that {reference.path} {other_verb}"
            )
        for name in sorted(reference.tensors):
            mine, theirs = reference.tensors[name], other.tensors[name]
            if mine.shape != theirs.shape:
                raise ValueError(
                    f"tensor {name!r} has shape {list(theirs.shape)} in checkpoint {other.path} "
                    f"but {list(mine.shape)} in {reference.path}"
                )
            if mine.dtype != theirs.dtype:
                raise ValueError(
                    f"tensor {name!r} has dtype {theirs.dtype} in checkpoint {other.path} "
                    f"but {mine.dtype} in {reference.path}"
                )


def _data_offsets(file: Path) -> tuple[int, dict[str, int]]:
    """Where the data block starts and each tensor's offset in it, from the safetensors header."""
    with open(file, "rb") as handle:
        (header_size,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(header_size))
    header.pop("__metadata__", None)
    return 8 + header_size, {name: entry["data_offsets"][0] for name, entry in header.items()}


def _files_from_index(path: Path) -> list[str]:
    try:
        weight_map = json.loads((path / INDEX_FILE).read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"checkpoint {path}: unreadable {INDEX_FILE} ({exc})") from None
    files = list(dict.fromkeys(sorted(weight_map.values())))
    for file in files:
        if not (path / file).is_file():
            raise ValueError(f"checkpoint {path}: {INDEX_FILE} names missing shard {file}")
    return files


def _check_index_matches(path: Path, tensors: dict[str, TensorInfo]) -> None:
    weight_map = json.loads((path / INDEX_FILE).read_text())["weight_map"]
    for name, info in tensors.items():
        if weight_map.get(name) != info.file:
            raise ValueError(f"checkpoint {path}: {INDEX_FILE} puts {name!r} in {weight_map.get(name)}, found in {info.file}")
    for name in weight_map.keys() - tensors.keys():
        raise ValueError(f"checkpoint {path}: {INDEX_FILE} lists {name!r} but no shard holds it")
