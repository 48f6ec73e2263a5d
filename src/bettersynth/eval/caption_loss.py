"""Held-out caption loss and perplexity of a stage-1 (align) model: the quick proxy for recipe search.

Why: TextVQA and MMBench need a finetuned model and minutes to hours of
decoding; comparing data recipes after stage 1 only needs to know how well
the projector maps images to captions it has not seen. The loss is computed
exactly as stage 1 trains: LLaVA's plain template (``<image>caption</s>``),
loss on the caption tokens and the end token only, summed over tokens and
divided by their count over the whole set (token-weighted, so batching and
sharding do not change it).

Example::

    records = load_caption_records("heldout/captions.jsonl")
    result = heldout_caption_loss("runs/align/final", records, image_root="heldout")
    result.loss, result.perplexity
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from bettersynth.core.device import resolve_device
from bettersynth.data.jsonl import BadLine, read_jsonl
from bettersynth.data.llava import dj_to_llava, read_llava_json
from bettersynth.vlm import load_vlm
from bettersynth.vlm.inputs import IGNORE_INDEX, LlavaCollator, LlavaDataset

log = logging.getLogger(__name__)


@dataclass
class CaptionLoss:
    """Token-weighted caption loss over a held-out set, with the per-sample numbers behind it."""

    loss: float  # mean negative log-likelihood per caption token (nats)
    perplexity: float  # exp(loss)
    tokens: int  # caption tokens scored (end tokens included)
    samples: int  # captions scored
    records: list[dict] = field(default_factory=list)  # per sample: id, tokens, nll_sum, loss

    @property
    def metrics(self) -> dict[str, float]:
        return {"caption_loss": self.loss, "caption_perplexity": self.perplexity,
                "caption_tokens": float(self.tokens), "caption_samples": float(self.samples)}


def load_caption_records(path: str | Path) -> list[dict]:
    """Held-out captions as LLaVA records: a LLaVA ``.json`` list, or Data-Juicer ``.jsonl``.

    Image paths in a Data-Juicer file are relative to its folder (or absolute
    under it); bad lines fail the load, naming the line, because a proxy metric
    over a silently smaller set would not compare with earlier runs.
    """
    path = Path(path)
    if path.suffix == ".json":
        return read_llava_json(path)
    if path.suffix != ".jsonl":
        raise ValueError(f"{path.name}: caption set must be LLaVA .json or Data-Juicer .jsonl")
    records = []
    for sample in read_jsonl(path):
        if isinstance(sample, BadLine):
            raise ValueError(f"{sample.where}: {sample.error}")
        records.append(dj_to_llava(sample, image_root=path.parent))
    return records


def heldout_caption_loss(
    model_dir: str | Path,
    records: Sequence[dict],
    image_root: str | Path,
    batch_size: int = 8,
    max_length: int = 2048,
    image_aspect_ratio: Literal["crop", "pad"] = "crop",
    device: str | torch.device | None = None,
) -> CaptionLoss:
    """Caption loss of ``model_dir`` on ``records`` (plain template, caption tokens only)."""
    if batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
    if not records:
        raise ValueError("records: the caption set is empty")
    target = resolve_device(device)
    vlm = load_vlm(model_dir, dtype="auto", device=target)  # LLaVA or Mini-Gemini, by config.json
    model, processor = vlm.model.eval(), vlm.processor
    tokenizer = processor.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    dataset = LlavaDataset(records, Path(image_root), processor, "plain", max_length, image_aspect_ratio)
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=LlavaCollator(pad_id))
    per_sample: list[dict] = []
    with torch.inference_mode():
        for batch in loader:
            pixels = batch["pixel_values"]
            logits = model(
                input_ids=batch["input_ids"].to(target), attention_mask=batch["attention_mask"].to(target),
                pixel_values=pixels.to(target, model.dtype) if pixels is not None else None, use_cache=False,
            ).logits
            labels = batch["labels"][:, 1:].to(target)  # token t predicts token t + 1
            nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), labels,
                                  ignore_index=IGNORE_INDEX, reduction="none")
            counts = (labels != IGNORE_INDEX).sum(dim=1)
            for sample_id, total, count in zip(batch["ids"], nll.double().sum(dim=1).tolist(), counts.tolist()):
                per_sample.append({"id": sample_id, "tokens": int(count), "nll_sum": total,
                                   "loss": total / count if count else None})
            log.info("caption loss: %d/%d samples", len(per_sample), len(dataset))
    tokens = sum(r["tokens"] for r in per_sample)
    if tokens == 0:
        raise ValueError("records: no caption tokens to score (empty captions?)")
    loss = math.fsum(r["nll_sum"] for r in per_sample) / tokens
    return CaptionLoss(loss, math.exp(loss), tokens, len(per_sample), per_sample)
