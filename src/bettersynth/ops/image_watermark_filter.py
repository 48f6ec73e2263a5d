"""Drop samples whose images probably carry a watermark.

Why: watermarked stock photos teach a captioner to hallucinate logos and
text overlays. The score is an image classifier's probability of class 1
("watermark", the index Data-Juicer reads), one value per distinct image;
stat ``image_watermark_prob``; an image passes when its probability is
<= ``prob_threshold`` (closed, as Data-Juicer's ``get_keep_boolean``), and
``any_or_all`` combines a sample's images. Default model
``amrul-hzz/watermark_detector`` (any ``AutoModelForImageClassification`` folder).

Example::

    - image_watermark_filter: {hf_watermark_model: amrul-hzz/watermark_detector, prob_threshold: 0.8}
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from bettersynth.core.sample import Sample
from bettersynth.engine import Failure
from bettersynth.engine.image_classification import ImageClassProbTask
from bettersynth.ops.base import Filter, OpConfig
from bettersynth.ops.image_text_similarity_filter import model_dir

WATERMARK_CLASS = 1  # Data-Juicer reads softmax(logits)[1] as P(watermark)


class ImageWatermarkFilter(Filter):
    name = "image_watermark_filter"
    stat_key = "image_watermark_prob"
    min_field, max_field = "min_prob", "prob_threshold"  # only an upper bound exists; min_prob is no option
    cacheable = True

    class Config(OpConfig):
        hf_watermark_model: str = "amrul-hzz/watermark_detector"  # classifier dir, relative to model_root
        prob_threshold: float = 0.8  # highest watermark probability kept (inclusive)
        any_or_all: Literal["any", "all"] = "any"  # keep if any / all images pass

    def bounds(self) -> tuple[float, float]:
        return float("-inf"), self.config.prob_threshold

    def model_dirs(self) -> list[Path]:
        return [model_dir(self.context, self.config.hf_watermark_model, "hf_watermark_model", self.name)]

    def compute_stats(self, batch: list[Sample]) -> list[list[float] | Failure]:
        task = ImageClassProbTask(model_path=self.model_dirs()[0], class_index=WATERMARK_CLASS)
        results = self.context.engine.run(task, batch)
        return [r if isinstance(r, Failure) else [p for _, p in sorted(r.items())] for r in results]
