"""Hugging Face model families, loaded from local directories only.

Why: clusters are often offline and the hub is never a dependency of a run;
``local_files_only`` turns a missing model into an immediate, clear error.
"""

from __future__ import annotations

from pathlib import Path

import torch

from bettersynth.engine.models import MODEL_LOADERS, ModelBundle
from bettersynth.vlm import VLMS, load_vlm, vlm_model_type


@MODEL_LOADERS.register("hf_clip")
def load_hf_clip(path: Path, device: str, dtype: torch.dtype) -> ModelBundle:
    """A ``CLIPModel`` directory with its processor (image processor + tokenizer)."""
    from transformers import AutoProcessor, CLIPModel

    processor = AutoProcessor.from_pretrained(path, local_files_only=True)
    model = CLIPModel.from_pretrained(path, local_files_only=True, dtype=dtype).to(device)
    return ModelBundle(model, processor, {"max_text_len": model.config.text_config.max_position_embeddings})


@MODEL_LOADERS.register("hf_img2seq")
def load_hf_img2seq(path: Path, device: str, dtype: torch.dtype) -> ModelBundle:
    """Any image-to-text model: a bettersynth VLM (LLaVA, Mini-Gemini) through the one VLM loader,
    else whatever ``AutoModelForImageTextToText`` knows (BLIP, BLIP-2, ...).

    transformers 5 folded ``AutoModelForVision2Seq`` into that class, so there
    is a single path for the rest.
    """
    if vlm_model_type_or_none(path) in VLMS:
        return load_bettersynth_vlm(path, device, dtype)
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(path, local_files_only=True)
    model = AutoModelForImageTextToText.from_pretrained(path, local_files_only=True, dtype=dtype).to(device)
    return ModelBundle(model, processor)


@MODEL_LOADERS.register("vlm")
def load_bettersynth_vlm(path: Path, device: str, dtype: torch.dtype) -> ModelBundle:
    """A LLaVA or Mini-Gemini checkpoint, by its ``config.json``, with its own processor."""
    vlm = load_vlm(path, dtype=dtype, device=device)
    return ModelBundle(vlm.model, vlm.processor)


def vlm_model_type_or_none(path: Path) -> str | None:
    """The folder's ``model_type``, or None when it is not a model folder the VLM loader reads."""
    try:
        return vlm_model_type(path)
    except ValueError:
        return None


@MODEL_LOADERS.register("hf_causal_lm")
def load_hf_causal_lm(path: Path, device: str, dtype: torch.dtype) -> ModelBundle:
    """Any ``AutoModelForCausalLM`` directory; the tokenizer is the processor."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype).to(device)
    info = {"bos_token_id": tokenizer.bos_token_id, "max_length": getattr(model.config, "max_position_embeddings", None)}
    return ModelBundle(model, tokenizer, info)


@MODEL_LOADERS.register("hf_owlvit")
def load_hf_owlvit(path: Path, device: str, dtype: torch.dtype) -> ModelBundle:
    """An ``OwlViTForObjectDetection`` directory with its ``OwlViTProcessor``."""
    from transformers import OwlViTForObjectDetection, OwlViTProcessor

    processor = OwlViTProcessor.from_pretrained(path, local_files_only=True)
    model = OwlViTForObjectDetection.from_pretrained(path, local_files_only=True, dtype=dtype).to(device)
    return ModelBundle(model, processor, {"max_text_len": model.config.text_config.max_position_embeddings})
