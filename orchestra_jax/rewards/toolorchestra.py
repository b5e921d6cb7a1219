"""The ToolOrchestra reward: outcome, efficiency and tool preferences, normalised per group.

Why this shape (paper, section 3.2): a rollout is described by a feature vector

    M = [n_calls(tool_1), ..., n_calls(tool_K), outcome, -cost, -latency]

and each coordinate is min-max normalised over the *group* of rollouts of the same task, so
that a task's absolute price level or difficulty does not matter, only how a rollout compares
with its siblings. A coordinate on which every rollout of the group agrees (max = min) carries
no information and contributes 0. The normalised vector is dotted with the task's preference
vector P = [p_tools..., p_outcome, p_cost, p_latency] and the result counts only when the
rollout solved the task: R = (M_norm . P) if outcome == 1 else 0. Cost and latency are passed
as positive numbers (USD, seconds) and negated here, so a cheaper or faster rollout scores a
larger normalised value.

Everything is pure `jnp` with static shapes so it jits and runs inside a jitted step: group ids
are arbitrary integers (task ids, say), mapped to dense segment ids with a fixed-size
`jnp.unique`, and the per-group minima and maxima come from segment ops with N segments (N is
the static batch size, an upper bound on the number of groups).

Released-code quirks (NVlabs release) that are treated as bugs, not reproduced by default:

* per-alias minima ignore rollouts that never used the alias: reproducible here with
  `alias_min_over_users=True`. A rollout that did not call a tool then normalises *below* 0 on
  that tool's coordinate, which the paper's formula never does.
* correct rollouts receive an extra group-constant bonus from the cost/latency terms. The exact
  form is not specified in the project's reference notes, so there is no switch for it; with the
  paper's normalisation the cost/latency coordinates lie in [0, 1] and the rollout with the
  group's highest cost gets exactly 0 on them.

The advantage-side details of the release (sample std, clipping to +-3, +0.1 boost) belong to
the advantage registry in `orchestra_jax.rl`, not here: this module only produces rewards.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

#: Number of non-tool coordinates at the end of the feature vector: outcome, -cost, -latency.
NUM_EXTRA_FEATURES = 3


def _as_float(name: str, value: jax.typing.ArrayLike, ndim: int) -> jax.Array:
    array = jnp.asarray(value)
    if array.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {array.shape}")
    if not jnp.issubdtype(array.dtype, jnp.floating):
        array = array.astype(jnp.float32)
    return array


def feature_vector(
    tool_counts: jax.typing.ArrayLike,
    outcome: jax.typing.ArrayLike,
    cost: jax.typing.ArrayLike,
    latency: jax.typing.ArrayLike,
) -> jax.Array:
    """M = [tool_counts..., outcome, -cost, -latency], shape (N, K + 3).

    Kept separate so evaluation code (the appendix-L score) and metrics describe rollouts with
    exactly the vector the reward normalises.
    """
    counts = _as_float("tool_counts", tool_counts, 2)
    n = counts.shape[0]
    columns = []
    for name, value in (("outcome", outcome), ("cost", cost), ("latency", latency)):
        column = _as_float(name, value, 1)
        if column.shape[0] != n:
            raise ValueError(f"{name} has {column.shape[0]} rows but tool_counts has {n}")
        columns.append(column)
    out, cost_col, latency_col = columns
    dtype = jnp.result_type(counts, out, cost_col, latency_col)
    return jnp.concatenate(
        [
            counts.astype(dtype),
            out.astype(dtype)[:, None],
            -cost_col.astype(dtype)[:, None],
            -latency_col.astype(dtype)[:, None],
        ],
        axis=1,
    )


def dense_group_ids(group_ids: jax.typing.ArrayLike) -> jax.Array:
    """Map arbitrary integer group ids to 0..G-1 (G <= N) with a static output size, so it jits."""
    ids = jnp.asarray(group_ids)
    if ids.ndim != 1:
        raise ValueError(f"group_ids must have 1 dimension, got shape {ids.shape}")
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise ValueError(f"group_ids must be integers, got dtype {ids.dtype}")
    _, inverse = jnp.unique(ids, size=ids.shape[0], fill_value=0, return_inverse=True)
    return inverse.reshape(ids.shape)


def group_minmax_normalize(
    features: jax.typing.ArrayLike,
    group_ids: jax.typing.ArrayLike,
    participates: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """(M - min_group M) / (max_group M - min_group M) per coordinate; 0 where max = min.

    `participates` (N, D) or (N,) says which entries take part in their group's min and max
    (padding rows, non-finite values and, for the release quirk, unused aliases do not). An
    entry whose group has no participant on a coordinate, or a non-finite entry, normalises to
    0. Non-participating entries are still normalised against the group's range.
    """
    values = jnp.asarray(features)
    if values.ndim != 2:
        raise ValueError(f"features must have 2 dimensions, got shape {values.shape}")
    n = values.shape[0]
    segments = dense_group_ids(group_ids)
    if segments.shape[0] != n:
        raise ValueError(f"group_ids has {segments.shape[0]} rows but features has {n}")
    finite = jnp.isfinite(values)
    mask = finite
    if participates is not None:
        given = jnp.asarray(participates, dtype=bool)
        mask = mask & (given[:, None] if given.ndim == 1 else given)
    lo = jax.ops.segment_min(jnp.where(mask, values, jnp.inf), segments, num_segments=n)
    hi = jax.ops.segment_max(jnp.where(mask, values, -jnp.inf), segments, num_segments=n)
    lo, hi = lo[segments], hi[segments]
    span = hi - lo
    informative = jnp.isfinite(span) & (span > 0) & finite
    safe_span = jnp.where(informative, span, 1.0)
    safe_values = jnp.where(informative, values, 0.0)
    safe_lo = jnp.where(informative, lo, 0.0)
    return jnp.where(informative, (safe_values - safe_lo) / safe_span, 0.0)


def toolorchestra_reward(
    tool_counts: jax.typing.ArrayLike,
    outcome: jax.typing.ArrayLike,
    cost: jax.typing.ArrayLike,
    latency: jax.typing.ArrayLike,
    preference: jax.typing.ArrayLike,
    group_ids: jax.typing.ArrayLike,
    valid: jax.typing.ArrayLike | None = None,
    alias_min_over_users: bool | jax.typing.ArrayLike = False,
) -> jax.Array:
    """The paper's reward for a batch of rollouts, shape (N,).

    tool_counts (N, K) calls per tool alias; outcome (N,) in {0, 1} (> 0.5 counts as solved);
    cost (N,) USD and latency (N,) seconds as positive numbers; preference (N, K + 3) or
    (K + 3,) ordered [tools..., outcome, cost, latency]; group_ids (N,) integers, rollouts of
    one task share one id. `valid` (N,) marks real rows: padding rows neither move their
    group's min/max nor get a reward. `alias_min_over_users=True` reproduces the release's
    quirk (tool minima over the rollouts that used the tool); off by default because it is a
    bug. Both keyword arguments may be traced, so `jax.jit(toolorchestra_reward)` works as is.
    """
    features = feature_vector(tool_counts, outcome, cost, latency)
    n, width = features.shape
    num_tools = width - NUM_EXTRA_FEATURES
    prefs = jnp.asarray(preference, dtype=features.dtype)
    if prefs.shape not in ((width,), (n, width)):
        raise ValueError(
            f"preference must have shape ({n}, {width}) or ({width},) for {num_tools} tools "
            f"[tools..., outcome, cost, latency], got {prefs.shape}"
        )
    rows = jnp.ones((n,), bool) if valid is None else jnp.asarray(valid, dtype=bool)
    if rows.shape != (n,):
        raise ValueError(f"valid must have shape ({n},), got {rows.shape}")
    participates = jnp.broadcast_to(rows[:, None], features.shape)
    used_tool = jnp.concatenate(
        [features[:, :num_tools] > 0, jnp.ones((n, NUM_EXTRA_FEATURES), bool)], axis=1
    )
    quirk = jnp.asarray(alias_min_over_users, dtype=bool)
    participates = participates & (used_tool | ~quirk)
    normalized = group_minmax_normalize(features, group_ids, participates)
    solved = features[:, num_tools] > 0.5
    reward = jnp.sum(normalized * prefs, axis=-1)
    return jnp.where(solved & rows, reward, 0.0)
