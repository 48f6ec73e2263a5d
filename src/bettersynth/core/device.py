"""Where models run and in which precision: the one resolver every layer uses.

Why: the same recipe runs on a laptop (CPU, fp32) and on a GPU pool (bf16);
the choice is made once here instead of in every operator, trainer and
evaluator. Settings keep the spellings their YAML files use (``float32`` in
recipes, ``fp32`` in training configs); both name the same dtype.
"""

from __future__ import annotations

from typing import Literal

import torch

DeviceSetting = Literal["auto", "cpu", "cuda"]
DtypeSetting = Literal["auto", "float32", "bfloat16", "float16"]

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}


def resolve_device(setting: str | torch.device | None = "auto", local_rank: int | None = None) -> str:
    """``auto`` (or None) picks CUDA when it is available, else CPU.

    ``local_rank`` names this process's GPU under torchrun (``cuda:<local_rank>``).
    """
    if setting is None or setting == "auto":
        if not torch.cuda.is_available():
            return "cpu"
        return "cuda" if local_rank is None else f"cuda:{local_rank}"
    name = str(setting)
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device: {name!r} requested but no CUDA device is available")
    return name


def resolve_dtype(setting: str, device: str | torch.device) -> torch.dtype:
    """``auto`` is bf16 on CUDA (half the memory, no overflow) and fp32 elsewhere."""
    if setting == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    try:
        return _DTYPES[setting]
    except KeyError:
        raise ValueError(f"dtype: {setting!r} is not one of auto, {', '.join(_DTYPES)}") from None
