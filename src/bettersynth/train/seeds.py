"""Early abort of poor seeds: judge every seed's stage-1 loss after a few steps, keep the good ones.

Why: training a 2B VLM is sensitive to initialisation and data order, and a
run's fate shows in its early stage-1 loss (DOMAIN.md §1). Launching K seeds
and stopping the ones whose early loss trails the best by more than a margin
spends the GPU hours on runs that can win. The decision is a pure function of
the loss curves, so it is tested on constructed curves and logged verbatim.

Example::

    policy = SeedSelection(decide_after_steps=50, margin=0.05, window=10)
    decision = select_seeds({0: losses0, 1: losses1, 2: losses2}, policy)
    decision.survivors  # e.g. [0, 2]
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field


class SeedSelection(BaseModel):
    """When and how strictly stage-1 runs are judged."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    decide_after_steps: int = Field(1, gt=0)  # stage-1 optimizer steps every seed runs before the decision
    margin: float = Field(math.inf, ge=0)  # abort a seed whose score exceeds the best by more than this (inf: keep all)
    window: int = Field(1, gt=0)  # score = mean loss of the last `window` steps up to the decision (smooths noise)
    relative: bool = False  # margin as a fraction of the best score instead of absolute loss units
    max_survivors: int | None = Field(None, gt=0)  # optionally keep at most this many (the best-scoring)


@dataclass(frozen=True)
class SeedDecision:
    """The outcome, with everything needed to audit it."""

    survivors: list[int]  # seeds that go on to stage 2, best first
    aborted: list[int]  # seeds stopped after stage-1's first steps
    scores: dict[int, float]  # each seed's score (windowed mean loss at the decision step)
    best: float  # the lowest score
    threshold: float  # seeds scoring above this were aborted
    reasons: dict[int, str]  # one line per seed

    def to_json(self) -> dict:
        return asdict(self) | {"scores": {str(k): v for k, v in self.scores.items()},
                               "reasons": {str(k): v for k, v in self.reasons.items()}}


def seed_score(losses: Sequence[float], decide_after_steps: int, window: int) -> float:
    """Mean of the losses of steps ``decide_after_steps - window + 1 .. decide_after_steps`` (1-based)."""
    if len(losses) < decide_after_steps:
        raise ValueError(f"{len(losses)} losses, the decision needs {decide_after_steps}")
    tail = losses[max(0, decide_after_steps - window) : decide_after_steps]
    return sum(tail) / len(tail)


def select_seeds(curves: Mapping[int, Sequence[float]], policy: SeedSelection) -> SeedDecision:
    """Keep the seeds whose score is within ``margin`` of the best; a NaN/inf loss is always aborted."""
    if not curves:
        raise ValueError("curves is empty: no seed to select from")
    scores: dict[int, float] = {}
    for seed, losses in curves.items():
        try:
            scores[seed] = seed_score(list(losses), policy.decide_after_steps, policy.window)
        except ValueError as exc:
            raise ValueError(f"seed {seed}: {exc}") from None
    finite = {s: v for s, v in scores.items() if math.isfinite(v)}
    if not finite:
        raise ValueError(f"every seed diverged (scores {scores}): nothing to continue")
    best = min(finite.values())
    allowed = policy.margin * abs(best) if policy.relative else policy.margin
    threshold = best + allowed
    ranked = sorted(finite, key=lambda s: (finite[s], s))
    survivors = [s for s in ranked if finite[s] <= threshold]
    reasons = {s: f"score {finite[s]:.4f} <= threshold {threshold:.4f}" for s in survivors}
    if policy.max_survivors is not None:
        for s in survivors[policy.max_survivors:]:
            reasons[s] = f"ranked {ranked.index(s) + 1}, beyond max_survivors {policy.max_survivors}"
        survivors = survivors[: policy.max_survivors]
    for s in scores:
        if s not in reasons:
            reasons[s] = f"score {scores[s]:.4f} > threshold {threshold:.4f}" if s in finite else "loss not finite"
    aborted = sorted(s for s in scores if s not in survivors)
    return SeedDecision(survivors, aborted, scores, best, threshold, reasons)

