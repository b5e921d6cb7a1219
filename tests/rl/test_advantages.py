"""Advantage estimators: GRPO (and the method's switches), Dr. GRPO, RLOO, GAE, the registry."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from orchestra_jax.rl import (
    compute_advantages,
    gae_advantages_and_returns,
    group_mean_std,
    register_advantage,
)

REWARDS = jnp.array([1.0, 0.0, 0.5, 0.5, 0.2, 0.2, 0.2, 0.2])


def test_grpo_uses_sample_std_plus_eps_per_group():
    adv = compute_advantages("grpo", REWARDS, group_size=4)
    first = np.array([1.0, 0.0, 0.5, 0.5])
    expected = (first - first.mean()) / (first.std(ddof=1) + 1e-6)
    np.testing.assert_allclose(adv[:4], expected, rtol=1e-6)
    np.testing.assert_allclose(adv[4:], 0.0)  # a tied group has nothing to rank


def test_grpo_population_std_and_no_std():
    first = np.array([1.0, 0.0, 0.5, 0.5])
    adv = compute_advantages("grpo", REWARDS, group_size=4, std="population")
    np.testing.assert_allclose(adv[:4], (first - 0.5) / (first.std() + 1e-6), rtol=1e-6)
    np.testing.assert_allclose(compute_advantages("drgrpo", REWARDS, group_size=4)[:4],
                               first - 0.5, rtol=1e-6)
    with pytest.raises(ValueError, match="std"):
        compute_advantages("grpo", REWARDS, group_size=4, std="biased")


def test_method_switches_clip_then_boost():
    rewards = jnp.array([1.0] + [0.0] * 15)  # one success among 16: advantage ~3.87
    plain = compute_advantages("grpo", rewards, group_size=16)
    assert float(plain[0]) > 3.0
    shaped = compute_advantages("grpo", rewards, group_size=16, clip=3.0, boost=0.1)
    np.testing.assert_allclose(shaped[0], 3.1, rtol=1e-6)  # clipped to 3, then boosted
    np.testing.assert_allclose(shaped[1:], plain[1:], rtol=1e-6)  # below 1: untouched
    pair = compute_advantages("grpo", jnp.array([1.0, 0.0]), group_size=2, boost=0.1)
    half = 0.5 / (np.sqrt(0.5) + 1e-6)  # 0.707 < 1: no boost
    np.testing.assert_allclose(pair, [half, -half], rtol=1e-6)


def test_group_of_one_has_mean_zero_std_one():
    """verl's rule: a lone sample's advantage is its own reward (over 1 + eps)."""
    ids = jnp.array([0, 0, 7, 0])
    rewards = jnp.array([1.0, 0.0, 0.6, 0.5])
    adv = compute_advantages("grpo", rewards, group_ids=ids)
    np.testing.assert_allclose(adv[2], 0.6 / (1 + 1e-6), rtol=1e-6)
    mean, std = group_mean_std(rewards, group_ids=ids)
    np.testing.assert_allclose([mean[2], std[2]], [0.0, 1.0])
    np.testing.assert_allclose(compute_advantages("rloo", rewards, group_ids=ids)[2], 0.6)


def test_ragged_group_ids_match_fixed_groups_in_any_order():
    perm = jnp.array([5, 0, 7, 2, 1, 6, 3, 4])
    ids = jnp.repeat(jnp.arange(2), 4)
    fixed = compute_advantages("grpo", REWARDS, group_size=4)
    ragged = compute_advantages("grpo", REWARDS[perm], group_ids=ids[perm] * 13 - 5)
    np.testing.assert_allclose(ragged, fixed[perm], rtol=1e-6)


def test_rloo_is_reward_minus_mean_of_the_others():
    rewards = jnp.array([1.0, 0.0, 0.5, 0.3])
    adv = compute_advantages("rloo", rewards, group_size=4)
    others = np.array([(rewards.sum() - r) / 3 for r in rewards])
    np.testing.assert_allclose(adv, np.asarray(rewards) - others, rtol=1e-6, atol=1e-7)


def test_estimators_are_jittable():
    for name in ("grpo", "drgrpo", "rloo"):
        fn = jax.jit(lambda r, ids, n=name: compute_advantages(n, r, group_ids=ids))
        np.testing.assert_allclose(
            fn(REWARDS, jnp.repeat(jnp.arange(2), 4)),
            compute_advantages(name, REWARDS, group_size=4), rtol=1e-6, atol=1e-7)
        fixed = jax.jit(lambda r, n=name: compute_advantages(n, r, group_size=4))
        assert fixed(REWARDS).shape == (8,)


def test_bad_grouping_and_shapes_are_value_errors():
    with pytest.raises(ValueError, match="group_size=3"):
        compute_advantages("grpo", REWARDS, group_size=3)
    with pytest.raises(ValueError, match="exactly one"):
        compute_advantages("grpo", REWARDS)
    with pytest.raises(ValueError, match="exactly one"):
        compute_advantages("grpo", REWARDS, group_size=4, group_ids=jnp.zeros(8))
    with pytest.raises(ValueError, match=r"shape \(N,\)"):
        compute_advantages("grpo", REWARDS.reshape(2, 4), group_size=4)
    with pytest.raises(ValueError, match="group_ids"):
        compute_advantages("grpo", REWARDS, group_ids=jnp.zeros(5))


def test_registry_lists_known_names_and_accepts_new_estimators():
    with pytest.raises(ValueError, match="drgrpo, gae, grpo, rloo"):
        compute_advantages("ppo", REWARDS, group_size=4)

    @register_advantage("test_centered_only")
    def centered(rewards, *, group_size):
        return rewards - rewards.mean()

    np.testing.assert_allclose(compute_advantages("test_centered_only", REWARDS, group_size=4),
                               REWARDS - REWARDS.mean())
    with pytest.raises(ValueError, match="already registered"):
        register_advantage("grpo")(centered)


def test_gae_terminal_reward_without_discount_is_return_minus_value():
    rewards = jnp.array([[0.0, 0.0, 0.0, 1.0, 0.0]])
    values = jnp.array([[0.1, 0.2, 9.0, 0.4, 7.0]])
    mask = jnp.array([[1.0, 1.0, 0.0, 1.0, 0.0]])  # position 2: a tool output, 4: padding
    adv, returns = gae_advantages_and_returns(rewards, values, mask, gamma=1.0, lam=1.0,
                                              whiten=False)
    np.testing.assert_allclose(adv[0, [0, 1, 3]], [0.9, 0.8, 0.6], rtol=1e-6)
    np.testing.assert_allclose(returns[0, [0, 1, 3]], [1.0, 1.0, 1.0], rtol=1e-6)
    whitened = compute_advantages("gae", rewards, values=values, mask=mask, gamma=1.0, lam=1.0)
    kept = np.asarray(whitened)[0, [0, 1, 3]]
    np.testing.assert_allclose([kept.mean(), kept.std(ddof=1)], [0.0, 1.0], atol=1e-3)


def test_gae_discounting_and_shape_errors():
    rewards = jnp.array([[0.0, 1.0]])
    values = jnp.zeros((1, 2))
    adv, _ = gae_advantages_and_returns(rewards, values, jnp.ones((1, 2)), gamma=0.5, lam=0.5,
                                        whiten=False)
    np.testing.assert_allclose(adv, [[0.25, 1.0]])
    with pytest.raises(ValueError, match="one shape"):
        gae_advantages_and_returns(rewards, values[:, :1], jnp.ones((1, 2)))
