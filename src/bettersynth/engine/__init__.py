"""The single inference path every model-using operator goes through (STYLE rule 3)."""

from bettersynth.engine import (  # noqa: F401  (register their loaders)
    aesthetics,
    hf_loaders,  # noqa: F401  (registers the hf_* loaders)
    image_classification,
    itm,
    open_clip_loader,
)
from bettersynth.engine.captioning import CaptionTask, SeededSampling
from bettersynth.engine.clip_similarity import ClipSimilarityTask
from bettersynth.engine.inference import Engine, EngineSettings
from bettersynth.engine.models import MODEL_LOADERS, ModelBundle, clear_model_cache, load_model
from bettersynth.engine.task import Failure, InferenceTask, Row, derive_seed, image_rows

__all__ = [
    "CaptionTask",
    "ClipSimilarityTask",
    "Engine",
    "EngineSettings",
    "Failure",
    "InferenceTask",
    "MODEL_LOADERS",
    "ModelBundle",
    "Row",
    "SeededSampling",
    "clear_model_cache",
    "derive_seed",
    "image_rows",
    "load_model",
]
