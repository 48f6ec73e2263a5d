"""Keep samples whose images look good to a LAION-style aesthetics predictor.

Why: pretraining captions of ugly or degenerate images (screenshots, blank
frames, heavy compression) teach little. The score is the predictor's rating
of each image (a head on the normalised CLIP image embedding), divided by 10
for LAION predictors (their 0..10 scale, as Data-Juicer does) so bounds read
0..1; stat ``image_aesthetics_scores``, one value per distinct image.

``hf_scorer_model`` names a simple-aesthetics-predictor folder (V1, V2 linear
or V2 ReLU head), default ``shunk031/aesthetics-predictor-v2-sac-logos-ava1-l14-linearMSE``
(CLIP ViT-L/14 + the sac+logos+ava1 linear-MSE head). The /10 applies when
the folder's ``architectures`` names an ``AestheticsPredictor*`` class, which
is what Data-Juicer's name test (``shunk031/aesthetics-predictor`` in the
model name) stands for.

Example::

    - image_aesthetics_filter: {hf_scorer_model: shunk031/aesthetics-predictor-v2-sac-logos-ava1-l14-linearMSE, min_score: 0.5}
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import field_validator, model_validator

from bettersynth.core.sample import Sample
from bettersynth.engine import Failure
from bettersynth.engine.aesthetics import AestheticsTask
from bettersynth.ops.base import Filter, OpConfig
from bettersynth.ops.image_text_similarity_filter import model_dir

DEFAULT_SCORER = "shunk031/aesthetics-predictor-v2-sac-logos-ava1-l14-linearMSE"


class ImageAestheticsFilter(Filter):
    name = "image_aesthetics_filter"
    stat_key = "image_aesthetics_scores"
    cacheable = True

    class Config(OpConfig):
        hf_scorer_model: str = DEFAULT_SCORER  # predictor dir, relative to model_root ("" = this default)
        min_score: float = 0.5  # lowest score kept, 0..1 (inclusive)
        max_score: float = 1.0  # highest score kept, 0..1 (inclusive)
        any_or_all: Literal["any", "all"] = "any"  # keep if any / all images are in bounds

        @field_validator("hf_scorer_model")
        @classmethod
        def _default_when_empty(cls, value: str) -> str:
            return value or DEFAULT_SCORER  # Data-Juicer spells its default ""

        @model_validator(mode="after")
        def _ordered(self) -> "ImageAestheticsFilter.Config":
            if self.min_score > self.max_score:
                raise ValueError(f"min_score ({self.min_score}) must be <= max_score ({self.max_score})")
            return self

    def model_dirs(self) -> list[Path]:
        return [model_dir(self.context, self.config.hf_scorer_model, "hf_scorer_model", self.name)]

    def compute_stats(self, batch: list[Sample]) -> list[list[float] | Failure]:
        results = self.context.engine.run(AestheticsTask(model_path=self.model_dirs()[0]), batch)
        return [r if isinstance(r, Failure) else [score for _, score in sorted(r.items())] for r in results]
