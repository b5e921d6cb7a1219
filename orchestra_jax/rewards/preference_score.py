"""The preference-aware evaluation score of the paper's appendix L.

Why a different normalisation from the training reward: at evaluation time there is no group of
sibling rollouts to min-max over, so each example is compared with the *starting checkpoint*'s
behaviour on the same example (M0). Tool counts and the outcome are scaled as
M_s[k] / max(1, M0[k]) (more use of a preferred tool than the base model scores above 1), and
cost and latency the other way round, M0[k] / max(1, M_s[k]) (spending less than the base
scores higher). An example counts only when solved: R_e = M_norm . P if solved else 0, and the
score is the sum over examples, score = sum_e R_e.

Cost and latency enter as positive numbers, not negated: the ratio form needs magnitudes. The
floor of 1 in `max(1, .)` makes the score depend on units (a cost of 0.05 USD is floored to 1,
a cost of 5 cents is not); the paper does not state its units, so `floor` is a parameter and
callers should fix the units they report with (the project's default: USD and seconds).

Pure `jnp` and shape-static, so it runs on host arrays or inside jit alike.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from orchestra_jax.rewards.toolorchestra import NUM_EXTRA_FEATURES


def _matrix(name: str, value: jax.typing.ArrayLike, n: int | None = None) -> jax.Array:
    array = jnp.asarray(value)
    if not jnp.issubdtype(array.dtype, jnp.floating):
        array = array.astype(jnp.float32)
    if array.ndim != 2:
        raise ValueError(f"{name} must have 2 dimensions, got shape {array.shape}")
    if n is not None and array.shape[0] != n:
        raise ValueError(f"{name} has {array.shape[0]} rows, expected {n}")
    return array


def _column(name: str, value: jax.typing.ArrayLike, n: int) -> jax.Array:
    array = jnp.asarray(value)
    if not jnp.issubdtype(array.dtype, jnp.floating):
        array = array.astype(jnp.float32)
    if array.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {array.shape}")
    return array


def preference_scores(
    tool_counts: jax.typing.ArrayLike,
    outcome: jax.typing.ArrayLike,
    cost: jax.typing.ArrayLike,
    latency: jax.typing.ArrayLike,
    preference: jax.typing.ArrayLike,
    base_tool_counts: jax.typing.ArrayLike,
    base_outcome: jax.typing.ArrayLike,
    base_cost: jax.typing.ArrayLike,
    base_latency: jax.typing.ArrayLike,
    *,
    floor: float = 1.0,
) -> jax.Array:
    """Per-example R_e, shape (E,).

    The evaluated policy's tool_counts (E, K), outcome (E,) in {0, 1}, cost and latency (E,) as
    positive numbers; the starting checkpoint's `base_*` on the same examples, same shapes;
    preference (E, K + 3) or (K + 3,) ordered [tools..., outcome, cost, latency].
    """
    counts = _matrix("tool_counts", tool_counts)
    e, k = counts.shape
    base_counts = _matrix("base_tool_counts", base_tool_counts, e)
    if base_counts.shape != (e, k):
        raise ValueError(f"base_tool_counts must have shape ({e}, {k}), got {base_counts.shape}")
    solved = _column("outcome", outcome, e)
    spent = _column("cost", cost, e)
    waited = _column("latency", latency, e)
    base_solved = _column("base_outcome", base_outcome, e)
    base_spent = _column("base_cost", base_cost, e)
    base_waited = _column("base_latency", base_latency, e)
    width = k + NUM_EXTRA_FEATURES
    prefs = jnp.asarray(preference, dtype=jnp.result_type(counts, spent))
    if prefs.shape not in ((width,), (e, width)):
        raise ValueError(
            f"preference must have shape ({e}, {width}) or ({width},) for {k} tools "
            f"[tools..., outcome, cost, latency], got {prefs.shape}"
        )
    normalized = jnp.concatenate(
        [
            counts / jnp.maximum(floor, base_counts),
            (solved / jnp.maximum(floor, base_solved))[:, None],
            (base_spent / jnp.maximum(floor, spent))[:, None],
            (base_waited / jnp.maximum(floor, waited))[:, None],
        ],
        axis=1,
    )
    per_example = jnp.sum(normalized * prefs, axis=-1)
    return jnp.where(solved > 0.5, per_example, 0.0)


def preference_score(
    tool_counts: jax.typing.ArrayLike,
    outcome: jax.typing.ArrayLike,
    cost: jax.typing.ArrayLike,
    latency: jax.typing.ArrayLike,
    preference: jax.typing.ArrayLike,
    base_tool_counts: jax.typing.ArrayLike,
    base_outcome: jax.typing.ArrayLike,
    base_cost: jax.typing.ArrayLike,
    base_latency: jax.typing.ArrayLike,
    *,
    floor: float = 1.0,
) -> jax.Array:
    """score = sum_e R_e over the evaluated examples; arguments as in `preference_scores`."""
    return jnp.sum(
        preference_scores(
            tool_counts,
            outcome,
            cost,
            latency,
            preference,
            base_tool_counts,
            base_outcome,
            base_cost,
            base_latency,
            floor=floor,
        )
    )
