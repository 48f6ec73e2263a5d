"""Seeded, batched text generation with a causal LM: one prompt per row, one completion back.

Why: CapFusion asks an LLM to merge two captions for every image of the
dataset; that must batch across samples (left-padded prompts, one
``generate`` call), stay bounded (``max_new_tokens``) and be reproducible —
each row samples with its own seeded generator (``SeededSampling``), so a
fused caption depends on (model, prompt, seed) only.

Example::

    task = GenerationTask(model_path=Path("models/qwen"), prompts={"7": {0: "Merge ..."}}, seed=0)
    engine.run(task, samples)   # per sample: {chunk: completion}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from bettersynth.core.sample import Sample
from bettersynth.engine.captioning import SeededSampling
from bettersynth.engine.models import ModelBundle
from bettersynth.engine.task import InferenceTask, Row, derive_seed


@dataclass
class GenerationTask(InferenceTask):
    model_path: Path
    prompts: dict[str, dict[int, str]] = field(default_factory=dict)  # sample id -> {chunk: prompt}
    seed: int = 0
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_k: int | None = 50
    use_chat_template: bool = True  # wrap the prompt as a user turn when the tokenizer has a template
    loader: str = "hf_causal_lm"

    def rows(self, sample_idx: int, sample: Sample) -> list[Row]:
        chunks = self.prompts.get(sample.id, {})
        return [Row(sample_idx, c, None, chunks[c], derive_seed(self.seed, sample.id, c)) for c in sorted(chunks)]

    def prepare(self, row: Row, image: Image.Image | None, processor: Any, info: dict) -> dict[str, Any]:
        tokenizer = processor
        if self.use_chat_template and getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template([{"role": "user", "content": row.text}], add_generation_prompt=True, tokenize=False)
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            ids = tokenizer(row.text)["input_ids"]
        return {"input_ids": list(ids)}

    def collate(self, prepared: list[dict[str, Any]], processor: Any, info: dict) -> dict[str, Any]:
        # Left padding: every prompt ends where generation starts.
        pad = processor.pad_token_id if processor.pad_token_id is not None else processor.eos_token_id
        width = max(len(p["input_ids"]) for p in prepared)
        ids = [[pad] * (width - len(p["input_ids"])) + p["input_ids"] for p in prepared]
        mask = [[0] * (width - len(p["input_ids"])) + [1] * len(p["input_ids"]) for p in prepared]
        return {"input_ids": torch.tensor(ids, dtype=torch.long), "attention_mask": torch.tensor(mask, dtype=torch.long)}

    def forward(self, bundle: ModelBundle, inputs: dict[str, Any], rows: list[Row]) -> list[str]:
        from transformers import LogitsProcessorList

        tokenizer = bundle.processor
        sampler = SeededSampling([row.seed or 0 for row in rows], self.temperature, self.top_k)
        output = bundle.model.generate(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            num_beams=1,
            logits_processor=LogitsProcessorList([sampler]),
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        )
        completions = tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        return [" ".join(text.split()) for text in completions]
