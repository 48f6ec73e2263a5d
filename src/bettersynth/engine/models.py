"""Model loaders and the per-process model cache.

Why: Data-Juicer loads one model copy per op per process; here a model is
loaded once per (loader, path, device, dtype) and shared by every op and
batch in the process. Loaders are a registry so new families (open_clip, ...)
plug in without touching callers.

Example::

    @MODEL_LOADERS.register("my_family")
    def load_my_family(path: Path, device: str, dtype: torch.dtype) -> ModelBundle:
        ...

    bundle = load_model("hf_clip", Path("models/clip"), "cpu", torch.float32)
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from bettersynth.core.registry import Registry

log = logging.getLogger(__name__)

ModelLoader = Callable[[Path, str, torch.dtype], "ModelBundle"]
MODEL_LOADERS: Registry[ModelLoader] = Registry("model loader")


@dataclass
class ModelBundle:
    """A loaded model with the processor that prepares its inputs.

    ``info`` carries small picklable facts workers need (e.g. max text length);
    workers get the processor and info, never the model.
    """

    model: torch.nn.Module
    processor: Any
    info: dict[str, Any] = field(default_factory=dict)


_CACHE: dict[tuple[str, str, str, str], ModelBundle] = {}
_LOCK = threading.Lock()


def load_model(loader: str, path: Path, device: str, dtype: torch.dtype) -> ModelBundle:
    """Load (or reuse) the model at ``path`` with the named loader."""
    key = (loader, str(Path(path).resolve()), device, str(dtype))
    with _LOCK:
        if key not in _CACHE:
            load = MODEL_LOADERS.get(loader)
            if not Path(path).is_dir():
                raise ValueError(f"model path {str(path)!r} for loader {loader!r} is not a directory")
            log.info("loading %s model from %s on %s (%s)", loader, path, device, dtype)
            bundle = load(Path(path), device, dtype)
            bundle.model.eval()
            _CACHE[key] = bundle
        return _CACHE[key]


def clear_model_cache() -> None:
    """Drop every cached model (tests, or freeing GPU memory between steps)."""
    with _LOCK:
        _CACHE.clear()
