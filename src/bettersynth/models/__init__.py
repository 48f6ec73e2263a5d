"""Vision-language model architectures and builders: LLaVA and Mini-Gemini-style.

A saved model names its architecture in ``config.json`` (``model_type``);
``load_vlm`` maps that name to the class through the ``VLMS`` registry, so the
trainer loads either kind from a directory.

Example::

    model = load_vlm(model_dir, dtype=torch.float32)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from bettersynth.registry import Registry

VLMS: Registry[Callable[[], type]] = Registry("vision-language model")  # model_type -> class loader (lazy import)


@VLMS.register("llava")
def _llava() -> type:
    from transformers import LlavaForConditionalGeneration

    return LlavaForConditionalGeneration


@VLMS.register("bettersynth_mgm")
def _mini_gemini() -> type:
    from bettersynth.models.mgm import MiniGeminiForConditionalGeneration

    return MiniGeminiForConditionalGeneration


def vlm_class(model_dir: Path) -> type:
    """The class that ``model_dir/config.json`` names."""
    config = Path(model_dir) / "config.json"
    try:
        model_type = json.loads(config.read_text(encoding="utf-8"))["model_type"]
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{config}: not a saved vision-language model ({exc})") from exc
    return VLMS.get(model_type)()


def load_vlm(model_dir: Path, **kwargs: Any):
    """``from_pretrained`` of the right class for ``model_dir``."""
    return vlm_class(model_dir).from_pretrained(model_dir, **kwargs)
