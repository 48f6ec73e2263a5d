"""CapFusion: an LLM merges the original caption with a synthetic one (CapsFusion, as used by POINTS).

Why: web alt-text is knowledge-rich but noisy; a captioner's output is clean
but generic. CapsFusion (Yu et al., 2023) and POINTS keep both by asking an
LLM to fuse them, which beat either caption alone. As there, the synthetic
caption comes from a captioner run beforehand: this op reads it from
``meta[synthetic_key]`` (a string, or one string per chunk that has images,
e.g. shipped with the data as LAION-COCO ships BLIP captions), and only when
it is missing generates it in-op with ``hf_img2seq`` through the seeded
captioning engine. Both captions and the fusion are recorded in the new
sample's meta, so every fused caption can be audited.

The prompt template lives in the recipe (``{original}`` and ``{synthetic}``
placeholders); generation is batched across samples, seeded per chunk and
bounded by ``max_new_tokens``.

Example (recipe)::

    - capfusion_mapper:
        hf_llm: Qwen/Qwen2.5-0.5B-Instruct
        hf_img2seq: Salesforce/blip2-opt-2.7b
        max_new_tokens: 77
"""

from __future__ import annotations

import logging

from pydantic import Field, field_validator

from bettersynth.core.sample import CHUNK_END, IMAGE_TOKEN, Sample
from bettersynth.data.provenance import synthesis_record, with_provenance
from bettersynth.engine import CaptionTask, Failure
from bettersynth.engine.fusion import GenerationTask
from bettersynth.ops.base import Mapped, Mapper, OpConfig

log = logging.getLogger(__name__)

CAPSFUSION_TEMPLATE = (
    "Merge the two descriptions of one image into a single fluent sentence. Description 1 is rich in "
    "real-world knowledge (names, places, numbers) but may be badly written. Description 2 is well written "
    "but generic and may be wrong about details. Keep the knowledge of description 1, the structure of "
    "description 2, and do not just concatenate them.\n"
    "Description 1: {original}\nDescription 2: {synthetic}\nMerged description:"
)


class CapFusionMapper(Mapper):
    name = "capfusion_mapper"

    class Config(OpConfig):
        hf_llm: str = "Qwen/Qwen2.5-0.5B-Instruct"  # causal LM dir that fuses, relative to model_root
        prompt_template: str = CAPSFUSION_TEMPLATE  # must contain {original} and {synthetic}
        synthetic_key: str = "synthetic_caption"  # meta key of the synthetic caption(s), read and written
        hf_img2seq: str | None = None  # captioner for samples without meta[synthetic_key]; None: such samples are rejected
        caption_prompt: str | None = None  # prompt given to the captioner
        caption_max_new_tokens: int = Field(40, ge=1)  # synthetic caption length limit in tokens
        max_new_tokens: int = Field(77, ge=1)  # fused caption length limit in tokens
        use_chat_template: bool = True  # wrap the prompt in the LM's chat template when it has one
        keep_original_sample: bool = False  # CapFusion replaces the caption; True keeps both
        seed: int = 0  # base of the per-chunk sampling seeds (captioner and LM)
        temperature: float = Field(1.0, gt=0)  # sampling temperature
        top_k: int | None = Field(1, ge=1)  # 1 = greedy fusion (the default: faithful merges)

        @field_validator("prompt_template")
        @classmethod
        def _has_placeholders(cls, value: str) -> str:
            missing = [p for p in ("{original}", "{synthetic}") if p not in value]
            if missing:
                raise ValueError(f"must contain {' and '.join(missing)}")
            return value

    def process(self, batch: list[Sample]) -> list[Mapped | Failure]:
        cfg = self.config
        synthetic = self._synthetic_captions(batch)
        prompts: dict[str, dict[int, str]] = {}
        for sample in batch:
            found = synthetic[sample.id]
            if isinstance(found, dict):
                chunks = sample.chunks()
                prompts[sample.id] = {c: fill(cfg.prompt_template, chunks[c][0], text) for c, text in found.items()}
        task = GenerationTask(
            model_path=self.context.model_path(cfg.hf_llm, "hf_llm", self.name), prompts=prompts, seed=cfg.seed,
            max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_k=cfg.top_k,
            use_chat_template=cfg.use_chat_template,
        )
        fused = self.context.engine.run(task, batch)
        out: list[Mapped | Failure] = []
        for sample, result in zip(batch, fused):
            found = synthetic[sample.id]
            if isinstance(found, Failure):
                out.append(found)
            elif isinstance(result, Failure):
                out.append(result)
            elif not found:  # no images: nothing to fuse
                out.append(Mapped(sample))
            elif empty := [c for c, text in result.items() if not text]:
                out.append(Failure(f"{self.name}: sample {sample.id!r}: the LM returned an empty caption for chunk(s) {empty}"))
            else:
                new = self._fused_sample(sample, found, result)
                out.append(Mapped(sample if cfg.keep_original_sample else None, [new]))
        return out

    def _synthetic_captions(self, batch: list[Sample]) -> dict[str, dict[int, str] | Failure]:
        """Per sample, {chunk with images: synthetic caption}: from meta, else from the captioner."""
        cfg = self.config
        found: dict[str, dict[int, str] | Failure] = {}
        missing = []
        for sample in batch:
            chunks = [c for c, (_, images) in enumerate(sample.chunks()) if images]
            value = sample.meta.get(cfg.synthetic_key)
            if value is None:
                missing.append(sample)
                continue
            values = [value] if isinstance(value, str) else value
            if not isinstance(values, list) or len(values) != len(chunks) or not all(isinstance(v, str) for v in values):
                found[sample.id] = Failure(f"{self.name}: sample {sample.id!r}: meta[{cfg.synthetic_key!r}] must be a string "
                                           f"or a list of {len(chunks)} strings (one per chunk with images)")
            else:
                found[sample.id] = dict(zip(chunks, values))
        if missing and cfg.hf_img2seq is None:
            for sample in missing:
                has_images = bool(sample.images)
                found[sample.id] = Failure(f"{self.name}: sample {sample.id!r}: no meta[{cfg.synthetic_key!r}] and no hf_img2seq "
                                           "to caption it") if has_images else {}
        elif missing:
            task = CaptionTask(
                model_path=self.context.model_path(cfg.hf_img2seq, "hf_img2seq", self.name), seed=cfg.seed,
                prompt=cfg.caption_prompt, max_new_tokens=cfg.caption_max_new_tokens, temperature=cfg.temperature, top_k=cfg.top_k,
            )
            for sample, result in zip(missing, self.context.engine.run(task, missing)):
                if isinstance(result, Failure):
                    found[sample.id] = result
                    continue
                per_chunk: dict[int, list[str]] = {}
                for (c, j, _), caption in sorted(result.items()):
                    per_chunk.setdefault(c, []).append(caption)
                found[sample.id] = {c: " ".join(captions) for c, captions in per_chunk.items()}
        return found

    def _fused_sample(self, sample: Sample, synthetic: dict[int, str], fused: dict[int, str]) -> Sample:
        cfg = self.config
        parts = []
        for c, (text, images) in enumerate(sample.chunks()):
            body = fused.get(c, text)
            parts.append(" ".join([IMAGE_TOKEN] * len(images) + [body, CHUNK_END]))
        meta = dict(sample.meta)
        meta[cfg.synthetic_key] = [synthetic[c] for c in sorted(synthetic)]
        source = "meta" if cfg.synthetic_key in sample.meta else cfg.hf_img2seq
        record = synthesis_record(self.name, sample, cfg.hf_llm, cfg.seed, synthetic_from=source)
        return Sample(f"{sample.id}#fuse0", " ".join(parts), list(sample.images), with_provenance(meta, **record))


def fill(template: str, original: str, synthetic: str) -> str:
    """The template with its two placeholders filled (plain replacement: other braces stay as written)."""
    return template.replace("{original}", original).replace("{synthetic}", synthetic)
