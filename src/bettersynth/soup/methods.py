"""Soup methods (DOMAIN.md §6) and the ``make_soup`` entry point.

Why: the recipes in the literature differ only in which ingredients get which
weight; all of them write through the same streamed average.

Example::

    result = make_soup("greedy", runs, out / "soup", evaluate=textvqa_val)
    result.weights  # e.g. [0.5, 0.0, 0.5]: the second run was rejected
"""

from __future__ import annotations

import logging
import operator
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from bettersynth.core.registry import Registry
from bettersynth.soup.average import (
    DEFAULT_MAX_SHARD_BYTES,
    average_checkpoints,
    check_out_dir,
    copy_checkpoint,
    normalise_weights,
    publish,
)
from bettersynth.soup.base import Evaluate, SoupMethod, SoupRequest, SoupResult

log = logging.getLogger(__name__)

SOUPS: Registry[type[SoupMethod]] = Registry("soup", base=SoupMethod)

_ACCEPT = {"ge": operator.ge, "gt": operator.gt}


def _score_if_possible(request: SoupRequest) -> float | None:
    return None if request.evaluate is None else float(request.evaluate(request.out_dir))


@SOUPS.register("uniform")
class UniformSoup(SoupMethod):
    """theta = mean of the N checkpoints."""

    def mix(self, request: SoupRequest) -> SoupResult:
        weights = normalise_weights(None, len(request.ingredients))
        average_checkpoints(request.ingredients, weights, request.out_dir, request.max_shard_bytes)
        return SoupResult(request.out_dir, request.method, weights, score=_score_if_possible(request))


@SOUPS.register("weighted")
class WeightedSoup(SoupMethod):
    """theta = sum_i w_i theta_i with the user's non-negative weights, normalised to sum to 1."""

    takes_weights = True

    def mix(self, request: SoupRequest) -> SoupResult:
        if request.weights is None:
            raise ValueError("weights: the 'weighted' soup needs one weight per ingredient")
        weights = normalise_weights(request.weights, len(request.ingredients))
        average_checkpoints(request.ingredients, weights, request.out_dir, request.max_shard_bytes)
        return SoupResult(request.out_dir, request.method, weights, score=_score_if_possible(request))


@SOUPS.register("maximum")
class MaximumSoup(SoupMethod):
    """The best single ingredient by held-out score, copied (POINTS' baseline); first one wins ties."""

    def mix(self, request: SoupRequest) -> SoupResult:
        scores = request.ingredient_scores()
        best = max(range(len(scores)), key=scores.__getitem__)
        copy_checkpoint(request.ingredients[best], request.out_dir)
        weights = [1.0 if i == best else 0.0 for i in range(len(scores))]
        return SoupResult(request.out_dir, request.method, weights, score=scores[best])


@SOUPS.register("greedy")
class GreedySoup(SoupMethod):
    """Greedy soup (Wortsman et al. 2022, arXiv 2203.05482).

    Sort ingredients by held-out score, best first; start from the best; add each
    next candidate if the held-out score of the uniform average of the accepted
    ones plus it does not drop (``accept_if="ge"``, the paper) or strictly rises
    (``"gt"``, the reference code). The soup is the average of the accepted.
    Candidate soups are written next to ``out_dir``; the last accepted one is
    renamed into place, so the final soup is never computed twice.
    """

    def mix(self, request: SoupRequest) -> SoupResult:
        if request.evaluate is None:
            raise ValueError("evaluate: the 'greedy' soup needs an evaluate function")
        check_out_dir(request.out_dir)
        scores = request.ingredient_scores()
        order = sorted(range(len(scores)), key=lambda i: -scores[i])  # stable: ties keep input order
        accept = _ACCEPT[request.accept_if]
        accepted = [order[0]]
        best_score = scores[order[0]]
        steps = [_step(request, order[0], best_score, True)]
        request.out_dir.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{request.out_dir.name}.greedy-", dir=request.out_dir.parent))
        try:
            kept: Path | None = None  # the soup of the accepted ingredients, once there are two or more
            for candidate in order[1:]:
                trial = scratch / f"trial-{candidate}"
                paths = [request.ingredients[i] for i in (*accepted, candidate)]
                average_checkpoints(paths, None, trial, request.max_shard_bytes)
                score = float(request.evaluate(trial))
                taken = accept(score, best_score)
                steps.append(_step(request, candidate, score, taken))
                log.info("greedy soup: candidate %s scores %.6g (best %.6g): %s",
                         request.ingredients[candidate], score, best_score, "accepted" if taken else "rejected")
                if taken:
                    accepted.append(candidate)
                    best_score = score
                    if kept is not None:
                        shutil.rmtree(kept)
                    kept = trial
                else:
                    shutil.rmtree(trial)
            if kept is None:
                copy_checkpoint(request.ingredients[order[0]], request.out_dir)
            else:
                publish(kept, request.out_dir)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        weights = [1.0 / len(accepted) if i in accepted else 0.0 for i in range(len(scores))]
        return SoupResult(request.out_dir, request.method, weights, steps, best_score)


def _step(request: SoupRequest, index: int, score: float, accepted: bool) -> dict:
    return {"candidate": str(request.ingredients[index]), "index": index, "score": score, "accepted": accepted}


def make_soup(
    method: str,
    ingredients: Sequence[str | Path],
    out_dir: str | Path,
    *,
    scores: Sequence[float] | None = None,
    weights: Sequence[float] | None = None,
    evaluate: Evaluate | None = None,
    accept_if: Literal["ge", "gt"] = "ge",
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> SoupResult:
    """Make a soup with the registered ``method`` ('uniform', 'weighted', 'maximum', 'greedy')."""
    soup = SOUPS.get(method)
    request = SoupRequest(
        method=method,
        ingredients=[Path(p) for p in ingredients],
        out_dir=Path(out_dir),
        scores=None if scores is None else [float(s) for s in scores],
        weights=None if weights is None else [float(w) for w in weights],
        evaluate=evaluate,
        accept_if=accept_if,
        max_shard_bytes=max_shard_bytes,
    )
    if request.weights is not None and not soup.takes_weights:
        raise ValueError(f"weights: the {method!r} soup does not take weights (use 'weighted')")
    return soup().mix(request)
