"""Per-token quantities of a whole RL batch, computed once before the updates.

Two estimators need more than the sampler's log-probs before any gradient step:

- a KL penalty *in the reward* (`loss.kl_in = "reward"`) needs the frozen reference policy's
  log-probs of every sampled token, so that ``-kl_coef * KL(old || ref)`` can join the reward
  that the advantages are computed from;
- GAE needs the critic's value of every token under the parameters that sampled them (the
  "old values" that the clipped value loss is anchored to).

Both come from one jitted forward over a packed `TrainBatch` with the train state's sharding:
`(state, batch) -> {"ref_logprobs": (B, T), "values": (B, T)}` (only the parts asked for).
Values are shifted like log-probs: position ``t`` holds the value of the prefix that predicted
token ``t``, so both line up with the loss mask.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from orchestra_jax.rl.batch import TrainBatch
from orchestra_jax.rl.train_state import TrainState
from orchestra_jax.rl.update_step import reference_logprobs
from orchestra_jax.sharding.rules import LogicalRules, logical_rules, logical_to_spec


def _predicted_position(x_bt: jax.Array) -> jax.Array:
    """Move the value at ``t - 1`` to ``t`` (position 0 gets 0), as the log-probs are."""
    return jnp.concatenate([jnp.zeros_like(x_bt[:, :1]), x_bt[:, :-1]], axis=1)


def build_score_fn(graphdef: nnx.GraphDef, *, reference: bool, values: bool,
                   logits_chunk: int | None = None) -> Callable[[TrainState, TrainBatch], dict]:
    """The un-jitted scorer; `make_scorer` binds it to a mesh."""
    if not (reference or values):
        raise ValueError("build_score_fn: ask for reference log-probs, values, or both")

    def score(state: TrainState, batch: TrainBatch) -> dict[str, jax.Array]:
        out: dict[str, jax.Array] = {}
        if reference:
            if state.ref_params is None:
                raise ValueError("reference log-probs need a train state built with "
                                 "reference=True")
            out["ref_logprobs"] = reference_logprobs(graphdef, state.ref_params, batch,
                                                     logits_chunk)
        if values:
            model = nnx.merge(graphdef, jax.lax.stop_gradient(state.params))
            if not model.config.value_head:
                raise ValueError("values need a model with value_head=True")
            hidden, _ = model.hidden_states(batch.input_ids, batch.attention_mask)
            out["values"] = _predicted_position(
                model.values_from_hidden(hidden).astype(jnp.float32))
        return out

    return score


class Scorer:
    """The jitted scorer bound to its mesh and rules (traced once per batch shape)."""

    def __init__(self, jitted: Any, mesh: jax.sharding.Mesh, rules: LogicalRules | None):
        self.jitted = jitted
        self.mesh = mesh
        self.rules = dict(rules or {})

    def __call__(self, state: TrainState, batch: TrainBatch) -> dict[str, jax.Array]:
        with jax.set_mesh(self.mesh), logical_rules(self.rules):
            return self.jitted(state, batch)


def make_scorer(graphdef: nnx.GraphDef, mesh: jax.sharding.Mesh, rules: LogicalRules | None,
                state_shardings: TrainState, *, reference: bool, values: bool,
                logits_chunk: int | None = None) -> Scorer:
    """`(train_state, batch) -> {"ref_logprobs"?, "values"?}` as ``(B, T)`` float32 arrays,
    jitted with the state on ``state_shardings`` (not donated: the updates read it next) and
    rows over the batch axes."""
    batch_spec = logical_to_spec(("batch",), None, mesh, rules)
    rows = jax.sharding.NamedSharding(mesh, batch_spec)
    fn = build_score_fn(graphdef, reference=reference, values=values, logits_chunk=logits_chunk)
    jitted = jax.jit(fn, in_shardings=(state_shardings, rows), out_shardings=rows)
    return Scorer(jitted, mesh, rules)


__all__ = ["Scorer", "build_score_fn", "make_scorer"]
