"""Re-caption images with an image-to-text model, emitting new samples.

Why: similarity filtering plus BLIP-2 re-captions was the best recipe in the
Better Synth challenge. Captions are sampled with a seed derived from the op
seed and the sample id, so a rerun produces the same data; every new sample
records where it came from in ``meta["provenance"]`` (source id, op, model,
seed, chosen candidates).

Each chunk that has images is rewritten as ``<__dj__image> caption`` per image
followed by ``<|__dj__eoc|>``; chunks without images keep their text.

``keep_candidate_mode`` picks among the ``caption_num`` candidates:
``random_any`` (seeded), ``similar_one`` (the candidate CLIP finds closest to
its image, scored by the similarity filter's engine task, ``hf_clip``),
``similar_one_simhash`` (closest to the original text, Data-Juicer's mode),
``all`` (one new sample per candidate).

Example (recipe)::

    - image_captioning_mapper: {hf_img2seq: Salesforce/blip2-opt-2.7b, caption_num: 4,
                                keep_candidate_mode: similar_one, hf_clip: openai/clip-vit-base-patch32}
"""

from __future__ import annotations

import random
from typing import Literal

from pydantic import Field, model_validator

from bettersynth.core.sample import (
    CHUNK_END,
    IMAGE_TOKEN,
    Sample,
    caption_text,
    clean_text,
)
from bettersynth.data.provenance import synthesis_record, with_provenance
from bettersynth.engine import CaptionTask, ClipSimilarityTask, Failure, derive_seed
from bettersynth.ops.base import Mapped, Mapper, OpConfig
from bettersynth.ops.simhash import hamming, simhash

Key = tuple[int, int, int]  # (chunk, image in chunk, candidate)


class ImageCaptioningMapper(Mapper):
    name = "image_captioning_mapper"

    class Config(OpConfig):
        hf_img2seq: str = "Salesforce/blip2-opt-2.7b"  # image-to-text model dir, relative to model_root
        caption_num: int = Field(1, ge=1)  # candidate captions generated per image
        keep_candidate_mode: Literal["random_any", "similar_one", "similar_one_simhash", "all"] = "random_any"  # which candidates become samples
        hf_clip: str | None = None  # CLIP model dir scoring candidates (keep_candidate_mode similar_one)
        keep_original_sample: bool = True  # keep the input next to its re-captions
        prompt: str | None = None  # text prompt given to the model with each image
        max_new_tokens: int = Field(128, ge=1)  # caption length limit in tokens
        seed: int = 0  # base of the per-sample sampling seeds
        temperature: float = Field(1.0, gt=0)  # sampling temperature
        top_k: int | None = Field(50, ge=1)  # sample among the k likeliest tokens (HF's classic default)

        @model_validator(mode="after")
        def _clip_for_similar_one(self) -> ImageCaptioningMapper.Config:
            if self.keep_candidate_mode == "similar_one" and not self.hf_clip:
                raise ValueError("field 'hf_clip': keep_candidate_mode 'similar_one' needs a CLIP model to score candidates")
            return self

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
        results = self.context.engine.run(task, batch)
        scores = self._clip_scores(batch, results) if cfg.keep_candidate_mode == "similar_one" else [None] * len(batch)
        out: list[Mapped | Failure] = []
        for sample, result, score in zip(batch, results, scores):
            if isinstance(result, Failure):
                out.append(result)
            elif isinstance(score, Failure):
                out.append(score)
            elif not result:  # no images: nothing to caption, the sample passes unchanged
                out.append(Mapped(sample))
            else:
                added = self._new_samples(sample, result, score)
                out.append(Mapped(sample if cfg.keep_original_sample else None, added))
        return out

    def _clip_scores(self, batch: list[Sample], results: list) -> list[dict[Key, float] | Failure | None]:
        """CLIP similarity of every candidate caption with its own image, batched across samples."""
        probes: list[tuple[int, Key]] = []
        pairs: list[Sample] = []
        for idx, (sample, result) in enumerate(zip(batch, results)):
            if isinstance(result, Failure) or not result:
                continue
            offsets = _image_offsets(sample)
            for key, caption in result.items():
                c, j, _ = key
                probes.append((idx, key))
                pairs.append(Sample(f"{sample.id}/{key}", caption_text(caption), [sample.images[offsets[c] + j]]))
        task = ClipSimilarityTask(model_path=self.context.model_path(self.config.hf_clip, "hf_clip", self.name))
        scores: list[dict[Key, float] | Failure | None] = [None] * len(batch)
        for (idx, key), result in zip(probes, self.context.engine.run(task, pairs)):
            if isinstance(result, Failure):
                scores[idx] = result
            elif not isinstance(scores[idx], Failure):
                scores[idx] = (scores[idx] or {}) | {key: next(iter(result.values()))}
        return scores

    def _new_samples(self, sample: Sample, captions: dict[Key, str], scores: dict[Key, float] | None) -> list[Sample]:
        cfg = self.config
        chunks = sample.chunks()
        n_images = {c: len(images) for c, (_, images) in enumerate(chunks) if images}
        # picks: one dict per new sample, {(chunk, image): candidate}
        if cfg.keep_candidate_mode == "all":
            picks = [{(c, j): k for c, n in n_images.items() for j in range(n)} for k in range(cfg.caption_num)]
        elif cfg.keep_candidate_mode == "random_any":
            chosen = {c: random.Random(derive_seed(cfg.seed, sample.id, "pick", c)).randrange(cfg.caption_num) for c in n_images}
            picks = [{(c, j): chosen[c] for c, n in n_images.items() for j in range(n)}]
        elif cfg.keep_candidate_mode == "similar_one_simhash":
            chosen = {c: self._closest_text(chunks[c][0], [self._chunk_text(captions, c, n, lambda j, k=k: k) for k in range(cfg.caption_num)])
                      for c, n in n_images.items()}
            picks = [{(c, j): chosen[c] for c, n in n_images.items() for j in range(n)}]
        else:  # similar_one: per image, the candidate CLIP scores highest against that image
            picks = [{(c, j): max(range(cfg.caption_num), key=lambda k: (scores[(c, j, k)], -k))
                      for c, n in n_images.items() for j in range(n)}]
        return [self._sample(sample, chunks, captions, pick, n) for n, pick in enumerate(picks)]

    @staticmethod
    def _chunk_text(captions: dict[Key, str], c: int, n: int, candidate) -> str:
        return " ".join(f"{IMAGE_TOKEN} {captions[(c, j, candidate(j))]}" for j in range(n)) + f" {CHUNK_END}"

    @staticmethod
    def _closest_text(original: str, options: list[str]) -> int:
        target = simhash(original)
        distances = [hamming(simhash(clean_text(option)), target) for option in options]
        return distances.index(min(distances))

    def _sample(self, sample: Sample, chunks, captions: dict[Key, str], pick: dict[tuple[int, int], int], n: int) -> Sample:
        parts = []
        for c, (text, images) in enumerate(chunks):
            if images:
                parts.append(self._chunk_text(captions, c, len(images), lambda j, c=c: pick[(c, j)]))
            else:
                parts.append(f"{text} {CHUNK_END}")
        record = synthesis_record(self.name, sample, self.config.hf_img2seq, self.config.seed,
                                  candidates=[pick[key] for key in sorted(pick)])
        return Sample(id=f"{sample.id}#cap{n}", text=" ".join(parts), images=list(sample.images), meta=with_provenance(sample.meta, **record))


def _image_offsets(sample: Sample) -> dict[int, int]:
    """Index in ``sample.images`` of each chunk's first image."""
    offsets, cursor = {}, 0
    for c, (_, images) in enumerate(sample.chunks()):
        offsets[c] = cursor
        cursor += len(images)
    return offsets
