"""Data operators. Importing this package registers every operator in ``OPERATORS``.

Registration is explicit here (one place to see the whole set); each module
only defines its class.
"""

from bettersynth.ops.base import OPERATORS, Decision, Filter, Mapped, Mapper, OpConfig, OpContext, Operator
from bettersynth.ops.capfusion_mapper import CapFusionMapper
from bettersynth.ops.document_deduplicator import DocumentDeduplicator
from bettersynth.ops.document_minhash_deduplicator import DocumentMinhashDeduplicator
from bettersynth.ops.document_simhash_deduplicator import DocumentSimhashDeduplicator
from bettersynth.ops.image_aesthetics_filter import ImageAestheticsFilter
from bettersynth.ops.image_aspect_ratio_filter import ImageAspectRatioFilter
from bettersynth.ops.image_captioning_mapper import ImageCaptioningMapper
from bettersynth.ops.image_deduplicator import ImageDeduplicator
from bettersynth.ops.image_diffusion_mapper import ImageDiffusionMapper
from bettersynth.ops.image_shape_filter import ImageShapeFilter
from bettersynth.ops.image_size_filter import ImageSizeFilter
from bettersynth.ops.image_text_matching_filter import ImageTextMatchingFilter
from bettersynth.ops.image_text_perplexity_filter import ImageTextPerplexityFilter
from bettersynth.ops.image_text_similarity_filter import ImageTextSimilarityFilter
from bettersynth.ops.image_watermark_filter import ImageWatermarkFilter
from bettersynth.ops.llm_perplexity_filter import LLMPerplexityFilter
from bettersynth.ops.phrase_grounding_recall_filter import PhraseGroundingRecallFilter
from bettersynth.ops.words_num_filter import WordsNumFilter

for _op in (
    WordsNumFilter,
    ImageTextSimilarityFilter,
    ImageCaptioningMapper,
    CapFusionMapper,
    ImageDiffusionMapper,
    ImageSizeFilter,
    ImageAspectRatioFilter,
    ImageShapeFilter,
    ImageTextMatchingFilter,
    ImageAestheticsFilter,
    ImageWatermarkFilter,
    LLMPerplexityFilter,
    ImageTextPerplexityFilter,
    PhraseGroundingRecallFilter,
    ImageDeduplicator,
    DocumentDeduplicator,
    DocumentSimhashDeduplicator,
    DocumentMinhashDeduplicator,
):
    OPERATORS.register(_op.name)(_op)
del _op

__all__ = [
    "OPERATORS",
    "Decision",
    "DocumentDeduplicator",
    "DocumentMinhashDeduplicator",
    "DocumentSimhashDeduplicator",
    "Filter",
    "ImageAestheticsFilter",
    "ImageAspectRatioFilter",
    "ImageShapeFilter",
    "ImageSizeFilter",
    "ImageCaptioningMapper",
    "ImageDeduplicator",
    "CapFusionMapper",
    "ImageDiffusionMapper",
    "ImageTextPerplexityFilter",
    "ImageTextMatchingFilter",
    "ImageTextSimilarityFilter",
    "ImageWatermarkFilter",
    "LLMPerplexityFilter",
    "Mapped",
    "Mapper",
    "OpConfig",
    "OpContext",
    "Operator",
    "PhraseGroundingRecallFilter",
    "WordsNumFilter",
]
