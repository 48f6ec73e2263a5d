"""Model soups: average fine-tuned checkpoints into one (DOMAIN.md §6).

Example::

    from bettersynth.soup import make_soup, resolve_ingredients
    ingredients = resolve_ingredients(["ckpts/seed0", "<run id>", "vlm@champion"], "downloads")
    result = make_soup("uniform", [i.path for i in ingredients], "soups/ab")
"""

from bettersynth.soup.average import average_checkpoints, copy_checkpoint
from bettersynth.soup.base import SoupMethod, SoupRequest, SoupResult
from bettersynth.soup.checkpoint import Checkpoint, TensorInfo, check_compatible
from bettersynth.soup.ingredients import Ingredient, resolve_ingredients
from bettersynth.soup.methods import SOUPS, make_soup

__all__ = [
    "SOUPS",
    "Checkpoint",
    "Ingredient",
    "SoupMethod",
    "SoupRequest",
    "SoupResult",
    "TensorInfo",
    "average_checkpoints",
    "check_compatible",
    "copy_checkpoint",
    "make_soup",
    "resolve_ingredients",
]
