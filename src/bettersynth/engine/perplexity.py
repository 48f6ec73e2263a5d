"""Perplexity of text under a causal LM, and of a caption given its image under a trained VLM (LLaVA or Mini-Gemini).

Why: both are exp(mean token NLL) over a labelled span, so both share one
batched computation: rows of different lengths are right-padded into one
batch (a causal model's logits at a position never see the padding after it),
the NLL is taken per token in float32, and each row gets its own mean. The
LLaVA rows are built exactly as stage-1 training builds them (the ``plain``
template, ``<image>caption</s>``, caption and end token labelled), so the
score is the training loss of that sample.

Example::

    task = CausalLMPerplexityTask(model_path=Path("models/qwen2.5-0.5b"))
    engine.run(task, samples)   # per sample: {0: perplexity or None}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from PIL import Image

from bettersynth.core.sample import Sample
from bettersynth.data.llava import GPT, HUMAN, LLAVA_IMAGE_TOKEN
from bettersynth.engine.models import ModelBundle
from bettersynth.engine.task import InferenceTask, Row, image_rows
from bettersynth.vlm.inputs import (
    IGNORE_INDEX,
    LlavaCollator,
    encode,
    pad_to_square,
    plain_prompt,
)


@dataclass(frozen=True)
class TextRow(Row):
    """A text-only row whose labelled part starts at character ``response_start`` of ``text``."""

    response_start: int = 0


def token_perplexities(logits: torch.Tensor, labels: torch.Tensor) -> list[float | None]:
    """exp(mean NLL) per row over the labelled tokens (token t predicts t + 1); None when a row has none."""
    targets = labels[:, 1:]
    nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none")
    counts = (targets != IGNORE_INDEX).sum(dim=1)
    sums = nll.double().sum(dim=1)
    return [_exp(total / count) if count else None for total, count in zip(sums.tolist(), counts.tolist())]


def _exp(value: float) -> float:
    try:
        return math.exp(value)
    except OverflowError:
        return math.inf


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def join_query_response(query: str, response: str) -> tuple[str, int]:
    """Data-Juicer's ``' '.join([query, response]).strip()``, and where the response starts in it."""
    joined = f"{query} {response}"
    lead = len(joined) - len(joined.lstrip())
    return joined.strip(), max(0, len(query) + 1 - lead)


@dataclass
class CausalLMPerplexityTask(InferenceTask):
    """One text row per sample: ``query response``, of which only the response is scored.

    ``pairs[i]`` is the (query, response) of the i-th sample given to ``Engine.run``;
    the op formats them (a template naming a missing field fails that sample only).
    """

    model_path: Path
    pairs: list[tuple[str, str]]
    max_length: int | None = None  # tokens kept, from the end (left truncation, as Data-Juicer)
    loader: str = "hf_causal_lm"

    def rows(self, sample_idx: int, sample: Sample) -> list[Row]:
        text, start = join_query_response(*self.pairs[sample_idx])
        return [TextRow(sample_idx, 0, None, text, response_start=start)]

    def prepare(self, row: Row, image: Image.Image | None, processor: Any, info: dict) -> dict[str, Any]:
        start = row.response_start if isinstance(row, TextRow) else 0
        enc = processor(row.text, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        labels = [t if e > s and e > start else IGNORE_INDEX for t, (s, e) in zip(ids, enc["offset_mapping"])]
        limit = self.max_length or info.get("max_length")
        if limit and len(ids) > limit:
            ids, labels = ids[-limit:], labels[-limit:]
        return {"input_ids": ids, "labels": labels}

    def collate(self, prepared: list[dict[str, Any]], processor: Any, info: dict) -> dict[str, Any]:
        pad_id = processor.pad_token_id if processor.pad_token_id is not None else (processor.eos_token_id or 0)
        ids = [p["input_ids"] for p in prepared]
        return {
            "input_ids": _pad(ids, pad_id),
            "attention_mask": _pad([[1] * len(i) for i in ids], 0),
            "labels": _pad([p["labels"] for p in prepared], IGNORE_INDEX),
        }

    def forward(self, bundle: ModelBundle, inputs: dict[str, Any], rows: list[Row]) -> list[float | None]:
        logits = bundle.model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False).logits
        return token_perplexities(logits, inputs["labels"])


@dataclass
class CaptionPerplexityTask(InferenceTask):
    """One row per (chunk, image): the chunk's caption scored given that image, stage-1 style."""

    model_path: Path
    max_length: int = 2048  # tokens per row, image tokens included (as in training)
    image_aspect_ratio: Literal["crop", "pad"] = "crop"  # as the model was trained
    loader: str = "vlm"  # a bettersynth LLaVA or Mini-Gemini checkpoint

    def rows(self, sample_idx: int, sample: Sample) -> list[Row]:
        return image_rows(sample_idx, sample)

    def prepare(self, row: Row, image: Image.Image | None, processor: Any, info: dict) -> dict[str, Any]:
        if image is not None and self.image_aspect_ratio == "pad":  # needs the processor's mean colour
            image = pad_to_square(image, processor.image_processor.image_mean)
        record = {
            "id": f"{row.sample_idx}:{row.key}",
            "image": row.image,
            "conversations": [{"from": HUMAN, "value": LLAVA_IMAGE_TOKEN}, {"from": GPT, "value": row.text}],
        }
        example = encode(plain_prompt(record, processor), image, processor, self.max_length, record["id"])
        example.pop("id")
        return example

    def collate(self, prepared: list[dict[str, Any]], processor: Any, info: dict) -> dict[str, Any]:
        tokenizer = processor.tokenizer
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        batch = LlavaCollator(pad_id)([{"id": "", **p} for p in prepared])
        batch.pop("ids")
        return batch

    def forward(self, bundle: ModelBundle, inputs: dict[str, Any], rows: list[Row]) -> list[float | None]:
        logits = bundle.model(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
            pixel_values=inputs["pixel_values"], use_cache=False,
        ).logits
        return token_perplexities(logits, inputs["labels"])
