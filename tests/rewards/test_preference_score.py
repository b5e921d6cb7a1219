"""The appendix-L preference-aware evaluation score, on hand-computed examples."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from orchestra_jax.rewards.preference_score import preference_score, preference_scores

# Two tools. Example 0 solved, example 1 solved, example 2 failed.
POLICY = dict(
    tool_counts=np.array([[2.0, 0.0], [1.0, 3.0], [5.0, 5.0]]),
    outcome=np.array([1, 1, 0]),
    cost=np.array([2.0, 0.5, 1.0]),
    latency=np.array([10.0, 4.0, 3.0]),
)
BASE = dict(
    base_tool_counts=np.array([[4.0, 1.0], [0.0, 2.0], [1.0, 1.0]]),
    base_outcome=np.array([0, 1, 1]),
    base_cost=np.array([3.0, 6.0, 1.0]),
    base_latency=np.array([20.0, 2.0, 3.0]),
)


def scores(preference, **overrides):
    kwargs = {**POLICY, **BASE, **overrides}
    return np.asarray(
        preference_scores(
            kwargs["tool_counts"],
            kwargs["outcome"],
            kwargs["cost"],
            kwargs["latency"],
            preference,
            kwargs["base_tool_counts"],
            kwargs["base_outcome"],
            kwargs["base_cost"],
            kwargs["base_latency"],
        )
    )


def test_per_example_scores_follow_the_appendix_formula():
    got = scores(np.ones(5))
    # Example 0: tools 2/max(1,4)=.5, 0/1=0; outcome 1/max(1,0)=1; cost 3/max(1,2)=1.5;
    #            latency 20/max(1,10)=2 -> 5.0.
    # Example 1: tools 1/1=1, 3/2=1.5; outcome 1/1=1; cost 6/max(1,.5)=6; latency 2/4=.5 -> 10.
    # Example 2: failed -> 0, however good its ratios.
    np.testing.assert_allclose(got, [5.0, 10.0, 0.0])


def test_total_score_is_the_sum_and_preferences_weight_coordinates():
    pref = np.array([0.0, 1.0, 1.0, 0.0, 0.0])  # ignore tool 0, cost and latency
    np.testing.assert_allclose(scores(pref), [1.0, 2.5, 0.0])
    total = preference_score(*POLICY.values(), pref, *BASE.values())
    assert float(total) == pytest.approx(3.5)


def test_spending_less_than_the_base_scores_higher():
    cheap = scores(np.array([0, 0, 0, 1.0, 0]), cost=np.array([1.0, 0.5, 1.0]))
    dear = scores(np.array([0, 0, 0, 1.0, 0]), cost=np.array([3.0, 0.5, 1.0]))
    assert cheap[0] > dear[0]


def test_per_example_preference_rows_and_jit():
    pref = np.array([[1.0, 0, 0, 0, 0], [0, 0, 0, 0, 1.0], [1.0, 1, 1, 1, 1]])
    eager = scores(pref)
    np.testing.assert_allclose(eager, [0.5, 0.5, 0.0])
    jitted = jax.jit(preference_scores)(*POLICY.values(), pref, *BASE.values())
    np.testing.assert_allclose(jitted, eager)


def test_floor_is_a_parameter_because_units_matter():
    kwargs = [*POLICY.values(), np.array([0, 0, 0, 1.0, 0]), *BASE.values()]
    # With cost in USD below 1, the default floor hides the policy's own cost; a floor of
    # 0.1 lets it count: example 1 scores 6 / .5 = 12 instead of 6.
    np.testing.assert_allclose(preference_scores(*kwargs)[1], 6.0)
    np.testing.assert_allclose(preference_scores(*kwargs, floor=0.1)[1], 12.0)


def test_mismatched_shapes_are_named():
    with pytest.raises(ValueError, match="base_tool_counts"):
        scores(np.ones(5), base_tool_counts=np.ones((3, 3)))
    with pytest.raises(ValueError, match="preference"):
        scores(np.ones(4))
    with pytest.raises(ValueError, match="base_cost"):
        scores(np.ones(5), base_cost=np.ones(2))
