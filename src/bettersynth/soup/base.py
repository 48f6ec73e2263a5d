"""What every soup method takes and returns.

Why: one request type validated in one place, so each method only reads the
fields it needs, and a missing or stray input fails naming the field.

Example (a new method)::

    @SOUPS.register("first")
    class FirstSoup(SoupMethod):
        def mix(self, request: SoupRequest) -> SoupResult:
            copy_checkpoint(request.ingredients[0], request.out_dir)
            weights = [1.0] + [0.0] * (len(request.ingredients) - 1)
            return SoupResult(request.out_dir, request.method, weights)
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Literal

from bettersynth.soup.average import DEFAULT_MAX_SHARD_BYTES

Evaluate = Callable[[Path], float]


@dataclass
class SoupResult:
    """Where the soup went and how it was made."""

    out_dir: Path
    method: str
    weights: list[float]  # per ingredient, in the caller's order; 0 for rejected ones
    steps: list[dict] = field(default_factory=list)  # greedy: candidate, index, score, accepted
    score: float | None = None  # held-out score of the soup, when known


@dataclass(frozen=True)
class SoupRequest:
    """Inputs of one soup; validated on construction."""

    method: str  # registry name of the soup method
    ingredients: list[Path]  # checkpoint directories
    out_dir: Path  # must not exist, or be empty
    scores: list[float] | None = None  # held-out score per ingredient, higher is better
    weights: list[float] | None = None  # only for 'weighted'; normalised to sum to 1
    evaluate: Evaluate | None = None  # held-out score of a checkpoint directory
    accept_if: Literal["ge", "gt"] = "ge"  # greedy: keep a candidate if the score is >= (paper) or > (ref. code)
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES  # output shard size limit

    def __post_init__(self) -> None:
        if not self.ingredients:
            raise ValueError("ingredients: need at least one checkpoint")
        count = len(self.ingredients)
        if self.scores is not None:
            if len(self.scores) != count:
                raise ValueError(f"scores: got {len(self.scores)} for {count} ingredients")
            if not all(math.isfinite(s) for s in self.scores):
                raise ValueError(f"scores: must be finite, got {self.scores}")
        if self.weights is not None and len(self.weights) != count:
            raise ValueError(f"weights: got {len(self.weights)} for {count} ingredients")
        if self.accept_if not in ("ge", "gt"):
            raise ValueError(f"accept_if: must be 'ge' or 'gt', got {self.accept_if!r}")

    def ingredient_scores(self) -> list[float]:
        """The given scores, or ``evaluate`` run on each ingredient when none were given."""
        if self.scores is not None:
            return list(self.scores)
        if self.evaluate is None:
            raise ValueError(f"scores: the {self.method!r} soup needs scores or an evaluate function")
        scores = [float(self.evaluate(path)) for path in self.ingredients]
        if not all(math.isfinite(s) for s in scores):
            raise ValueError(f"evaluate: returned a non-finite ingredient score in {scores}")
        return scores


class SoupMethod(ABC):
    """A way to turn ingredients into one checkpoint; registered in ``SOUPS``."""

    takes_weights: ClassVar[bool] = False  # whether user weights mean anything to this method

    @abstractmethod
    def mix(self, request: SoupRequest) -> SoupResult:
        """Write the soup to ``request.out_dir`` and describe it."""
