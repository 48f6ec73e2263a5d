"""Learning-rate schedules: the LR of every optimizer step, written out.

Why: the schedule is part of the recipe (linear warmup over 3% of the steps,
then cosine to zero); a plain function of the step number is easy to test and
to plot, and a new schedule is one registered function.

Example::

    lr = SCHEDULES.get("cosine")(step=10, total_steps=100, warmup_steps=3, peak_lr=1e-3)
"""

from __future__ import annotations

import math
from typing import Protocol

from bettersynth.core.registry import Registry


class Schedule(Protocol):
    def __call__(self, step: int, total_steps: int, warmup_steps: int, peak_lr: float) -> float: ...


SCHEDULES: Registry[Schedule] = Registry("lr schedule")


def warmup_steps_for(total_steps: int, warmup_ratio: float) -> int:
    """Warmup length in whole steps, rounded up as the HF Trainer does (3% of 4 steps -> 1)."""
    return math.ceil(total_steps * warmup_ratio)


@SCHEDULES.register("cosine")
def cosine_lr(step: int, total_steps: int, warmup_steps: int, peak_lr: float) -> float:
    """LR for optimizer step ``step`` (0-based, the update about to be made).

    Warmup: rises linearly, reaching ``peak_lr`` on the last warmup step, so
    that the very first update is not wasted at LR 0. Then a half cosine from
    ``peak_lr`` at step ``warmup_steps`` down to 0 at step ``total_steps`` (one
    past the last step, so the last update still moves the weights).
    """
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak_lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
