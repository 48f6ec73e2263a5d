"""Seeded caption generation with any Hugging Face image-to-text model.

Why: Data-Juicer samples captions from the global RNG, so two runs (or two
batch sizes) give different data. Here each row carries its own seed and
sampling is done with the Gumbel-max trick: argmax(log p + Gumbel noise) is an
exact sample from p, and the noise for a row comes from that row's own
generator, so a caption depends only on (model, image, prompt, seed).

One task covers the families ``AutoModelForImageTextToText`` loads: BLIP and
BLIP-2 (image, optional text prefix), GIT (a decoder that continues the
prefix) and chat VLMs such as LLaVA (a processor with a chat template: the
prompt goes into a user turn next to the image).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from bettersynth.core.sample import Sample
from bettersynth.engine.models import ModelBundle
from bettersynth.engine.task import InferenceTask, Row, image_rows


class SeededSampling:
    """Turns greedy decoding into per-row seeded sampling (temperature, top-k).

    A transformers logits processor by protocol (``__call__(input_ids, scores)``);
    not subclassed so importing this module does not import transformers.
    """

    def __init__(self, seeds: list[int], temperature: float = 1.0, top_k: int | None = None):
        self.generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        self.temperature, self.top_k = temperature, top_k

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        logits = scores.float() / self.temperature
        if self.top_k is not None and self.top_k < logits.shape[-1]:
            kth = torch.topk(logits, self.top_k, dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        uniform = torch.stack([torch.rand(logits.shape[-1], generator=g, dtype=torch.float64) for g in self.generators])
        uniform = uniform.clamp(1e-12, 1.0 - 1e-12)
        gumbel = -torch.log(-torch.log(uniform))
        return torch.log_softmax(logits, dim=-1) + gumbel.to(logits.device, logits.dtype)


@dataclass
class CaptionTask(InferenceTask):
    model_path: Path
    seed: int
    candidates: int = 1  # captions per image
    prompt: str | None = None
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_k: int | None = 50
    loader: str = "hf_img2seq"

    def rows(self, sample_idx: int, sample: Sample) -> list[Row]:
        return image_rows(sample_idx, sample, repeat=self.candidates, seed=self.seed)

    def prepare(self, row: Row, image: Image.Image | None, processor: Any, info: dict) -> dict[str, Any]:
        text = model_prompt(processor, self.prompt)
        kwargs = {"text": text} if text else {}
        encoded = processor(images=image, return_tensors="pt", **kwargs)
        prepared = {name: value[0] for name, value in encoded.items() if isinstance(value, torch.Tensor)}
        if type(processor).__name__ == "GitProcessor" and "input_ids" in prepared:
            # GIT continues its prefix: the tokenizer's closing [SEP] would end the caption at once.
            sep = getattr(processor.tokenizer, "sep_token_id", None)
            if sep is not None and int(prepared["input_ids"][-1]) == sep:
                prepared = {k: v[:-1] if k in ("input_ids", "attention_mask", "token_type_ids") else v for k, v in prepared.items()}
        return prepared

    def collate(self, prepared: list[dict[str, Any]], processor: Any, info: dict) -> dict[str, Any]:
        # Every row has the same prompt (and image size), so token tensors have equal lengths.
        return {name: torch.stack([p[name] for p in prepared]) for name in prepared[0]}

    def forward(self, bundle: ModelBundle, inputs: dict[str, Any], rows: list[Row]) -> list[str]:
        from transformers import LogitsProcessorList

        sampler = SeededSampling([row.seed or 0 for row in rows], self.temperature, self.top_k)
        inputs = {k: v for k, v in inputs.items() if k != "token_type_ids"}
        output = bundle.model.generate(
            **inputs,
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            num_beams=1,
            logits_processor=LogitsProcessorList([sampler]),
        )
        prompt_ids = inputs.get("input_ids")
        if prompt_ids is not None and output.shape[1] >= prompt_ids.shape[1] and torch.equal(output[:, : prompt_ids.shape[1]], prompt_ids):
            output = output[:, prompt_ids.shape[1] :]  # decoder-only models echo the prompt
        tokenizer = getattr(bundle.processor, "tokenizer", bundle.processor)
        captions = [" ".join(t.split()) for t in tokenizer.batch_decode(output, skip_special_tokens=True)]
        if self.prompt:
            prefix = " ".join(tokenizer.decode(tokenizer(self.prompt)["input_ids"], skip_special_tokens=True).split())
            captions = [c[len(prefix) :].strip() if prefix and c.startswith(prefix) else c for c in captions]
        return captions


def model_prompt(processor: Any, prompt: str | None) -> str | None:
    """The text a processor gets with the image.

    A chat VLM (its processor has a chat template) needs the image placeholder
    in a user turn, so the prompt (or a plain captioning request) is wrapped in
    one; BLIP-style processors take the prompt as a caption prefix as is.
    """
    if getattr(processor, "chat_template", None):
        request = prompt or DEFAULT_CHAT_PROMPT
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": request}]}]
        return processor.apply_chat_template(messages, add_generation_prompt=True)
    return prompt


DEFAULT_CHAT_PROMPT = "Describe the image in one sentence."
