"""The ToolOrchestra reward on hand-built groups: the paper's formula, eager and under jit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from orchestra_jax.rewards import feature_vector, group_minmax_normalize, toolorchestra_reward

REWARD_JIT = jax.jit(toolorchestra_reward)


def reference_reward(counts, outcome, cost, latency, preference, groups):
    """The paper's formula written as plainly as possible: loops over groups and coordinates."""
    counts = np.asarray(counts, float)
    features = np.concatenate(
        [counts, np.c_[outcome], -np.c_[np.asarray(cost, float)], -np.c_[latency]], axis=1
    )
    preference = np.broadcast_to(np.asarray(preference, float), features.shape)
    rewards = np.zeros(len(features))
    for group in set(np.asarray(groups).tolist()):
        rows = np.flatnonzero(np.asarray(groups) == group)
        for i in rows:
            total = 0.0
            for k in range(features.shape[1]):
                lo, hi = features[rows, k].min(), features[rows, k].max()
                norm = 0.0 if hi == lo else (features[i, k] - lo) / (hi - lo)
                total += norm * preference[i, k]
            rewards[i] = total if outcome[i] == 1 else 0.0
    return rewards


def both(*args, **kwargs):
    """Eager and jitted results, which must agree."""
    eager = np.asarray(toolorchestra_reward(*args, **kwargs))
    jitted = np.asarray(REWARD_JIT(*args, **kwargs))
    np.testing.assert_allclose(eager, jitted, rtol=1e-6, atol=1e-6)
    return eager


def test_hand_built_group_matches_paper_formula_by_hand():
    # Group 7: three rollouts, two tools. Group 3: one rollout (every coordinate max = min).
    counts = [[1, 0], [2, 0], [0, 1], [3, 3]]
    outcome = [1, 1, 0, 1]
    cost = [0.1, 0.2, 0.3, 0.4]
    latency = [1.0, 2.0, 3.0, 4.0]
    preference = np.ones((4, 5))
    rewards = both(counts, outcome, cost, latency, preference, np.array([7, 7, 7, 3]))
    # Row 0: tool0 (1-0)/2=.5, tool1 0, outcome 1, -cost (-.1+.3)/.2=1, -latency 1 -> 3.5.
    # Row 1: tool0 1, tool1 0, outcome 1, -cost .5, -latency .5 -> 3.0.
    # Row 2 failed -> 0. Row 3 alone in its group: all coordinates max = min -> 0.
    np.testing.assert_allclose(rewards, [3.5, 3.0, 0.0, 0.0], atol=1e-6)


def test_coordinate_with_max_equal_min_contributes_zero():
    # Equal cost in the group: a huge cost weight must change nothing.
    counts = [[1], [2], [3]]
    args = ([1, 1, 1], [0.5, 0.5, 0.5], [1.0, 2.0, 4.0])
    light = both(counts, *args, np.array([1.0, 1.0, 0.0, 1.0]), np.zeros(3, np.int32))
    heavy = both(counts, *args, np.array([1.0, 1.0, 1000.0, 1.0]), np.zeros(3, np.int32))
    np.testing.assert_allclose(light, heavy, atol=1e-6)
    # All correct too: the outcome coordinate is max = min, so it adds nothing either.
    np.testing.assert_allclose(light, [0.0 + 1.0, 0.5 + 2 / 3, 1.0 + 0.0], atol=1e-6)


def test_failed_rollouts_get_zero_but_still_set_the_group_range():
    counts = [[0], [0], [0]]
    cost = [0.0, 1.0, 2.0]
    latency = [1.0, 1.0, 1.0]
    pref = np.array([0.0, 0.0, 1.0, 0.0])  # only cost matters
    groups = np.zeros(3, np.int32)
    rewards = both(counts, [0, 1, 1], cost, latency, pref, groups)
    # The failed, cheapest rollout gets 0 yet is the group's max of -cost: row 1 sits at .5.
    np.testing.assert_allclose(rewards, [0.0, 0.5, 0.0], atol=1e-6)
    # All failed: every reward is 0, whatever the preferences.
    assert not both(counts, [0, 0, 0], cost, latency, np.ones(4), groups).any()


def test_outcome_coordinate_rewards_the_solvers_of_a_mixed_group():
    rewards = both(
        [[0], [0]], [1, 0], [1.0, 1.0], [1.0, 1.0], np.array([0, 1, 0, 0]), np.zeros(2, np.int32)
    )
    np.testing.assert_allclose(rewards, [1.0, 0.0])


def test_preference_that_zeroes_a_tool_makes_its_counts_irrelevant():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 5, size=(8, 3))
    outcome = np.array([1, 1, 0, 1, 1, 1, 0, 1])
    cost, latency = rng.uniform(0.01, 1, 8), rng.uniform(1, 60, 8)
    groups = np.repeat([0, 1], 4)
    pref = np.array([0.0, 1.0, 0.5, 1.0, 0.3, 0.2])  # tool 0 ("avoid this model") weighs 0
    base = both(counts, outcome, cost, latency, pref, groups)
    other = counts.copy()
    other[:, 0] = rng.integers(0, 50, size=8)
    np.testing.assert_allclose(both(other, outcome, cost, latency, pref, groups), base, atol=1e-6)
    # Whereas with weight on tool 0 the same change does move the rewards.
    pref[0] = 1.0
    assert not np.allclose(
        both(other, outcome, cost, latency, pref, groups),
        both(counts, outcome, cost, latency, pref, groups),
    )


def test_random_batches_match_the_plain_reference():
    rng = np.random.default_rng(1)
    for _ in range(5):
        n, k = 24, 4
        counts = rng.integers(0, 3, size=(n, k))
        outcome = rng.integers(0, 2, size=n)
        cost = rng.choice([0.1, 0.2, 0.5], size=n)  # repeats, so ties and max = min happen
        latency = rng.uniform(1, 30, size=n)
        pref = rng.uniform(0, 1, size=(n, k + 3))
        groups = rng.choice([5, 11, 42, 1000], size=n)  # arbitrary ids, interleaved rows
        expected = reference_reward(counts, outcome, cost, latency, pref, groups)
        got = both(counts, outcome, cost, latency, pref, groups)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_groups_do_not_leak_into_each_other():
    counts = np.array([[1], [3], [100], [0]])
    args = ([1, 1, 1, 1], [0.1, 0.1, 9.0, 0.0], [1.0, 1.0, 1.0, 1.0], np.ones(4))
    together = both(counts, *args, np.array([0, 0, 1, 1]))
    alone = both(counts[:2], *(a[:2] for a in args[:3]), args[3], np.array([0, 0]))
    np.testing.assert_allclose(together[:2], alone, atol=1e-6)


def test_padding_rows_neither_move_the_range_nor_get_reward():
    counts = [[1], [2], [99]]
    outcome, cost, latency = [1, 1, 1], [0.2, 0.1, 0.0], [3.0, 4.0, 0.0]
    groups = np.zeros(3, np.int32)
    valid = np.array([True, True, False])
    padded = both(counts, outcome, cost, latency, np.ones(4), groups, valid)
    real = both(counts[:2], outcome[:2], cost[:2], latency[:2], np.ones(4), groups[:2])
    np.testing.assert_allclose(padded[:2], real, atol=1e-6)
    assert padded[2] == 0.0


def test_non_finite_cost_does_not_poison_its_group():
    rewards = both(
        [[0], [0], [0]],
        [1, 1, 1],
        [np.nan, 0.1, 0.3],
        [1.0, 2.0, 3.0],
        np.ones(4),
        np.zeros(3, np.int32),
    )
    assert np.isfinite(rewards).all()
    # Rows 1 and 2 normalise cost between themselves; row 0's cost coordinate counts as 0.
    np.testing.assert_allclose(rewards, [1.0, 1.0 + 0.5, 0.0], atol=1e-6)


def test_release_quirk_switch_takes_tool_minima_over_users_only():
    counts = [[2], [4], [0]]
    args = ([1, 1, 1], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0], np.array([1.0, 0, 0, 0]))
    groups = np.zeros(3, np.int32)
    np.testing.assert_allclose(both(counts, *args, groups), [0.5, 1.0, 0.0], atol=1e-6)
    quirky = both(counts, *args, groups, alias_min_over_users=True)
    # Minimum 2 over the users: the non-user falls below zero, as in the release.
    np.testing.assert_allclose(quirky, [0.0, 1.0, -1.0], atol=1e-6)


def test_jit_compiles_once_per_shape_and_accepts_traced_switches():
    counts = jnp.zeros((6, 2))
    args = (jnp.ones(6), jnp.linspace(0.1, 0.6, 6), jnp.ones(6), jnp.ones(5), jnp.arange(6) // 3)
    traces = []

    def counted(*a):
        traces.append(1)
        return toolorchestra_reward(*a)

    fn = jax.jit(counted)
    first = fn(counts, *args, jnp.ones(6, bool), jnp.asarray(False))
    second = fn(counts, *args, jnp.ones(6, bool), jnp.asarray(True))
    assert len(traces) == 1
    np.testing.assert_allclose(first, second)  # no tool used: the quirk changes nothing
    np.testing.assert_allclose(first, [1.0, 0.5, 0.0, 1.0, 0.5, 0.0], atol=1e-6)


def test_bad_shapes_are_named():
    good = ([[1]], [1], [0.1], [1.0], np.ones(4), [0])
    with pytest.raises(ValueError, match="preference"):
        toolorchestra_reward(*good[:4], np.ones(5), good[5])
    with pytest.raises(ValueError, match="cost"):
        toolorchestra_reward(good[0], good[1], [0.1, 0.2], *good[3:])
    with pytest.raises(ValueError, match="group_ids"):
        toolorchestra_reward(*good[:5], [0.5])
    with pytest.raises(ValueError, match="tool_counts"):
        toolorchestra_reward([1], *good[1:])


def test_feature_vector_negates_cost_and_latency():
    features = feature_vector([[2, 0]], [1], [0.25], [3.0])
    np.testing.assert_allclose(features, [[2, 0, 1, -0.25, -3.0]])


def test_normalize_maps_each_group_onto_zero_one():
    features = np.array([[1.0], [3.0], [2.0], [5.0], [5.0]])
    got = group_minmax_normalize(features, np.array([0, 0, 0, 1, 1]))
    np.testing.assert_allclose(got[:, 0], [0.0, 1.0, 0.5, 0.0, 0.0])
