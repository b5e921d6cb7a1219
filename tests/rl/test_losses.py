"""Policy losses, KL, entropy and aggregation: the (sum, denominator) contract and the maths."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from orchestra_jax.rl import (
    AGG_MODES,
    aggregate_loss,
    entropy_from_logits,
    finalize_loss,
    kl_divergence,
    kl_loss,
    kl_penalized_rewards,
    policy_loss,
    ppo_metrics,
    register_policy_loss,
)


def _batch(seed: int = 0, batch: int = 8, length: int = 10):
    rng = np.random.default_rng(seed)
    loss = rng.normal(size=(batch, length)).astype(np.float32)
    mask = np.zeros((batch, length), np.float32)
    for b in range(batch):
        mask[b, : rng.integers(1, length + 1)] = 1.0
    mask[3] = 0.0  # a sequence with no policy token
    mask[5, 1:3] = 0.0  # a tool output inside the response
    return jnp.asarray(loss), jnp.asarray(mask)


# ---------------------------------------------------------------------------------------------
# aggregation


@pytest.mark.parametrize("mode", AGG_MODES)
def test_micro_batch_accumulation_equals_full_batch(mode):
    """Sum of sums over sum of denominators, over uneven micro-batches, is the full value."""
    loss, mask = _batch()
    full_total, full_denom = aggregate_loss(mode, loss, mask, loss_scale_factor=32)
    totals, denoms = [], []
    for lo, hi in ((0, 3), (3, 4), (4, 8)):  # one micro-batch holds only the empty row
        t, d = aggregate_loss(mode, loss[lo:hi], mask[lo:hi], loss_scale_factor=32)
        totals.append(t)
        denoms.append(d)
    np.testing.assert_allclose(sum(totals) / sum(denoms), full_total / full_denom, rtol=1e-6)
    np.testing.assert_allclose(sum(denoms), full_denom)


def test_denominators_count_tokens_or_non_empty_sequences():
    loss, mask = _batch()
    assert float(aggregate_loss("token-mean", loss, mask)[1]) == float(mask.sum())
    for mode in AGG_MODES[1:]:
        assert float(aggregate_loss(mode, loss, mask)[1]) == 7.0  # 8 rows, one empty


def test_aggregation_values_by_hand():
    loss = jnp.array([[1.0, 2.0, 3.0, 9.0], [4.0, 0.0, 0.0, 0.0]])
    mask = jnp.array([[1, 1, 1, 0], [1, 0, 0, 0]])
    assert tuple(map(float, aggregate_loss("token-mean", loss, mask))) == (10.0, 4.0)
    assert tuple(map(float, aggregate_loss("seq-mean-token-sum", loss, mask))) == (10.0, 2.0)
    total, denom = aggregate_loss("seq-mean-token-mean", loss, mask)
    np.testing.assert_allclose([total, denom], [2.0 + 4.0, 2.0], rtol=1e-6)
    total, denom = aggregate_loss("seq-mean-token-sum-norm", loss, mask)
    np.testing.assert_allclose([total, denom], [10.0 / 4, 2.0], rtol=1e-6)  # default: T = 4


def test_nan_outside_the_mask_reaches_neither_value_nor_gradient():
    loss, mask = _batch()
    poisoned = jnp.where(mask == 0, jnp.nan, loss)
    for mode in AGG_MODES:
        value = finalize_loss(*aggregate_loss(mode, poisoned, mask))
        assert np.isfinite(float(value))
    grad = jax.grad(lambda x: finalize_loss(*aggregate_loss("token-mean", x, mask)))(poisoned)
    assert np.isfinite(np.asarray(grad)).all()


def test_empty_batch_finalizes_to_zero_not_nan():
    total, denom = aggregate_loss("token-mean", jnp.ones((2, 3)), jnp.zeros((2, 3)))
    assert float(finalize_loss(total, denom)) == 0.0


def test_bad_mode_and_shapes_are_value_errors():
    loss, mask = _batch()
    with pytest.raises(ValueError, match="token-mean"):
        aggregate_loss("mean", loss, mask)
    with pytest.raises(ValueError, match="mask shape"):
        aggregate_loss("token-mean", loss, mask[:, :3])
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        aggregate_loss("token-mean", loss[0], mask[0])


# ---------------------------------------------------------------------------------------------
# PPO clip


def _ppo_value(logp, old, adv, **kw):
    mask = jnp.ones_like(logp)
    return finalize_loss(*policy_loss("ppo_clip", logp, old, adv, mask, **kw))


def test_ppo_clip_high_caps_positive_advantages_and_stops_their_gradient():
    old = jnp.zeros((1, 1))
    logp = jnp.full((1, 1), jnp.log(1.5))  # ratio 1.5 > 1 + 0.28
    adv = jnp.array([2.0])
    value = _ppo_value(logp, old, adv, clip_low=0.2, clip_high=0.28)
    np.testing.assert_allclose(value, -2.0 * 1.28, rtol=1e-6)
    grad = jax.grad(lambda x: _ppo_value(x, old, adv, clip_low=0.2, clip_high=0.28))(logp)
    assert float(grad[0, 0]) == 0.0


def test_ppo_clip_low_for_negative_advantages_and_clip_high_defaults_to_clip_low():
    old = jnp.zeros((1, 1))
    logp = jnp.full((1, 1), jnp.log(0.5))  # ratio 0.5 < 1 - 0.2
    value = _ppo_value(logp, old, jnp.array([-1.0]), clip_low=0.2, clip_high=0.28)
    np.testing.assert_allclose(value, 0.8, rtol=1e-6)
    up = jnp.full((1, 1), jnp.log(1.5))
    np.testing.assert_allclose(_ppo_value(up, old, jnp.array([1.0]), clip_low=0.2), -1.2,
                               rtol=1e-6)


def test_dual_clip_caps_negative_advantages_at_c():
    old = jnp.zeros((1, 1))
    logp = jnp.full((1, 1), jnp.log(50.0))  # ratio 50: -A*r = 50 would dominate the batch
    adv = jnp.array([-1.0])
    np.testing.assert_allclose(_ppo_value(logp, old, adv, dual_clip=10.0), 10.0, rtol=1e-6)
    np.testing.assert_allclose(_ppo_value(logp, old, adv, dual_clip=None), 50.0, rtol=1e-5)
    grad = jax.grad(lambda x: _ppo_value(x, old, adv, dual_clip=10.0))(logp)
    assert float(grad[0, 0]) == 0.0
    # positive advantages are untouched by the dual clip
    np.testing.assert_allclose(_ppo_value(logp, old, -adv, dual_clip=10.0), -1.2, rtol=1e-6)


def test_ppo_on_policy_value_and_gradient_are_the_policy_gradient():
    logp = jnp.log(jnp.array([[0.3, 0.6]]))
    adv = jnp.array([[1.0, -2.0]])
    value = _ppo_value(logp, logp, adv, dual_clip=10.0)
    np.testing.assert_allclose(value, -(1.0 - 2.0) / 2, rtol=1e-6)
    grad = jax.grad(lambda x: _ppo_value(x, jax.lax.stop_gradient(logp), adv))(logp)
    np.testing.assert_allclose(grad, -adv / 2, rtol=1e-6)


def test_per_sample_advantages_broadcast_over_tokens():
    loss, mask = _batch()
    logp = -jnp.abs(loss)
    old = logp + 0.1
    adv_b = jnp.arange(8.0) - 4
    ours = policy_loss("ppo_clip", logp, old, adv_b, mask, clip_high=0.28, dual_clip=3.0)
    wide = policy_loss("ppo_clip", logp, old, jnp.broadcast_to(adv_b[:, None], logp.shape), mask,
                       clip_high=0.28, dual_clip=3.0)
    np.testing.assert_allclose(ours, wide)
    with pytest.raises(ValueError, match="advantages"):
        policy_loss("ppo_clip", logp, old, adv_b[:5], mask)


def test_policy_loss_is_jittable_and_differentiable():
    loss, mask = _batch()
    logp = -jnp.abs(loss)
    fn = functools.partial(policy_loss, "ppo_clip", clip_low=0.2, clip_high=0.28, dual_clip=10.0,
                           agg_mode="seq-mean-token-mean")

    def value(lp, old, adv, m):
        return finalize_loss(*fn(lp, old, adv, m))

    eager = value(logp, logp + 0.2, jnp.ones(8), mask)
    jitted = jax.jit(value)(logp, logp + 0.2, jnp.ones(8), mask)
    np.testing.assert_allclose(eager, jitted, rtol=1e-6)
    grad = jax.jit(jax.grad(value))(logp, logp + 0.2, jnp.ones(8), mask)
    assert np.isfinite(np.asarray(grad)).all()
    assert float(jnp.abs(grad * (1 - mask)).sum()) == 0.0  # no gradient into masked tokens


def test_bad_policy_loss_name_and_dual_clip():
    logp = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match="ppo_clip"):
        policy_loss("ppo", logp, logp, jnp.ones(2), jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="dual_clip"):
        policy_loss("ppo_clip", logp, logp, jnp.ones(2), jnp.ones((2, 3)), dual_clip=0.5)
    with pytest.raises(ValueError, match="already registered"):
        register_policy_loss("ppo_clip")(lambda *a, **k: None)


def test_gspo_uses_one_ratio_per_sequence_with_per_token_gradients():
    logp = jnp.log(jnp.array([[0.5, 0.25, 0.9]]))
    old = logp - jnp.array([[0.3, -0.1, 0.4]])
    mask = jnp.array([[1.0, 1.0, 0.0]])
    adv = jnp.array([1.0])
    # sequence ratio = exp(mean(0.3, -0.1)) = exp(0.1), far above 1 + 4e-4: clipped, no grad
    total, denom = policy_loss("gspo", logp, old, adv, mask)
    np.testing.assert_allclose(total / denom, -(1 + 4e-4), rtol=1e-6)
    # unclipped (wide epsilons): value exp(0.1) per token, gradient -A * s / n on each token
    wide = {"clip_low": 1.0, "clip_high": 1.0}
    total, denom = policy_loss("gspo", logp, old, adv, mask, **wide)
    np.testing.assert_allclose(total / denom, -np.exp(0.1), rtol=1e-6)
    grad = jax.grad(lambda x: finalize_loss(*policy_loss("gspo", x, old, adv, mask, **wide)))(logp)
    np.testing.assert_allclose(grad, [[-np.exp(0.1) / 2, -np.exp(0.1) / 2, 0.0]], rtol=1e-6)


def test_reinforce_gradient_is_minus_advantage_times_score():
    logp = jnp.log(jnp.array([[0.5, 0.25]]))
    adv = jnp.array([[2.0, -1.0]])
    grad = jax.grad(lambda x: finalize_loss(*policy_loss("reinforce", x, x, adv,
                                                         jnp.ones((1, 2)))))(logp)
    np.testing.assert_allclose(grad, -adv / 2)


# ---------------------------------------------------------------------------------------------
# KL, entropy, metrics


def test_kl_estimators_values():
    logp = jnp.array([-1.0, -2.0, -0.5])
    ref = jnp.array([-1.5, -1.0, -0.5])
    d = logp - ref
    np.testing.assert_allclose(kl_divergence("k1", logp, ref), d)
    np.testing.assert_allclose(kl_divergence("k2", logp, ref), 0.5 * d**2)
    np.testing.assert_allclose(kl_divergence("mse", logp, ref), 0.5 * d**2)
    np.testing.assert_allclose(kl_divergence("k3", logp, ref), np.exp(-d) + d - 1, rtol=1e-6)
    np.testing.assert_allclose(kl_divergence("low_var_kl", logp, ref), np.exp(-d) + d - 1,
                               rtol=1e-6)
    assert (np.asarray(kl_divergence("k3", logp, ref)) >= 0).all()
    with pytest.raises(ValueError, match="k2"):
        kl_divergence("k4", logp, ref)
    with pytest.raises(ValueError, match="shape"):
        kl_divergence("k1", logp, ref[:2])


@pytest.mark.parametrize("name", ["k1+", "k3+"])
def test_straight_through_kl_keeps_its_value_but_takes_k2_gradient(name):
    logp = jnp.array([-1.0, -2.0])
    ref = jnp.array([-1.5, -1.0])
    base = name[:-1]
    np.testing.assert_allclose(kl_divergence(name, logp, ref), kl_divergence(base, logp, ref))
    grad = jax.grad(lambda x: kl_divergence(name, x, ref).sum())(logp)
    np.testing.assert_allclose(grad, logp - ref)


def test_kl_loss_and_kl_in_reward():
    logp = jnp.array([[-1.0, -2.0, -3.0]])
    ref = jnp.array([[-1.5, -1.0, 0.0]])
    mask = jnp.array([[1.0, 1.0, 0.0]])
    total, denom = kl_loss("k2", logp, ref, mask)
    np.testing.assert_allclose([total, denom], [0.5 * 0.25 + 0.5 * 1.0, 2.0])
    rewards = jnp.array([[0.0, 1.0, 5.0]])
    shaped = kl_penalized_rewards(rewards, logp, ref, mask, coef=0.1, estimator="k1")
    np.testing.assert_allclose(shaped, [[-0.05, 1.1, 5.0]], rtol=1e-6)


def test_entropy_of_uniform_and_peaked_distributions():
    logits = jnp.stack([jnp.zeros(5), jnp.array([100.0, 0, 0, 0, 0])])
    np.testing.assert_allclose(entropy_from_logits(logits), [np.log(5), 0.0], atol=1e-5)


def test_ppo_metrics_count_the_right_tokens():
    old = jnp.zeros((1, 4))
    logp = jnp.log(jnp.array([[1.5, 0.5, 20.0, 1.0]]))
    adv = jnp.array([[1.0, -1.0, -1.0, 1.0]])
    mask = jnp.ones((1, 4))
    m = ppo_metrics(logp, old, adv, mask, clip_low=0.2, clip_high=0.28, dual_clip=10.0)
    # token 0: high clip; token 1: low clip; token 2: ratio 20, A<0: unclipped by PPO (the
    # pessimistic max keeps -A r) but capped by the dual clip; token 3: nothing
    assert float(m["clipfrac_high"][0]) == 1.0
    assert float(m["clipfrac_low"][0]) == 1.0
    assert float(m["clipfrac"][0]) == 2.0
    assert float(m["clipfrac_dual"][0]) == 1.0
    assert all(float(count) == 4.0 for _, count in m.values())
    np.testing.assert_allclose(m["ratio"][0], 1.5 + 0.5 + 20 + 1, rtol=1e-6)
    np.testing.assert_allclose(m["approx_kl"][0], -float(jnp.sum(logp)), rtol=1e-6)


def test_public_api_as_the_issue_writes_it():
    import orchestra_jax.rl as rl
    from orchestra_jax.rl import aggregate_loss as agg
    from orchestra_jax.rl import compute_advantages, kl_divergence

    assert sorted(rl.__all__) == sorted(rl._MODULE_OF)  # lazy table and __all__ agree
    rewards = jnp.asarray(np.random.default_rng(0).random(16), jnp.float32)
    adv = compute_advantages("grpo", rewards, group_size=8)
    assert adv.shape == (16,)
    loss, mask = _batch(batch=16)
    logp = -jnp.abs(loss)
    s, d = agg("token-mean", loss, mask)
    assert s.shape == d.shape == ()
    s, d = rl.policy_loss("ppo_clip", logp, logp + 0.1, adv, mask, clip_low=0.2, clip_high=0.28,
                          dual_clip=10.0, agg_mode="token-mean")
    assert np.isfinite(float(s / d))
    assert kl_divergence("k2", logp, logp + 0.1).shape == logp.shape
