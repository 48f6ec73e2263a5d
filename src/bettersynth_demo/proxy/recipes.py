"""The recipes the proxy comparison ships, as Data-Juicer recipe files.

Why a registry of factories: the similarity threshold is not a constant but
calibrated on clean held-out pairs once the scorer is trained (the challenge
teams' 0.28–0.32 were calibrated on real CLIP the same way), so a recipe is a
function of it. Add a recipe by registering another factory.

Example::

    @RECIPES.register("similarity-strict")
    def _strict(threshold: float) -> RecipeSpec:
        return RecipeSpec("CLIP similarity >= threshold + 0.05", [similarity_op(threshold + 0.05)])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bettersynth.core.registry import Registry
from bettersynth.engine.captioning import DEFAULT_CHAT_PROMPT

SCORER = "clip"  # the trained scorer, relative to the model root the pipeline gets
CAPTIONER = "captioner"  # the trained re-captioner, likewise


@dataclass(frozen=True)
class RecipeSpec:
    """A shipped recipe: the filter round, and the share of kept samples the captioner rewrites."""

    description: str
    filter_ops: list[dict[str, Any]]
    caption_fraction: float = 0.0


RecipeFactory = Callable[[float], RecipeSpec]  # calibrated similarity threshold -> recipe
RECIPES: Registry[RecipeFactory] = Registry("proxy recipe")


def similarity_op(min_score: float) -> dict[str, Any]:
    return {"image_text_similarity_filter": {"hf_clip": SCORER, "min_score": min_score, "max_score": 1.0}}


@RECIPES.register("no-filter")
def _no_filter(threshold: float) -> RecipeSpec:
    # min_score -1 keeps every pair (cosine >= -1) but still records the scores in MLflow.
    return RecipeSpec("every seed pair (scored, nothing dropped)", [similarity_op(-1.0)])


@RECIPES.register("similarity")
def _similarity(threshold: float) -> RecipeSpec:
    return RecipeSpec(f"words_num >= 10, CLIP similarity >= {threshold}",
                      [{"words_num_filter": {"min_num": 10}}, similarity_op(threshold)])


@RECIPES.register("similarity-recaption")
def _similarity_recaption(threshold: float) -> RecipeSpec:
    spec = _similarity(threshold)
    return RecipeSpec(spec.description + ", then 50 % re-captioned", spec.filter_ops, caption_fraction=0.5)


def write_recipe_files(name: str, spec: RecipeSpec, folder: Path) -> tuple[Path, Path]:
    """The filter and caption recipe YAMLs of one shipped recipe (Data-Juicer format)."""
    folder.mkdir(parents=True, exist_ok=True)
    filter_path, caption_path = folder / f"{name}_filter.yaml", folder / f"{name}_caption.yaml"
    filter_path.write_text(yaml.safe_dump({"name": name, "process": spec.filter_ops}, sort_keys=False))
    caption = [{"image_captioning_mapper": {"hf_img2seq": CAPTIONER, "prompt": DEFAULT_CHAT_PROMPT, "caption_num": 1,
                                            "keep_original_sample": False, "max_new_tokens": 40,
                                            "temperature": 0.3}}]
    caption_path.write_text(yaml.safe_dump({"name": f"{name}-caption", "process": caption}, sort_keys=False))
    return filter_path, caption_path
