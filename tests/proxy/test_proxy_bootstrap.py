"""The paired bootstrap behind the proxy's gain intervals, on numbers whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from bettersynth.reports.bootstrap import paired_bootstrap


def test_a_clear_positive_shift_gives_an_interval_above_zero() -> None:
    rng = np.random.default_rng(1)
    control = rng.normal(60.0, 3.0, size=5)  # seeds differ a lot from each other...
    treatment = control + 5.0 + rng.normal(0.0, 1.0, size=5)  # ...but each gains about 5 over its own control
    gain = paired_bootstrap(treatment, control)
    assert gain.low > 0 and not gain.includes_zero and gain.n == 5
    assert gain.low <= gain.mean <= gain.high and gain.mean == pytest.approx(float(np.mean(treatment - control)))
    assert "includes 0" not in gain.describe()


def test_no_shift_gives_an_interval_that_includes_zero_and_says_so() -> None:
    control = [60.0, 55.0, 62.0, 58.0, 61.0]
    gain = paired_bootstrap([c + d for c, d in zip(control, [-1.5, 1.0, 0.5, -0.5, 0.5])], control)
    assert gain.includes_zero and gain.describe().endswith("includes 0: no gain shown")


def test_pairing_removes_what_the_seeds_share() -> None:
    """Unpaired, a 2-point gain drowns in a 10-point seed spread; paired by seed it stands out."""
    control = [50.0, 60.0, 70.0, 55.0, 65.0]
    treatment = [c + 2.0 + d for c, d in zip(control, [0.3, -0.2, 0.1, -0.3, 0.1])]
    assert paired_bootstrap(treatment, control).low > 1.5
    shuffled = paired_bootstrap(treatment, control[1:] + control[:1])  # pairs broken
    assert shuffled.includes_zero


def test_the_interval_is_reproducible_and_a_constant_gain_is_exact() -> None:
    a, b = [1.0, 4.0, 2.0, 8.0], [0.0, 1.0, 1.0, 2.0]
    assert paired_bootstrap(a, b) == paired_bootstrap(a, b)
    constant = paired_bootstrap([3.0, 5.0, 9.0], [1.0, 3.0, 7.0])
    assert (constant.low, constant.mean, constant.high) == (2.0, 2.0, 2.0)


def test_under_no_true_gain_most_intervals_include_zero() -> None:
    """Percentile intervals of 5 pairs are narrow (about 85 % coverage, not 95 %): the check is loose."""
    rng = np.random.default_rng(7)
    covered = [paired_bootstrap(rng.normal(0, 2, 5), np.zeros(5), resamples=2000, seed=i).includes_zero
               for i in range(200)]
    assert 0.75 <= np.mean(covered) <= 0.99


@pytest.mark.parametrize("treatment, control, match", [([1.0, 2.0], [1.0], "pair up"), ([1.0], [2.0], "at least 2")])
def test_bad_input_is_refused(treatment, control, match) -> None:
    with pytest.raises(ValueError, match=match):
        paired_bootstrap(treatment, control)
