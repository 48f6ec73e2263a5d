"""Early abort on constructed loss curves: the right seeds survive, for the right reason."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bettersynth.train.seeds import SeedSelection, seed_score, select_seeds

# Seed 2 starts badly and stays bad; seed 1 is noisy but fine; seed 0 is the best.
CURVES = {
    0: [5.0, 4.0, 3.0, 2.5, 2.4, 2.3],
    1: [5.0, 4.2, 3.4, 2.6, 2.5, 2.4],
    2: [5.0, 4.9, 4.8, 4.0, 3.9, 3.8],
}


def test_score_is_the_windowed_mean_up_to_the_decision_step():
    assert seed_score(CURVES[0], decide_after_steps=4, window=2) == pytest.approx((3.0 + 2.5) / 2)
    assert seed_score(CURVES[0], decide_after_steps=2, window=5) == pytest.approx(4.5)  # window clipped at step 1
    with pytest.raises(ValueError, match="needs 7"):
        seed_score(CURVES[0], decide_after_steps=7, window=1)


def test_poor_seed_is_aborted():
    decision = select_seeds(CURVES, SeedSelection(decide_after_steps=4, margin=0.5, window=2))
    assert decision.survivors == [0, 1]  # best first
    assert decision.aborted == [2]
    assert decision.best == pytest.approx(2.75) and decision.threshold == pytest.approx(3.25)
    assert decision.scores[2] == pytest.approx(4.4)
    assert "> threshold" in decision.reasons[2] and "<= threshold" in decision.reasons[1]


def test_only_steps_up_to_the_decision_count():
    """Seed 2 catches up after step 3, too late: a decision at step 3 drops it, later losses ignored."""
    curves = {0: [3.0, 2.0, 1.0, 1.0, 1.0], 2: [3.0, 3.0, 3.0, 0.5, 0.5]}
    assert select_seeds(curves, SeedSelection(decide_after_steps=3, margin=0.5)).survivors == [0]
    assert select_seeds(curves, SeedSelection(decide_after_steps=4, margin=0.4)).survivors == [2]


def test_relative_margin_and_survivor_cap():
    relative = SeedSelection(decide_after_steps=4, margin=0.1, relative=True)  # threshold 2.5 * 1.1 = 2.75
    assert select_seeds(CURVES, relative).survivors == [0, 1]
    capped = SeedSelection(decide_after_steps=4, margin=10.0, max_survivors=2)
    decision = select_seeds(CURVES, capped)
    assert decision.survivors == [0, 1] and decision.aborted == [2]
    assert "max_survivors" in decision.reasons[2]


def test_diverged_seed_is_aborted_and_all_diverged_is_an_error():
    curves = {0: [2.0, math.nan], 1: [2.0, 2.1], 3: [2.0, math.inf]}
    decision = select_seeds(curves, SeedSelection(decide_after_steps=2))  # infinite margin keeps finite ones
    assert decision.survivors == [1] and decision.aborted == [0, 3]
    assert decision.reasons[0] == "loss not finite"
    with pytest.raises(ValueError, match="every seed diverged"):
        select_seeds({0: [math.nan]}, SeedSelection())
    with pytest.raises(ValueError, match="seed 4: 1 losses"):
        select_seeds({4: [1.0]}, SeedSelection(decide_after_steps=2))


def test_default_policy_keeps_everyone_and_json_is_serialisable():
    import json

    decision = select_seeds(CURVES, SeedSelection())
    assert decision.survivors == [0, 1, 2] and decision.aborted == []
    assert json.loads(json.dumps(decision.to_json()))["scores"]["2"] == 5.0


@given(st.dictionaries(st.integers(0, 50), st.lists(st.floats(0.1, 10.0), min_size=3, max_size=3), min_size=1),
       st.floats(0, 5))
def test_best_always_survives_and_partition_is_exact(curves, margin):
    decision = select_seeds(curves, SeedSelection(decide_after_steps=3, margin=margin, window=2))
    assert sorted(decision.survivors + decision.aborted) == sorted(curves)
    best_seed = min(curves, key=lambda s: (sum(curves[s][1:3]) / 2, s))
    assert decision.survivors[0] == best_seed
    for s in decision.aborted:
        assert decision.scores[s] > decision.best + margin


def test_a_sweep_that_finished_stage_1_is_judged_at_its_end():
    """A decision at (or past) stage 1's length picks the best whole run; a shorter stage 1 is judged at its end."""
    from bettersynth.steps.train import decision_policy

    policy = SeedSelection(decide_after_steps=1200, window=2)
    curves = {0: [3.0, 2.0, 1.0], 1: [3.0, 1.5, 0.5]}
    judged = decision_policy(policy, curves, [True, True])
    assert judged.decide_after_steps == 3 and judged.window == 2
    assert select_seeds(curves, judged).survivors == [1, 0]
    assert decision_policy(policy, curves, [True, False]) is policy  # a paused seed: the policy as written
    with pytest.raises(ValueError, match="seed 0: 3 losses, the decision needs 1200"):
        select_seeds(curves, decision_policy(policy, curves, [False, False]))
