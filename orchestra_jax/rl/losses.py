"""Policy losses, KL estimators, entropy, loss aggregation and update-step metrics.

Every loss here returns ``(sum, denominator)`` rather than a mean, and the caller divides last
(``finalize_loss``). Why: the update step accumulates micro-batches and reduces over hosts, and a
mean of means is not the mean. With sums and denominators, ``sum(sums) / sum(denominators)``
over any split of the batch into micro-batches equals the full-batch value exactly (up to float
rounding), for every aggregation mode -- provided that, for ``seq-mean-token-sum-norm``, every
micro-batch uses the same ``loss_scale_factor`` (pass a constant such as the maximum response
length; the default, the padded length ``T`` of the array, is only constant when all
micro-batches are padded alike).

Aggregation modes (``mask`` is the loss mask, 1 on tokens the policy sampled; a sequence whose
mask is all zero counts nowhere):

===========================  =========================================  ====================
mode                         sum                                        denominator
===========================  =========================================  ====================
``token-mean``               sum of masked per-token losses             number of masked
                                                                        tokens
``seq-mean-token-sum``       sum over sequences of each sequence's      number of sequences
                             masked token sum                           with a masked token
``seq-mean-token-mean``      sum over sequences of each sequence's      number of sequences
                             masked token mean                          with a masked token
``seq-mean-token-sum-norm``  sum over sequences of each sequence's      number of sequences
                             masked token sum, divided by               with a masked token
                             ``loss_scale_factor`` (default ``T``)
===========================  =========================================  ====================

``sum / denominator`` reproduces ``verl.trainer.ppo.core_algos.agg_loss`` (verl 0.9.1) for a
single data-parallel rank: including its ``1e-8`` in the per-sequence token mean and its division
of ``seq-mean-token-sum-norm`` by the seq-mean *and* by the constant ``loss_scale_factor``.

All functions are pure ``jax.numpy`` and jittable; names and options are static Python values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from orchestra_jax.rl.registry import Registry

Array = jax.Array
LossPair = tuple[Array, Array]

AGG_MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")

# verl clamps the log-ratio to +-20 before exp: keeps exp finite for wildly off-policy tokens.
_LOG_RATIO_BOUND = 20.0


# ---------------------------------------------------------------------------------------------
# Aggregation


def _as_float_mask(mask: Array, like: Array) -> Array:
    mask = jnp.asarray(mask)
    if mask.shape != like.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} != loss shape {tuple(like.shape)}")
    return mask.astype(like.dtype)


def _masked(values: Array, mask: Array) -> Array:
    """``values * mask`` with anything outside the mask forced to 0 first, so a NaN or inf in a
    padded position (e.g. a log-prob of padding) can neither leak into the sum nor the gradient."""
    return jnp.where(mask != 0, values, 0.0) * mask


def aggregate_loss(
    mode: str,
    per_token_loss: Array,
    mask: Array,
    *,
    loss_scale_factor: float | None = None,
) -> LossPair:
    """Reduce a ``(B, T)`` per-token loss to ``(sum, denominator)`` by ``mode`` (see the module
    docstring for what each pair means). ``loss_scale_factor`` is used by
    ``seq-mean-token-sum-norm`` only."""
    if mode not in AGG_MODES:
        raise ValueError(f"unknown loss aggregation mode {mode!r}; known: {', '.join(AGG_MODES)}")
    loss = jnp.asarray(per_token_loss)
    if loss.ndim != 2:
        raise ValueError(f"per_token_loss must have shape (B, T), got {tuple(loss.shape)}")
    if not jnp.issubdtype(loss.dtype, jnp.floating):
        loss = loss.astype(jnp.float32)
    mask = _as_float_mask(mask, loss)
    masked = _masked(loss, mask)
    if mode == "token-mean":
        return masked.sum(), mask.sum()
    tokens_per_seq = mask.sum(axis=-1)
    seq_present = (tokens_per_seq > 0).astype(loss.dtype)
    seq_sums = masked.sum(axis=-1)
    if mode == "seq-mean-token-mean":
        seq_values = seq_sums / (tokens_per_seq + 1e-8)
    elif mode == "seq-mean-token-sum":
        seq_values = seq_sums
    else:  # seq-mean-token-sum-norm
        scale = loss.shape[-1] if loss_scale_factor is None else loss_scale_factor
        seq_values = seq_sums / scale
    return (seq_values * seq_present).sum(), seq_present.sum()


def finalize_loss(total: Array, denominator: Array) -> Array:
    """``total / denominator``, or 0 when nothing was counted (an empty micro-batch must not
    poison an update with NaN)."""
    return jnp.where(denominator > 0, total / jnp.where(denominator > 0, denominator, 1.0), 0.0)


# ---------------------------------------------------------------------------------------------
# KL estimators (per token)

KLFn = Callable[[Array, Array], Array]
KL_ESTIMATORS: Registry[KLFn] = Registry("KL estimator")


def _k1(logp: Array, ref_logp: Array) -> Array:
    return logp - ref_logp


def _k2(logp: Array, ref_logp: Array) -> Array:
    return 0.5 * jnp.square(logp - ref_logp)


def _k3(logp: Array, ref_logp: Array) -> Array:
    log_ratio = jnp.clip(ref_logp - logp, -_LOG_RATIO_BOUND, _LOG_RATIO_BOUND)
    return jnp.clip(jnp.exp(log_ratio) - log_ratio - 1.0, -10.0, 10.0)


def _abs(logp: Array, ref_logp: Array) -> Array:
    return jnp.abs(logp - ref_logp)


def _straight_through(forward: KLFn) -> KLFn:
    """Value of ``forward``, gradient of k2: k1 and k3 are unbiased for the KL's value but their
    expected gradient is not the KL's gradient, while k2's is (Schulman's note on KL
    approximations). verl's ``"k3+"`` names this trick."""

    def estimator(logp: Array, ref_logp: Array) -> Array:
        surrogate = _k2(logp, ref_logp)
        value = forward(logp, ref_logp)
        return surrogate - jax.lax.stop_gradient(surrogate) + jax.lax.stop_gradient(value)

    return estimator


for _names, _fn in (
    (("k1", "kl"), _k1),
    (("k2", "mse"), _k2),
    (("k3", "low_var_kl"), _k3),
    (("abs",), _abs),
    (("k1+", "kl+"), _straight_through(_k1)),
    (("k2+", "mse+"), _k2),
    (("k3+", "low_var_kl+"), _straight_through(_k3)),
):
    for _name in _names:
        KL_ESTIMATORS.register(_name)(_fn)


def kl_divergence(name: str, logp: Array, ref_logp: Array) -> Array:
    """Per-token estimate of KL(policy || reference) from the sampled tokens' log-probs.

    ``k1`` = ``logp - ref``; ``k2`` (``mse``) = ``0.5 (logp - ref)^2`` (the method's choice);
    ``k3`` (``low_var_kl``) = ``exp(ref - logp) - (ref - logp) - 1`` clamped to ``[-10, 10]``;
    ``abs``; a trailing ``+`` keeps the value but takes k2's gradient. Same shape as ``logp``."""
    fn = KL_ESTIMATORS.get(name)
    logp = jnp.asarray(logp)
    ref_logp = jnp.asarray(ref_logp)
    if logp.shape != ref_logp.shape:
        raise ValueError(f"logp shape {tuple(logp.shape)} != ref_logp shape "
                         f"{tuple(ref_logp.shape)}")
    return fn(logp, ref_logp)


def kl_loss(name: str, logp: Array, ref_logp: Array, mask: Array, *,
            agg_mode: str = "token-mean", loss_scale_factor: float | None = None) -> LossPair:
    """KL-in-the-loss term as ``(sum, denominator)``; multiply the final value by the
    coefficient (1e-4 in the method's released script)."""
    return aggregate_loss(agg_mode, kl_divergence(name, logp, ref_logp), mask,
                          loss_scale_factor=loss_scale_factor)


def kl_penalized_rewards(token_rewards: Array, logp: Array, ref_logp: Array, mask: Array, *,
                         coef: float, estimator: str = "k1") -> Array:
    """KL-in-the-reward: ``token_rewards - coef * kl * mask`` (verl's ``apply_kl_penalty``),
    with ``logp`` the sampler's log-probs. The alternative to ``kl_loss``; do not use both."""
    kl = kl_divergence(estimator, logp, ref_logp)
    mask = _as_float_mask(mask, kl)
    return jnp.asarray(token_rewards) - coef * _masked(kl, mask)


# ---------------------------------------------------------------------------------------------
# Entropy


def entropy_from_logits(logits: Array) -> Array:
    """Shannon entropy of ``softmax(logits)`` over the last axis, ``(..., V) -> (...)``, as
    ``logsumexp(z) - sum(softmax(z) * z)`` (stable for large logits). Aggregate it with
    ``aggregate_loss`` and subtract ``coef * value`` from the loss for an entropy bonus (the
    method uses none)."""
    logits = jnp.asarray(logits)
    probs = jax.nn.softmax(logits, axis=-1)
    return jax.nn.logsumexp(logits, axis=-1) - jnp.sum(probs * logits, axis=-1)


# ---------------------------------------------------------------------------------------------
# Policy losses

PerTokenLossFn = Callable[..., Array]
POLICY_LOSSES: Registry[PerTokenLossFn] = Registry("policy loss")


def register_policy_loss(name: str) -> Callable[[PerTokenLossFn], PerTokenLossFn]:
    """Decorator: file a per-token policy loss ``fn(logp, old_logp, advantages_bt, mask,
    **options) -> (B, T)`` under ``name``; ``policy_loss`` aggregates what it returns."""
    return POLICY_LOSSES.register(name)


def _broadcast_advantages(advantages: Array, logp: Array) -> Array:
    adv = jnp.asarray(advantages, dtype=logp.dtype)
    if adv.shape == logp.shape:
        return adv
    if adv.shape == logp.shape[:1]:
        return jnp.broadcast_to(adv[:, None], logp.shape)
    raise ValueError(f"advantages must have shape (B,) or (B, T) = {tuple(logp.shape)}, "
                     f"got {tuple(adv.shape)}")


def _clip_bounds(clip_low: float, clip_high: float | None) -> tuple[float, float]:
    clip_high = clip_low if clip_high is None else clip_high
    if clip_low < 0 or clip_high < 0:
        raise ValueError(f"clip_low and clip_high must be >= 0, got {clip_low}, {clip_high}")
    return clip_low, clip_high


def _check_dual_clip(dual_clip: float | None) -> None:
    if dual_clip is not None and not dual_clip > 1.0:
        raise ValueError(f"dual_clip must be > 1 (or None to disable), got {dual_clip}")


def _ppo_terms(logp: Array, old_logp: Array, adv: Array, clip_low: float,
               clip_high: float | None, dual_clip: float | None) -> dict[str, Array]:
    """The pieces of the clipped objective, shared by the loss and its metrics."""
    lo, hi = _clip_bounds(clip_low, clip_high)
    _check_dual_clip(dual_clip)
    log_ratio = jnp.clip(logp - old_logp, -_LOG_RATIO_BOUND, _LOG_RATIO_BOUND)
    ratio = jnp.exp(log_ratio)
    unclipped = -adv * ratio
    clipped = -adv * jnp.clip(ratio, 1.0 - lo, 1.0 + hi)
    pessimistic = jnp.maximum(unclipped, clipped)
    loss = pessimistic
    dual_active = jnp.zeros_like(adv, dtype=bool)
    if dual_clip is not None:
        # For A < 0 a huge ratio makes -A*ratio unbounded; dual clip caps it at -A*c.
        cap = -adv * dual_clip
        loss = jnp.where(adv < 0, jnp.minimum(cap, pessimistic), pessimistic)
        dual_active = (pessimistic > cap) & (adv < 0)
    return {"log_ratio": log_ratio, "ratio": ratio, "loss": loss,
            "clipped": clipped > unclipped, "dual_active": dual_active}


@register_policy_loss("ppo_clip")
def ppo_clip_token_loss(logp: Array, old_logp: Array, advantages: Array, mask: Array, *,
                        clip_low: float = 0.2, clip_high: float | None = None,
                        dual_clip: float | None = None) -> Array:
    """PPO's clipped surrogate per token, with separate low/high epsilons ("clip-higher", DAPO)
    and an optional dual clip ``c`` for negative advantages. The method: 0.2 / 0.28 / 10.

    ``loss = max(-A r, -A clip(r, 1 - lo, 1 + hi))``, then ``min(that, -A c)`` where ``A < 0``;
    ``r = exp(clip(logp - old_logp, -20, 20))`` as in verl."""
    del mask
    return _ppo_terms(logp, old_logp, advantages, clip_low, clip_high, dual_clip)["loss"]


@register_policy_loss("gspo")
def gspo_token_loss(logp: Array, old_logp: Array, advantages: Array, mask: Array, *,
                    clip_low: float = 3e-4, clip_high: float | None = 4e-4) -> Array:
    """GSPO: one importance ratio per sequence, the geometric mean of its token ratios
    ``s = exp(mean_t (logp - old_logp))``, clipped like PPO; per token the value is ``s`` but
    the gradient flows through each token's own log-prob (``sg[s] * p / sg[p]``).

    Defaults are the GSPO paper's epsilons (ratios of whole sequences stay near 1)."""
    lo, hi = _clip_bounds(clip_low, clip_high)
    mask = _as_float_mask(mask, logp)
    lengths = jnp.maximum(mask.sum(axis=-1), 1.0)
    seq_log_ratio = _masked(logp - old_logp, mask).sum(axis=-1) / lengths
    log_ratio = logp - jax.lax.stop_gradient(logp) + jax.lax.stop_gradient(seq_log_ratio)[:, None]
    ratio = jnp.exp(jnp.minimum(log_ratio, 10.0))
    return jnp.maximum(-advantages * ratio, -advantages * jnp.clip(ratio, 1.0 - lo, 1.0 + hi))


@register_policy_loss("reinforce")
def reinforce_token_loss(logp: Array, old_logp: Array, advantages: Array, mask: Array) -> Array:
    """Plain REINFORCE, ``-A * logp``: no ratio, no clipping (on-policy; ``old_logp`` unused).
    Its value is not meaningful, only its gradient ``-A * grad logp``."""
    del old_logp, mask
    return -advantages * logp


def policy_loss(
    name: str,
    logp: Array,
    old_logp: Array,
    advantages: Array,
    mask: Array,
    *,
    agg_mode: str = "token-mean",
    loss_scale_factor: float | None = None,
    **options: Any,
) -> LossPair:
    """The policy loss registered as ``name`` over ``(B, T)`` log-probs, as ``(sum, denominator)``.

    ``advantages`` is ``(B,)`` (one per sample, broadcast over its tokens) or ``(B, T)``;
    ``options`` go to the loss by keyword (``clip_low``, ``clip_high``, ``dual_clip`` for
    ``ppo_clip``). Unknown names raise ``ValueError`` listing the known ones."""
    fn = POLICY_LOSSES.get(name)
    logp = jnp.asarray(logp)
    old_logp = jnp.asarray(old_logp, dtype=logp.dtype)
    if logp.ndim != 2 or old_logp.shape != logp.shape:
        raise ValueError(f"logp and old_logp must share a (B, T) shape, got "
                         f"{tuple(logp.shape)} and {tuple(old_logp.shape)}")
    adv = _broadcast_advantages(advantages, logp)
    per_token = fn(logp, old_logp, adv, mask, **options)
    return aggregate_loss(agg_mode, per_token, mask, loss_scale_factor=loss_scale_factor)


# ---------------------------------------------------------------------------------------------
# Metrics for the update step


def ppo_metrics(logp: Array, old_logp: Array, advantages: Array, mask: Array, *,
                clip_low: float = 0.2, clip_high: float | None = None,
                dual_clip: float | None = None) -> dict[str, LossPair]:
    """Diagnostics of a PPO step as ``name -> (sum, count)`` over masked tokens, so they
    accumulate across micro-batches and hosts like the loss does (divide last).

    - ``clipfrac``: tokens where the clipped term won (verl's ``pg_clipfrac``);
      ``clipfrac_high`` / ``clipfrac_low``: the same split by ``A > 0`` / ``A < 0``;
    - ``clipfrac_dual``: tokens capped by the dual clip (verl's ``pg_clipfrac_lower``);
    - ``approx_kl``: mean of ``old_logp - logp`` (verl's ``ppo_kl``); ``approx_kl_k3``: k3 of it;
    - ``ratio``, ``ratio_sq``: sums of ``r`` and ``r^2`` (mean and spread of the ratio);
      ``ratio_abs_dev``: sum of ``|r - 1|``."""
    logp = jnp.asarray(logp)
    old_logp = jnp.asarray(old_logp, dtype=logp.dtype)
    adv = _broadcast_advantages(advantages, logp)
    mask = _as_float_mask(mask, logp)
    terms = _ppo_terms(logp, old_logp, adv, clip_low, clip_high, dual_clip)
    count = mask.sum()
    clipped = terms["clipped"].astype(logp.dtype)
    ratio = terms["ratio"]

    def total(values: Array) -> LossPair:
        return _masked(values, mask).sum(), count

    return {
        "clipfrac": total(clipped),
        "clipfrac_high": total(clipped * (adv > 0)),
        "clipfrac_low": total(clipped * (adv < 0)),
        "clipfrac_dual": total(terms["dual_active"].astype(logp.dtype)),
        "approx_kl": total(-terms["log_ratio"]),
        "approx_kl_k3": total(_k3(logp, old_logp)),
        "ratio": total(ratio),
        "ratio_sq": total(ratio * ratio),
        "ratio_abs_dev": total(jnp.abs(ratio - 1.0)),
    }
