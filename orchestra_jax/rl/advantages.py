"""Advantage estimators, addressed by name: ``grpo``, ``drgrpo``, ``rloo`` and ``gae``.

Outcome estimators (``grpo``, ``drgrpo``, ``rloo``) map one scalar reward per sample, shape
``(N,)``, to one advantage per sample, shape ``(N,)``; the policy loss broadcasts it over the
sample's tokens (the method gives every token of every turn of a trajectory the same advantage).
Samples are grouped either by a fixed ``group_size`` (consecutive blocks of ``group_size``
samples, ``N`` divisible by it: the layout the rollout engine produces) or by integer
``group_ids`` of shape ``(N,)`` for ragged groups (any integers; equal ids form a group). The
ragged path compares every pair of ids, ``O(N^2)`` memory, which is nothing at RL batch sizes.

Everything is pure ``jax.numpy`` with no Python branching on values, so it runs under ``jit``;
options are static Python values.

``gae`` is the PPO estimator with a value head and works per token; its signature differs:
``compute_advantages("gae", token_rewards_bt, values=values_bt, mask=mask_bt, gamma=1.0,
lam=1.0)`` returns whitened advantages ``(B, T)``; ``gae_advantages_and_returns`` also gives
the returns the value loss regresses on.

Conventions checked against verl's ``core_algos`` (see tests/rl/test_verl_parity.py): a group of
one sample has mean 0 and std 1 (its advantage is its reward, scaled by ``1 / (1 + eps)``),
the std is the sample std (``n - 1``) unless ``std="population"`` is asked for, and
``eps = 1e-6`` is added to the std, not to the variance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from orchestra_jax.rl.registry import Registry

Array = jax.Array
AdvantageFn = Callable[..., Array]

ADVANTAGES: Registry[AdvantageFn] = Registry("advantage estimator")


def register_advantage(name: str) -> Callable[[AdvantageFn], AdvantageFn]:
    """Decorator: file an estimator under ``name`` for ``compute_advantages``."""
    return ADVANTAGES.register(name)


def compute_advantages(name: str, rewards: Array, **options: Any) -> Array:
    """Advantages from the estimator registered as ``name``; options go to it by keyword.

    Example: ``compute_advantages("grpo", rewards, group_size=8)`` with ``rewards`` of shape
    ``(N,)`` returns ``(N,)``. Unknown names raise ``ValueError`` listing the known ones."""
    return ADVANTAGES.get(name)(rewards, **options)


# ---------------------------------------------------------------------------------------------
# Group statistics


def _check_rewards(rewards: Array) -> Array:
    rewards = jnp.asarray(rewards)
    if rewards.ndim != 1:
        raise ValueError(f"rewards must have shape (N,), got shape {tuple(rewards.shape)}")
    if not jnp.issubdtype(rewards.dtype, jnp.floating):
        rewards = rewards.astype(jnp.float32)
    return rewards


def _group_sum_and_count(
    values: Array, group_size: int | None, group_ids: Array | None
) -> tuple[Array, Array]:
    """Per sample: the sum of ``values`` over its group and the group's size, both ``(N,)``."""
    n = values.shape[0]
    if (group_size is None) == (group_ids is None):
        raise ValueError("give exactly one of group_size (fixed groups) or group_ids (ragged)")
    if group_size is not None:
        if not isinstance(group_size, int) or group_size < 1:
            raise ValueError(f"group_size must be a positive int, got {group_size!r}")
        if n % group_size:
            raise ValueError(f"{n} rewards do not split into groups of group_size={group_size}")
        blocks = values.reshape(n // group_size, group_size)
        sums = jnp.repeat(blocks.sum(axis=1), group_size)
        return sums, jnp.full((n,), group_size, dtype=values.dtype)
    ids = jnp.asarray(group_ids)
    if ids.shape != (n,):
        raise ValueError(f"group_ids must have shape ({n},), got {tuple(ids.shape)}")
    same = (ids[:, None] == ids[None, :]).astype(values.dtype)
    return same @ values, same.sum(axis=1)


def group_mean_std(
    rewards: Array,
    *,
    group_size: int | None = None,
    group_ids: Array | None = None,
    std: str = "sample",
) -> tuple[Array, Array]:
    """Per-sample group mean and std, ``(N,)`` each; a one-sample group gets mean 0, std 1.

    ``std="sample"`` divides by ``n - 1`` (torch's default, which verl and the released
    ToolOrchestra code use); ``std="population"`` divides by ``n``."""
    if std not in ("sample", "population"):
        raise ValueError(f"std must be 'sample' or 'population', got {std!r}")
    rewards = _check_rewards(rewards)
    sums, counts = _group_sum_and_count(rewards, group_size, group_ids)
    mean = sums / counts
    sq_sums, _ = _group_sum_and_count((rewards - mean) ** 2, group_size, group_ids)
    ddof = 1.0 if std == "sample" else 0.0
    var = sq_sums / jnp.maximum(counts - ddof, 1.0)
    single = counts <= 1
    return jnp.where(single, 0.0, mean), jnp.where(single, 1.0, jnp.sqrt(var))


# ---------------------------------------------------------------------------------------------
# Outcome estimators


def _shape_advantages(adv: Array, clip: float | None, boost: float | None,
                      boost_threshold: float) -> Array:
    """The released code's switches, default off: clip to ``[-clip, clip]``, then add ``boost``
    to advantages ``>= boost_threshold`` (rewarding the best correct samples a little more)."""
    if clip is not None:
        adv = jnp.clip(adv, -clip, clip)
    if boost is not None:
        adv = jnp.where(adv >= boost_threshold, adv + boost, adv)
    return adv


@register_advantage("grpo")
def grpo_advantages(
    rewards: Array,
    *,
    group_size: int | None = None,
    group_ids: Array | None = None,
    std: str = "sample",
    eps: float = 1e-6,
    normalize_by_std: bool = True,
    clip: float | None = None,
    boost: float | None = None,
    boost_threshold: float = 1.0,
) -> Array:
    """GRPO: ``(r - mean_group) / (std_group + eps)``; the method's advantage.

    ToolOrchestra's released settings are ``std="sample", eps=1e-6, clip=3.0, boost=0.1``
    (boost applies to advantages ``>= 1``); ``clip`` and ``boost`` default to off."""
    rewards = _check_rewards(rewards)
    mean, sd = group_mean_std(rewards, group_size=group_size, group_ids=group_ids, std=std)
    adv = rewards - mean
    if normalize_by_std:
        adv = adv / (sd + eps)
    return _shape_advantages(adv, clip, boost, boost_threshold)


@register_advantage("drgrpo")
def drgrpo_advantages(
    rewards: Array,
    *,
    group_size: int | None = None,
    group_ids: Array | None = None,
    clip: float | None = None,
    boost: float | None = None,
    boost_threshold: float = 1.0,
) -> Array:
    """Dr. GRPO: ``r - mean_group`` without the std division, which over-weights groups whose
    rewards barely differ (the "difficulty bias" the Dr. GRPO paper removes)."""
    return grpo_advantages(rewards, group_size=group_size, group_ids=group_ids,
                           normalize_by_std=False, clip=clip, boost=boost,
                           boost_threshold=boost_threshold)


@register_advantage("rloo")
def rloo_advantages(
    rewards: Array,
    *,
    group_size: int | None = None,
    group_ids: Array | None = None,
) -> Array:
    """RLOO: each sample's reward minus the mean of the *other* samples of its group,
    ``n / (n - 1) * (r - mean_group)``; a one-sample group keeps its raw reward (verl's rule)."""
    rewards = _check_rewards(rewards)
    sums, counts = _group_sum_and_count(rewards, group_size, group_ids)
    scale = counts / jnp.maximum(counts - 1.0, 1.0)
    return jnp.where(counts > 1, rewards * scale - (sums / counts) * scale, rewards)


# ---------------------------------------------------------------------------------------------
# GAE (per token, with a value head)


def masked_whiten(values: Array, mask: Array, eps: float = 1e-8) -> Array:
    """``(x - mean) / sqrt(var + eps)`` over the masked entries, with the unbiased variance
    (verl's convention); entries outside the mask are transformed too but are never used."""
    mask = mask.astype(values.dtype)
    count = mask.sum()
    mean = (values * mask).sum() / count
    var = (((values - mean) ** 2) * mask).sum() / count
    var = var * count / jnp.maximum(count - 1.0, 1.0)
    return (values - mean) * jax.lax.rsqrt(var + eps)


def gae_advantages_and_returns(
    token_rewards: Array,
    values: Array,
    mask: Array,
    *,
    gamma: float = 1.0,
    lam: float = 1.0,
    whiten: bool = True,
) -> tuple[Array, Array]:
    """Generalised advantage estimation over response tokens, ``(B, T)`` in, two ``(B, T)`` out.

    Masked-out positions (tool outputs inside a multi-turn response, padding) are skipped: the
    value and the running estimate carry across them unchanged, so the recursion links the
    policy's own tokens. Returns ``(advantages, returns)`` where ``returns = raw advantages +
    values`` (the value-loss target) and the advantages are whitened over the mask when
    ``whiten`` (verl's PPO default)."""
    token_rewards = jnp.asarray(token_rewards)
    values = jnp.asarray(values, dtype=token_rewards.dtype)
    mask = jnp.asarray(mask).astype(token_rewards.dtype)
    if token_rewards.ndim != 2 or not values.shape == mask.shape == token_rewards.shape:
        raise ValueError(
            "gae needs token_rewards, values and mask of one shape (B, T); got "
            f"{tuple(token_rewards.shape)}, {tuple(values.shape)}, {tuple(mask.shape)}")

    def step(carry: tuple[Array, Array], xs: tuple[Array, Array, Array]):
        next_value, last_gae = carry
        r_t, v_t, m_t = xs
        delta = r_t + gamma * next_value - v_t
        gae_t = delta + gamma * lam * last_gae
        next_value = v_t * m_t + (1.0 - m_t) * next_value
        last_gae = gae_t * m_t + (1.0 - m_t) * last_gae
        return (next_value, last_gae), last_gae

    zeros = jnp.zeros(token_rewards.shape[0], token_rewards.dtype)
    xs = (token_rewards.T, values.T, mask.T)
    _, adv_tb = jax.lax.scan(step, (zeros, zeros), xs, reverse=True)
    adv = adv_tb.T
    returns = adv + values
    if whiten:
        adv = masked_whiten(adv, mask)
    return adv, returns


@register_advantage("gae")
def gae_advantages(
    token_rewards: Array,
    *,
    values: Array,
    mask: Array,
    gamma: float = 1.0,
    lam: float = 1.0,
    whiten: bool = True,
) -> Array:
    """PPO's GAE advantages ``(B, T)``; see ``gae_advantages_and_returns`` for the returns."""
    adv, _ = gae_advantages_and_returns(token_rewards, values, mask, gamma=gamma, lam=lam,
                                        whiten=whiten)
    return adv
