"""Re-caption images with an image-to-text model, emitting new samples.

Why: similarity filtering plus BLIP-2 re-captions was the best recipe in the
Better Synth challenge. Captions are sampled with a seed derived from the op
seed and the sample id, so a rerun produces the same data; every new sample
records where it came from in ``meta["provenance"]``.

Each chunk that has images is rewritten as ``<__dj__image> caption`` per image
followed by ``<|__dj__eoc|>``; chunks without images keep their text.
"""

from __future__ import annotations

import random
from typing import Literal

from pydantic import Field

from bettersynth.data.sample import CHUNK_END, IMAGE_TOKEN, Sample, clean_text
from bettersynth.engine import CaptionTask, Failure, derive_seed
from bettersynth.ops.base import Mapped, Mapper, OpConfig
from bettersynth.ops.simhash import hamming, simhash


class ImageCaptioningMapper(Mapper):
    name = "image_captioning_mapper"

    class Config(OpConfig):
        hf_img2seq: str = "Salesforce/blip2-opt-2.7b"  # image-to-text model dir, relative to model_root
        caption_num: int = Field(1, ge=1)  # candidate captions generated per image
        keep_candidate_mode: Literal["random_any", "similar_one_simhash", "all"] = "random_any"  # which candidates become samples
        keep_original_sample: bool = True  # keep the input next to its re-captions
        prompt: str | None = None  # text prompt given to the model with each image
        max_new_tokens: int = Field(128, ge=1)  # caption length limit in tokens
        seed: int = 0  # base of the per-sample sampling seeds
        temperature: float = Field(1.0, gt=0)  # sampling temperature
        top_k: int | None = Field(50, ge=1)  # sample among the k likeliest tokens (HF's classic default)

    def process(self, batch: list[Sample]) -> list[Mapped | Failure]:
        cfg = self.config
        task = CaptionTask(
            model_path=self.context.model_path(cfg.hf_img2seq, "hf_img2seq", self.name),
            seed=cfg.seed,
            candidates=cfg.caption_num,
            prompt=cfg.prompt,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_k=cfg.top_k,
        )
        out: list[Mapped | Failure] = []
        for sample, result in zip(batch, self.context.engine.run(task, batch)):
            if isinstance(result, Failure):
                out.append(result)
            elif not result:  # no images: nothing to caption, the sample passes unchanged
                out.append(Mapped(sample))
            else:
                added = self._new_samples(sample, result)
                out.append(Mapped(sample if cfg.keep_original_sample else None, added))
        return out

    def _new_samples(self, sample: Sample, captions: dict[tuple[int, int, int], str]) -> list[Sample]:
        cfg = self.config
        chunks = sample.chunks()
        # candidates[c][k] = rewritten text of chunk c with candidate k of each of its images
        candidates: dict[int, list[str]] = {}
        for c, (_, images) in enumerate(chunks):
            if images:
                candidates[c] = [
                    " ".join(f"{IMAGE_TOKEN} {captions[(c, j, k)]}" for j in range(len(images))) + f" {CHUNK_END}"
                    for k in range(cfg.caption_num)
                ]
        if cfg.keep_candidate_mode == "all":
            picks = [{c: k for c in candidates} for k in range(cfg.caption_num)]
        elif cfg.keep_candidate_mode == "random_any":
            picks = [{c: random.Random(derive_seed(cfg.seed, sample.id, "pick", c)).randrange(cfg.caption_num) for c in candidates}]
        else:
            picks = [{c: self._closest(chunks[c][0], options) for c, options in candidates.items()}]
        return [self._sample(sample, chunks, candidates, pick, n) for n, pick in enumerate(picks)]

    @staticmethod
    def _closest(original: str, options: list[str]) -> int:
        target = simhash(original)
        distances = [hamming(simhash(clean_text(option)), target) for option in options]
        return distances.index(min(distances))

    def _sample(self, sample: Sample, chunks, candidates, pick: dict[int, int], n: int) -> Sample:
        parts = []
        for c, (text, _) in enumerate(chunks):
            parts.append(candidates[c][pick[c]] if c in candidates else f"{text} {CHUNK_END}")
        meta = dict(sample.meta)
        meta["provenance"] = {
            "source_id": sample.id,
            "op": self.name,
            "model": self.config.hf_img2seq,
            "seed": self.config.seed,
            "candidates": [pick[c] for c in sorted(pick)],
        }
        return Sample(id=f"{sample.id}#cap{n}", text=" ".join(parts), images=list(sample.images), meta=meta)
