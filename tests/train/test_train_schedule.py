import math

import pytest

from bettersynth.train import SCHEDULES, cosine_lr, warmup_steps_for


def test_warmup_is_rounded_up():
    assert warmup_steps_for(100, 0.03) == 3
    assert warmup_steps_for(4, 0.03) == 1
    assert warmup_steps_for(10, 0.0) == 0


def test_linear_warmup_then_cosine_to_zero():
    total, warmup, peak = 100, 4, 1e-3
    lrs = [cosine_lr(s, total, warmup, peak) for s in range(total)]
    assert lrs[:4] == pytest.approx([0.25e-3, 0.5e-3, 0.75e-3, 1e-3])
    assert lrs[4] == pytest.approx(peak)  # cosine starts at the peak
    # Half-way through the decay the cosine is at half the peak.
    assert lrs[4 + 48] == pytest.approx(peak * 0.5 * (1 + math.cos(math.pi * 48 / 96)))
    assert lrs[4 + 48] == pytest.approx(0.5e-3)
    assert lrs[-1] == pytest.approx(peak * 0.5 * (1 + math.cos(math.pi * 95 / 96)))
    assert 0 < lrs[-1] < 1e-6
    assert cosine_lr(total, total, warmup, peak) == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))  # monotone decay


def test_without_warmup_first_step_is_peak_and_registry_finds_it():
    assert cosine_lr(0, 10, 0, 2e-5) == pytest.approx(2e-5)
    assert SCHEDULES.get("cosine") is cosine_lr
    with pytest.raises(ValueError, match="did you mean"):
        SCHEDULES.get("cosin")
