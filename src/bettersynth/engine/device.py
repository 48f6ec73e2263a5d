"""Where models run and in which precision.

Why: the same recipe runs on a laptop (CPU, fp32) and on a GPU pool (bf16);
the choice is made once here instead of in every operator.
"""

from __future__ import annotations

from typing import Literal

import torch

DeviceSetting = Literal["auto", "cpu", "cuda"]
DtypeSetting = Literal["auto", "float32", "bfloat16", "float16"]


def resolve_device(setting: DeviceSetting = "auto") -> str:
    """``auto`` picks CUDA when it is available, else CPU."""
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' requested but no CUDA device is available")
    return setting


def resolve_dtype(setting: DtypeSetting, device: str) -> torch.dtype:
    """``auto`` is bf16 on CUDA (half the memory, no overflow) and fp32 on CPU."""
    if setting == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, setting)
