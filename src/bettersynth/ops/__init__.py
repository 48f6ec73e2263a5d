"""Data operators. Importing this package registers every operator in ``OPERATORS``.

Registration is explicit here (one place to see the whole set); each module
only defines its class.
"""

from bettersynth.ops.base import OPERATORS, Decision, Filter, Mapped, Mapper, OpConfig, OpContext, Operator
from bettersynth.ops.image_aspect_ratio_filter import ImageAspectRatioFilter
from bettersynth.ops.image_captioning_mapper import ImageCaptioningMapper
from bettersynth.ops.image_shape_filter import ImageShapeFilter
from bettersynth.ops.image_size_filter import ImageSizeFilter
from bettersynth.ops.image_text_similarity_filter import ImageTextSimilarityFilter
from bettersynth.ops.words_num_filter import WordsNumFilter

for _op in (
    WordsNumFilter,
    ImageTextSimilarityFilter,
    ImageCaptioningMapper,
    ImageSizeFilter,
    ImageAspectRatioFilter,
    ImageShapeFilter,
):
    OPERATORS.register(_op.name)(_op)
del _op

__all__ = [
    "OPERATORS",
    "Decision",
    "Filter",
    "ImageAspectRatioFilter",
    "ImageShapeFilter",
    "ImageSizeFilter",
    "ImageCaptioningMapper",
    "ImageTextSimilarityFilter",
    "Mapped",
    "Mapper",
    "OpConfig",
    "OpContext",
    "Operator",
    "WordsNumFilter",
]
