"""Batched greedy answers from a saved VLM checkpoint (LLaVA or Mini-Gemini), and the whole eval in one call.

Why: benchmark numbers are only comparable when decoding is deterministic
(greedy) and every prompt goes through the checkpoint's own chat template, the
way the model saw its instruction data.

Example::

    result = evaluate("runs/mgm-2b/final", MMBench("mmbench_dev_en.tsv"), batch_size=16)
    result.metrics["mmbench_circular"]
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image

from bettersynth.core.device import resolve_device
from bettersynth.eval.benchmark import Benchmark, EvalItem, EvalResult
from bettersynth.eval.shard import shard_question_ids
from bettersynth.vlm import load_vlm
from bettersynth.vlm.inputs import format_prompt

log = logging.getLogger(__name__)


def _open(image: Image.Image | Path | str) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    with Image.open(image) as opened:
        return opened.convert("RGB")


def generate_answers(model_dir: str | Path, items: Sequence[EvalItem], batch_size: int = 8,
                     max_new_tokens: int = 16, device: str | torch.device | None = None) -> dict[str, str]:
    """Greedy-decode an answer per item; returns ``{question_id: stripped new text}``."""
    if batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens: must be >= 1, got {max_new_tokens}")
    target = resolve_device(device)
    vlm = load_vlm(model_dir, dtype="auto", device=target)  # LLaVA or Mini-Gemini, by config.json
    model, processor = vlm.model.eval(), vlm.processor
    processor.tokenizer.padding_side = "left"  # new tokens must start at the same column
    tokenizer = processor.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    answers: dict[str, str] = {}
    with torch.inference_mode():
        for start in range(0, len(items), batch_size):
            batch = items[start:start + batch_size]
            inputs = processor(images=[_open(item.image) for item in batch],
                               text=[format_prompt(processor, item.prompt) for item in batch],
                               padding=True, return_tensors="pt").to(target)
            if "pixel_values" in inputs:
                inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
            output = model.generate(**inputs, do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                                    pad_token_id=pad_id)
            new_tokens = output[:, inputs["input_ids"].shape[1]:]
            texts = processor.batch_decode(new_tokens, skip_special_tokens=True)
            answers.update({item.question_id: text.strip() for item, text in zip(batch, texts)})
            log.info("generated %d/%d answers", len(answers), len(items))
    return answers


def evaluate(model_dir: str | Path, benchmark: Benchmark, batch_size: int = 8,
             max_new_tokens: int = 16, device: str | torch.device | None = None,
             shard_index: int = 0, num_shards: int = 1) -> EvalResult:
    """Generate for the items of ``benchmark`` (one shard of them) and score the outputs.

    Shards of one benchmark merge with ``merge_results`` to the unsharded result.
    """
    if num_shards == 1 and shard_index == 0:
        items = benchmark.items()
    else:
        items = benchmark.items(shard_question_ids(benchmark, shard_index, num_shards))
    predictions = generate_answers(model_dir, items, batch_size, max_new_tokens, device) if items else {}
    return benchmark.score(predictions, allow_missing=num_shards > 1)
