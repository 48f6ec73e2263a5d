"""Keep samples whose text a causal LM finds neither too surprising nor too predictable.

Why: Data-Juicer's ``llm_perplexity_filter`` runs the LM one sample at a time;
here samples are right-padded into batches on one model copy. The score is
Data-Juicer's: exp(mean NLL of the response tokens) of ``query + ' ' +
response``, with the query and response built from templates (defaults: no
query, the whole caption as response). Special tokens are removed from the
text first, so ``<__dj__image>`` is never scored as text.

Example (recipe)::

    - llm_perplexity_filter: {hf_model: qwen2.5-0.5b, min_score: 1, max_score: 100}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import field_validator, model_validator

from bettersynth.core.sample import Sample, clean_text
from bettersynth.engine import Failure
from bettersynth.engine.perplexity import CausalLMPerplexityTask
from bettersynth.ops.base import Filter, OpConfig

SUPPORTED_MODEL_PARAMS = frozenset({"max_length"})


def template_fields(sample: Sample) -> dict[str, Any]:
    """What a template may name: ``{text}`` (special tokens removed), ``{id}`` and the sample's meta keys."""
    return {**sample.meta, "id": sample.id, "text": clean_text(sample.text)}


class LLMPerplexityFilter(Filter):
    name = "llm_perplexity_filter"
    stat_key = "llm_perplexity"
    cacheable = True

    class Config(OpConfig):
        hf_model: str = "Qwen/Qwen2.5-0.5B"  # causal LM dir, relative to model_root
        model_params: dict[str, Any] | None = None  # only max_length (tokens kept, from the end) is supported
        min_score: float = 1.0  # lowest perplexity kept (inclusive)
        max_score: float = 100.0  # highest perplexity kept (inclusive)
        query_template: str | None = None  # unscored prefix, e.g. "Describe the image:"; None = none
        response_template: str | None = None  # scored text; None = "{text}"

        @field_validator("model_params")
        @classmethod
        def _known_params(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
            unknown = sorted(set(value or {}) - SUPPORTED_MODEL_PARAMS)
            if unknown:
                raise ValueError(f"model_params {unknown} not supported (models load from local dirs; only {sorted(SUPPORTED_MODEL_PARAMS)})")
            length = (value or {}).get("max_length")
            if length is not None and (not isinstance(length, int) or length < 2):
                raise ValueError(f"model_params.max_length must be an integer >= 2, got {length!r}")
            return value

        @model_validator(mode="after")
        def _ordered(self) -> LLMPerplexityFilter.Config:
            if self.min_score > self.max_score:
                raise ValueError(f"min_score ({self.min_score}) must be <= max_score ({self.max_score})")
            return self

    def model_dirs(self) -> list[Path]:
        return [self.context.model_path(self.config.hf_model, "hf_model", self.name)]

    def _pair(self, sample: Sample) -> tuple[str, str] | Failure:
        fields = template_fields(sample)
        try:
            query = (self.config.query_template or "").format(**fields)
            response = (self.config.response_template or "{text}").format(**fields).strip()
        except (KeyError, IndexError, ValueError) as exc:
            return Failure(f"{self.name}: sample {sample.id!r}: template cannot be filled ({type(exc).__name__}: {exc})")
        return query, response

    def compute_stats(self, batch: list[Sample]) -> list[float | None | Failure]:
        pairs = [self._pair(sample) for sample in batch]
        good = [i for i, p in enumerate(pairs) if not isinstance(p, Failure)]
        task = CausalLMPerplexityTask(
            model_path=self.model_dirs()[0],
            pairs=[pairs[i] for i in good],
            max_length=(self.config.model_params or {}).get("max_length"),
        )
        stats: list[Any] = list(pairs)
        for i, result in zip(good, self.context.engine.run(task, [batch[i] for i in good])):
            # None: nothing to score (empty text); the keep rule filters it below min_score.
            stats[i] = result if isinstance(result, Failure) else result.get(0)
        return stats

    def score_key(self, sample: Sample) -> str | None:
        """The score depends on the formatted query and response only (not on images, but on
        meta when a template names it)."""
        pair = self._pair(sample)
        if isinstance(pair, Failure):
            return None
        return super().score_key(Sample(id=sample.id, text=json.dumps(pair)))
