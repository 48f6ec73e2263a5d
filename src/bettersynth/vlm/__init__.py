"""Vision-language models: architectures (LLaVA, Mini-Gemini-style), builders, and the one loader.

A saved model names its architecture in ``config.json`` (``model_type``);
``load_vlm`` maps that name to the class through the ``VLMS`` registry and
loads the processor saved beside it, so training, evaluation, caption loss,
the perplexity op and soups all open LLaVA and Mini-Gemini checkpoints alike.

Example::

    vlm = load_vlm(model_dir, dtype=torch.float32, device="cpu")
    vlm.model, vlm.processor
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from bettersynth.core.registry import Registry

VLMS: Registry[Callable[[], type]] = Registry("vision-language model")  # model_type -> class loader (lazy import)


@VLMS.register("llava")
def _llava() -> type:
    from transformers import LlavaForConditionalGeneration

    return LlavaForConditionalGeneration


@VLMS.register("bettersynth_mgm")
def _mini_gemini() -> type:
    from bettersynth.vlm.mgm import MiniGeminiForConditionalGeneration

    return MiniGeminiForConditionalGeneration


@dataclass(frozen=True)
class VLM:
    """A loaded vision-language model and the processor saved with it (image processor + tokenizer + template)."""

    model: Any  # a transformers PreTrainedModel of the class config.json names
    processor: Any  # the checkpoint's own AutoProcessor (a LlavaProcessor for both architectures)


def vlm_model_type(model_dir: Path | str) -> str:
    """The ``model_type`` that ``model_dir/config.json`` names."""
    config = Path(model_dir) / "config.json"
    try:
        return json.loads(config.read_text(encoding="utf-8"))["model_type"]
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{config}: not a saved vision-language model ({exc})") from exc


def vlm_class(model_dir: Path | str) -> type:
    """The class that ``model_dir/config.json`` names."""
    return VLMS.get(vlm_model_type(model_dir))()


def load_vlm(model_dir: Path | str, dtype: torch.dtype | str = "auto",
             device: str | torch.device | None = None) -> VLM:
    """The model (the class ``config.json`` names, every weight) and its processor, from a local folder.

    ``dtype="auto"`` keeps the dtype the checkpoint was saved in; ``device`` None leaves the model on the CPU.
    Offline only: a missing folder or file is an error here, never a download.
    """
    from transformers import AutoProcessor

    model_dir = Path(model_dir)
    model = vlm_class(model_dir).from_pretrained(model_dir, dtype=dtype, local_files_only=True)
    if device is not None:
        model = model.to(device)
    return VLM(model, AutoProcessor.from_pretrained(model_dir, local_files_only=True))
