"""The jitted, sharded GRPO/PPO update step: ``(train_state, batch) -> (train_state, metrics)``.

One XLA program per batch shape does everything: the policy's token log-probs (from hidden
states, the LM head applied chunk by chunk so the ``(B, T, V)`` logits never exist at once),
the frozen reference's log-probs for the KL (no gradient), the loss from the registry, the
optional PPO critic with its clipped value loss, micro-batch gradient accumulation, and the
optax update. The train state is donated: its buffers are reused for the new state. With
``UpdateConfig.skip_nonfinite`` a step whose loss or global gradient norm is not finite
changes neither the params nor the optimizer state; the metrics' ``skipped_nonfinite`` is 1.0
for such a step and 0.0 for every applied one.

Exact accumulation: every loss term (policy, KL, entropy, value) is aggregated over the same
loss mask with the same mode, so all share one denominator. Each micro-batch contributes the
gradient of its loss *sums*; the summed gradient is divided once, by the summed denominator,
at the end. ``k`` micro-batches therefore give the gradient of the whole batch, not a mean of
micro-batch means (see ``orchestra_jax.rl.losses``).

Token alignment follows ``orchestra_jax.rl.batch``: arrays are indexed by the predicted token;
the log-prob (and the critic's value) of token ``t`` comes from position ``t - 1``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from orchestra_jax.rl.batch import TrainBatch
from orchestra_jax.rl.losses import (
    AGG_MODES,
    KL_ESTIMATORS,
    POLICY_LOSSES,
    aggregate_loss,
    entropy_from_logits,
    finalize_loss,
    kl_loss,
    policy_loss,
    ppo_metrics,
)
from orchestra_jax.rl.train_state import TrainState
from orchestra_jax.sharding.rules import LogicalRules, logical_rules, logical_to_spec

Array = jax.Array

_PPO_METRIC_OPTIONS = ("clip_low", "clip_high", "dual_clip")
#: Statistics combined across micro-batches by ``max`` instead of ``+``.
_MAX_STATS = ("ratio_max",)


def _method_policy_options() -> dict[str, Any]:
    return {"clip_low": 0.2, "clip_high": 0.28, "dual_clip": 10.0}


@dataclasses.dataclass(frozen=True)
class UpdateConfig:
    """What the update step optimises. Defaults are the method's released recipe: PPO clip
    0.2 / 0.28 with dual clip 10, token-mean, k2 KL in the loss at 1e-4, no entropy bonus.

    ``value_coef > 0`` turns on the PPO critic (the model needs ``value_head=True`` and the
    batch ``returns`` / ``old_values``); ``value_clip`` bounds ``|v - old_v|`` (``None``: off).
    ``logits_chunk`` is the sequence chunk of the LM head (``None``: whole sequence).

    ``choice_entropy_coef > 0`` adds a bonus on the entropy of the *marginal* choice
    distribution (``marginal_choice_entropy``): the policy's distribution over the tokens
    ``choice_ids`` (renormalised among them), averaged over every sampled position whose token
    is one of them, in each micro-batch. Why: a per-token entropy bonus asks every decision to
    stay uncertain; this one only asks that the batch's decisions do not all fall on the same
    choice, so each task type may still settle on its own. It is the entropy term of the
    mutual information between the prompt and the choice. The bonus is computed per micro-batch
    and weighted by its loss denominator, so unlike every other term it depends on how the
    batch is split (a marginal over the whole batch is not a sum over micro-batches).

    ``choice_format_coef > 0`` adds ``-coef * log P(the token is one of choice_ids)`` at each
    turn's decision position (``choice_set_logmass``): it keeps the policy's mass on
    well-formed choices without preferring any of them. Why: advantages of both signs push
    sampled choices up and down, and mass pushed off a choice can land on any of the other
    vocabulary pieces, which no advantage ever pushes back (a malformed turn's episode can
    still be right, so it is not reliably penalised).

    Gradient accumulation (exact: every split gives the same update): the step runs at least
    ``micro_batches`` micro-batches, and more when needed so that one micro-batch holds at
    most ``micro_batch_tokens`` tokens per device (``None``: exactly ``micro_batches``).
    Small micro-batches keep a layer's activations in the CPU caches (tiny 16x1024 on 2 cores:
    2k-token micro-batches are ~1.7x faster than one 16k-token batch) and bound activation
    memory on accelerators; see `micro_batch_count`."""

    policy_loss: str = "ppo_clip"
    policy_options: Mapping[str, Any] = dataclasses.field(default_factory=_method_policy_options)
    agg_mode: str = "token-mean"
    loss_scale_factor: float | None = None
    kl_coef: float = 1e-4
    kl_estimator: str = "k2"
    entropy_coef: float = 0.0
    value_coef: float = 0.0
    value_clip: float | None = 0.2
    micro_batches: int = 1
    micro_batch_tokens: int | None = 2048
    logits_chunk: int | None = 512
    choice_ids: tuple[int, ...] = ()
    #: The group of each of ``choice_ids`` (ints from 0; empty: every choice its own group).
    #: The marginal whose entropy the bonus raises is then over groups, so spreading a
    #: decision *within* a group earns nothing (toolworld: one group per tool, so the bonus
    #: keeps the tools apart and the reward alone picks the expert).
    choice_groups: tuple[int, ...] = ()
    choice_entropy_coef: float = 0.0
    choice_format_coef: float = 0.0
    #: Skip (leave params and optimizer state as they were) a step whose loss or gradient
    #: norm is not finite. The select it adds changes how XLA fuses the optimizer's
    #: arithmetic: on CPU an applied step then differs from the unguarded one in the last bit
    #: of some parameters. Off here (the library's plain step); training turns it on with
    #: `train.skip_nonfinite_updates` (default True).
    skip_nonfinite: bool = False

    def validate(self) -> None:
        """Raise ``ValueError`` for a misspelt name or an impossible value, before tracing."""
        POLICY_LOSSES.get(self.policy_loss)
        KL_ESTIMATORS.get(self.kl_estimator)
        if self.agg_mode not in AGG_MODES:
            raise ValueError(f"unknown agg_mode {self.agg_mode!r}; known: {', '.join(AGG_MODES)}")
        if self.micro_batches < 1:
            raise ValueError(f"micro_batches must be >= 1, got {self.micro_batches}")
        for name in ("kl_coef", "entropy_coef", "value_coef"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.value_clip is not None and self.value_clip <= 0:
            raise ValueError(f"value_clip must be > 0 (or None), got {self.value_clip}")
        if self.logits_chunk is not None and self.logits_chunk < 1:
            raise ValueError(f"logits_chunk must be >= 1 (or None), got {self.logits_chunk}")
        if self.choice_entropy_coef < 0:
            raise ValueError(f"choice_entropy_coef must be >= 0, got {self.choice_entropy_coef}")
        if self.choice_format_coef < 0:
            raise ValueError(f"choice_format_coef must be >= 0, got {self.choice_format_coef}")
        if ((self.choice_entropy_coef > 0 or self.choice_format_coef > 0)
                and len(set(self.choice_ids)) < 2):
            raise ValueError("choice_entropy_coef or choice_format_coef > 0 needs at least two "
                             f"distinct choice_ids, got {self.choice_ids}")
        if self.choice_groups and (len(self.choice_groups) != len(self.choice_ids)
                                   or min(self.choice_groups) < 0):
            raise ValueError(f"choice_groups must give each of the {len(self.choice_ids)} "
                             f"choice_ids a group >= 0, got {self.choice_groups}")
        if self.micro_batch_tokens is not None and self.micro_batch_tokens < 1:
            raise ValueError("micro_batch_tokens must be >= 1 (or None), got "
                             f"{self.micro_batch_tokens}")


def micro_batch_count(rows: int, length: int, config: UpdateConfig, batch_shards: int = 1) -> int:
    """How many micro-batches the update step splits a ``rows x length`` batch into.

    The fewest ``k`` among ``micro_batches``, ``2 * micro_batches``, ... that split the rows of
    every batch shard evenly (so the split moves no data) into micro-batches of at most
    ``micro_batch_tokens`` tokens per shard; when even one row per shard is more, the largest
    such ``k``. Without a token budget: exactly ``micro_batches``. Raises ``ValueError`` when
    ``micro_batches`` does not divide the rows."""
    k_min = config.micro_batches
    if rows % k_min:
        raise ValueError(f"batch of {rows} rows does not split into {k_min} micro-batches")
    if config.micro_batch_tokens is None:
        return k_min
    shards = batch_shards if batch_shards >= 1 and rows % batch_shards == 0 else 1
    even = [k for k in range(k_min, rows + 1, k_min) if (rows // shards) % k == 0]
    for k in even:
        if rows // shards // k * length <= config.micro_batch_tokens:
            return k
    return even[-1] if even else k_min


# ---------------------------------------------------------------------------------------------
# Per-token quantities from hidden states


def _shift_right(x_bt: Array) -> Array:
    """Value at ``t - 1`` moved to ``t`` along axis 1 (position 0 gets 0; trailing axes ride
    along): next-token -> predicted token."""
    return jnp.concatenate([jnp.zeros_like(x_bt[:, :1]), x_bt[:, :-1]], axis=1)


def token_logprobs(model: nnx.Module, hidden_btd: Array, input_ids_bt: Array,
                   chunk: int | None = None) -> tuple[Array, Array]:
    """Log-prob of each token given its prefix, and the entropy of the distribution that
    predicted it, both ``(B, T)`` aligned to the predicted token (position 0 is 0).

    The LM head runs over sequence chunks of ``chunk`` positions under ``lax.scan`` with
    rematerialisation, so at most ``(B, chunk, V)`` logits are live in the forward and the
    backward pass; ``chunk`` must divide ``T`` (else one chunk is used)."""
    logp, ent, _ = head_outputs(model, hidden_btd, input_ids_bt, chunk)
    return logp, ent


def head_outputs(model: nnx.Module, hidden_btd: Array, input_ids_bt: Array,
                 chunk: int | None = None, choice_ids: tuple[int, ...] = (),
                 ) -> tuple[Array, Array, Array | None]:
    """`token_logprobs` plus, when ``choice_ids`` is given, the ``(B, T, K)`` log-probabilities
    of those ``K`` tokens at every position (aligned the same way; ``None`` otherwise), taken
    from the same chunked head so no second pass over the vocabulary is needed."""
    b, t, d = hidden_btd.shape
    next_ids = jnp.concatenate([input_ids_bt[:, 1:], jnp.zeros_like(input_ids_bt[:, :1])], 1)
    c = chunk if chunk is not None and chunk < t and t % chunk == 0 else t
    n = t // c
    hidden_nbcd = hidden_btd.reshape(b, n, c, d).swapaxes(0, 1)
    ids_nbc = next_ids.reshape(b, n, c).swapaxes(0, 1)
    graphdef, head_state = nnx.split(model)
    choices = jnp.asarray(choice_ids, jnp.int32)

    @jax.checkpoint
    def one_chunk(state: nnx.State, h_bcd: Array, ids_bc: Array,
                  ) -> tuple[Array, Array, Array]:
        logits = nnx.merge(graphdef, state).logits_from_hidden(h_bcd)
        log_z = jax.nn.logsumexp(logits, axis=-1)
        picked = jnp.take_along_axis(logits, ids_bc[..., None], axis=-1)[..., 0]
        return (picked - log_z, entropy_from_logits(logits),
                jnp.take(logits, choices, axis=-1) - log_z[..., None])

    def body(carry: None, xs: tuple[Array, Array]) -> tuple[None, tuple[Array, ...]]:
        return carry, one_chunk(head_state, *xs)

    _, (logp_nbc, ent_nbc, choice_nbck) = jax.lax.scan(body, None, (hidden_nbcd, ids_nbc))
    logp = logp_nbc.swapaxes(0, 1).reshape(b, t)
    ent = ent_nbc.swapaxes(0, 1).reshape(b, t)
    choice_logp = None
    if choice_ids:
        choice_logp = _shift_right(choice_nbck.swapaxes(0, 1).reshape(b, t, len(choice_ids)))
    return _shift_right(logp), _shift_right(ent), choice_logp


def choice_set_logmass(choice_logp_btk: Array, mask_bt: Array) -> tuple[Array, Array]:
    """Mean, over the decision positions (each sequence's first loss-masked token: where a
    turn's completion starts), of the log-probability that the token there is any of the
    choices; and how many such positions there were (0 positions: 0, no gradient)."""
    starts = (mask_bt > 0) & ~(jnp.pad(mask_bt, ((0, 0), (1, 0)))[:, :-1] > 0)
    weights = starts.astype(jnp.float32)
    count = weights.sum()
    logmass = jax.nn.logsumexp(choice_logp_btk, axis=-1)
    return jnp.sum(weights * logmass) / jnp.maximum(count, 1.0), count


def marginal_choice_entropy(choice_logp_btk: Array, input_ids_bt: Array, mask_bt: Array,
                            choice_ids: tuple[int, ...],
                            choice_groups: tuple[int, ...] = ()) -> tuple[Array, Array]:
    """Entropy (nats) of the mean, over the masked positions whose token is one of
    ``choice_ids``, of the policy's distribution renormalised among those tokens; and how many
    such positions there were (0 positions: entropy 0, no gradient). With ``choice_groups``
    (a group per choice) the mean's mass is summed per group first: the entropy of the
    marginal over groups."""
    at_choice = (mask_bt > 0) & jnp.isin(input_ids_bt, jnp.asarray(choice_ids, jnp.int32))
    weights = at_choice.astype(jnp.float32)
    probs = jax.nn.softmax(choice_logp_btk, axis=-1)
    count = weights.sum()
    mean = jnp.einsum("bt,btk->k", weights, probs) / jnp.maximum(count, 1.0)
    # With no choice position the mean is all zeros, where entr' = -log(0) - 1 is infinite:
    # the `where` below would then multiply a zero by that infinity and turn the whole
    # gradient into NaN. A constant stand-in keeps that branch free of any gradient.
    mean = jnp.where(count > 0, mean, 1.0 / len(choice_ids))
    if choice_groups:
        mean = jax.ops.segment_sum(mean, jnp.asarray(choice_groups, jnp.int32),
                                   num_segments=max(choice_groups) + 1)
    entropy = jnp.sum(jax.scipy.special.entr(mean))
    return jnp.where(count > 0, entropy, 0.0), count


def reference_logprobs(graphdef: nnx.GraphDef, ref_params: nnx.State, batch: TrainBatch,
                       chunk: int | None) -> Array:
    """The frozen reference policy's token log-probs, outside any gradient."""
    ref_params = jax.lax.stop_gradient(ref_params)
    model = nnx.merge(graphdef, ref_params)
    hidden, _ = model.hidden_states(batch.input_ids, batch.attention_mask)
    logp, _ = token_logprobs(model, hidden, batch.input_ids, chunk)
    return jax.lax.stop_gradient(logp)


# ---------------------------------------------------------------------------------------------
# One micro-batch: loss sums, their gradient, and statistics as sums


def _micro_batch(graphdef: nnx.GraphDef, config: UpdateConfig, params: nnx.State,
                 ref_params: nnx.State | None, mb: TrainBatch) -> tuple[nnx.State, dict]:
    mask = mb.loss_mask.astype(jnp.float32)
    agg = {"agg_mode": config.agg_mode, "loss_scale_factor": config.loss_scale_factor}
    use_kl = config.kl_coef > 0
    use_value = config.value_coef > 0
    ref_logp = (reference_logprobs(graphdef, ref_params, mb, config.logits_chunk)
                if use_kl else None)

    def objective(p: nnx.State) -> tuple[Array, dict[str, Array]]:
        model = nnx.merge(graphdef, p)
        hidden, _ = model.hidden_states(mb.input_ids, mb.attention_mask)
        use_choice = config.choice_entropy_coef > 0 or config.choice_format_coef > 0
        logp, entropy, choice_logp = head_outputs(
            model, hidden, mb.input_ids, config.logits_chunk,
            config.choice_ids if use_choice else ())
        pg_sum, denom = policy_loss(config.policy_loss, logp, mb.old_logprobs, mb.advantages,
                                    mask, **agg, **dict(config.policy_options))
        if config.entropy_coef == 0:
            entropy = jax.lax.stop_gradient(entropy)
        ent_sum, _ = aggregate_loss(config.agg_mode, entropy, mask,
                                    loss_scale_factor=config.loss_scale_factor)
        total = pg_sum - config.entropy_coef * ent_sum
        aux = {"denom": denom, "policy": pg_sum, "entropy": ent_sum,
               "logp": jax.lax.stop_gradient(logp)}
        # Both choice terms are means over the micro-batch, weighted by its denominator: the
        # finalised loss is then the denominator-weighted mean of the micro-batches' values.
        if config.choice_entropy_coef > 0:
            choice_ent, _ = marginal_choice_entropy(choice_logp, mb.input_ids, mask,
                                                    config.choice_ids, config.choice_groups)
            total = total - config.choice_entropy_coef * choice_ent * denom
            aux["choice_entropy"] = jax.lax.stop_gradient(choice_ent * denom)
        if config.choice_format_coef > 0:
            logmass, _ = choice_set_logmass(choice_logp, mask)
            total = total - config.choice_format_coef * logmass * denom
            aux["choice_logmass"] = jax.lax.stop_gradient(logmass * denom)
        if use_kl:
            kl_sum, _ = kl_loss(config.kl_estimator, logp, ref_logp, mask, **agg)
            total = total + config.kl_coef * kl_sum
            aux["kl"] = kl_sum
        if use_value:
            values = _shift_right(model.values_from_hidden(hidden))
            returns = mb.returns.astype(jnp.float32)
            old_values = mb.old_values.astype(jnp.float32)
            unclipped = jnp.square(values - returns)
            if config.value_clip is not None:
                clipped_values = old_values + jnp.clip(values - old_values, -config.value_clip,
                                                       config.value_clip)
                clipped = jnp.square(clipped_values - returns)
                vf_bt = 0.5 * jnp.maximum(unclipped, clipped)
                vf_clipped = (clipped > unclipped).astype(jnp.float32)
            else:
                vf_bt = 0.5 * unclipped
                vf_clipped = jnp.zeros_like(unclipped)
            vf_sum, _ = aggregate_loss(config.agg_mode, vf_bt, mask,
                                       loss_scale_factor=config.loss_scale_factor)
            total = total + config.value_coef * vf_sum
            aux["value"] = vf_sum
            aux["value_clipfrac"] = jnp.sum(jnp.where(mask > 0, vf_clipped, 0.0))
            aux["value_mean"] = jnp.sum(jnp.where(mask > 0, jax.lax.stop_gradient(values), 0.0))
        aux["total"] = total
        return total, aux

    grads, aux = jax.grad(objective, has_aux=True)(params)
    logp = aux.pop("logp")
    stats = dict(aux)
    metric_options = {k: v for k, v in dict(config.policy_options).items()
                      if k in _PPO_METRIC_OPTIONS}
    if config.policy_loss != "ppo_clip":
        metric_options = {}
    for name, (value, _) in ppo_metrics(logp, mb.old_logprobs, mb.advantages, mask,
                                        **metric_options).items():
        stats[name] = value
    adv_bt = jnp.broadcast_to(mb.advantages if mb.advantages.ndim == 2
                              else mb.advantages[:, None], mask.shape).astype(jnp.float32)
    stats["tokens"] = mask.sum()
    stats["adv_sum"] = jnp.sum(jnp.where(mask > 0, adv_bt, 0.0))
    stats["adv_sq_sum"] = jnp.sum(jnp.where(mask > 0, adv_bt * adv_bt, 0.0))
    ratio = jnp.exp(jnp.clip(logp - mb.old_logprobs, -20.0, 20.0))
    stats["ratio_max"] = jnp.max(jnp.where(mask > 0, ratio, -jnp.inf))
    if ref_logp is not None:
        stats["ref_kl_k1"] = jnp.sum(jnp.where(mask > 0, logp - ref_logp, 0.0))
    return grads, stats


def _combine(acc: dict[str, Array], new: dict[str, Array]) -> dict[str, Array]:
    return {k: (jnp.maximum(acc[k], new[k]) if k in _MAX_STATS else acc[k] + new[k])
            for k in acc}


def _metrics(stats: dict[str, Array], grad_norm: Array, config: UpdateConfig) -> dict[str, Array]:
    """Scalar metrics from accumulated sums: every mean divides once, by the batch total."""
    denom, tokens = stats["denom"], stats["tokens"]

    def per_token(name: str) -> Array:
        return finalize_loss(stats[name], tokens)

    out = {
        "loss/total": finalize_loss(stats["total"], denom),
        "loss/policy": finalize_loss(stats["policy"], denom),
        "loss/entropy": finalize_loss(stats["entropy"], denom),
        "clipfrac": per_token("clipfrac"),
        "clipfrac_low": per_token("clipfrac_low"),
        "clipfrac_high": per_token("clipfrac_high"),
        "clipfrac_dual": per_token("clipfrac_dual"),
        "approx_kl": per_token("approx_kl"),
        "approx_kl_k3": per_token("approx_kl_k3"),
        "ratio_mean": per_token("ratio"),
        "ratio_max": jnp.where(tokens > 0, stats["ratio_max"], 0.0),
        "advantage_mean": per_token("adv_sum"),
        "grad_norm": grad_norm,
        "tokens": tokens,
    }
    adv_var = per_token("adv_sq_sum") - jnp.square(out["advantage_mean"])
    out["advantage_std"] = jnp.sqrt(jnp.maximum(adv_var, 0.0))
    if "kl" in stats:
        out["loss/kl"] = finalize_loss(stats["kl"], denom)
        out["kl_k1"] = per_token("ref_kl_k1")
    if "choice_entropy" in stats:
        out["loss/choice_entropy"] = finalize_loss(stats["choice_entropy"], denom)
    if "choice_logmass" in stats:
        out["loss/choice_logmass"] = finalize_loss(stats["choice_logmass"], denom)
    if "value" in stats:
        out["loss/value"] = finalize_loss(stats["value"], denom)
        out["value_clipfrac"] = per_token("value_clipfrac")
        out["value_mean"] = per_token("value_mean")
    return {k: jnp.asarray(v, jnp.float32) for k, v in out.items()}


# ---------------------------------------------------------------------------------------------
# The step


def _split_micro_batches(batch: TrainBatch, k: int, spec: jax.P) -> TrainBatch:
    """``(B, ...) -> (k, B / k, ...)`` with micro-batch ``j`` = rows ``j, j + k, j + 2k, ...``:
    each device keeps its own rows in every micro-batch, so the split moves no data."""
    rows = batch.input_ids.shape[0]
    if rows % k:
        raise ValueError(f"batch of {rows} rows does not split into {k} micro-batches")

    def split(x: Array) -> Array:
        x = x.reshape(rows // k, k, *x.shape[1:]).swapaxes(0, 1)
        return jax.lax.with_sharding_constraint(x, jax.P(None, *spec))

    return jax.tree.map(split, batch)


def _keep_unless(skipped: Array, new: Any, old: Any) -> Any:
    """``old`` where the scalar ``skipped`` holds, else ``new`` (leaf by leaf)."""
    return jax.tree.map(lambda n, o: jnp.where(skipped, o, n), new, old)


def build_update_fn(graphdef: nnx.GraphDef, config: UpdateConfig,
                    optimizer: optax.GradientTransformation,
                    batch_spec: jax.P | None = None,
                    grad_shardings: Any = None,
                    batch_shards: int = 1) -> Callable[[TrainState, TrainBatch], Any]:
    """The un-jitted step (for tests and custom wrappers); ``make_update_step`` jits it.
    ``batch_shards``: how many devices share the batch rows (see `micro_batch_count`)."""
    config.validate()

    def update(state: TrainState, batch: TrainBatch) -> tuple[TrainState, dict[str, Array]]:
        if config.kl_coef > 0 and state.ref_params is None:
            raise ValueError("kl_coef > 0 needs a reference policy: build the train state "
                             "with reference=True")
        if config.value_coef > 0 and (batch.returns is None or batch.old_values is None):
            raise ValueError("value_coef > 0 needs batch.returns and batch.old_values")
        params = state.params
        k = micro_batch_count(*batch.input_ids.shape, config, batch_shards)
        micro = _split_micro_batches(batch, k, batch_spec if batch_spec is not None else jax.P())

        def constrain_grads(g: nnx.State) -> nnx.State:
            if grad_shardings is None:
                return g
            return jax.lax.with_sharding_constraint(g, grad_shardings)

        def body(carry, mb):
            grad_acc, stats_acc = carry
            grads, stats = _micro_batch(graphdef, config, params, state.ref_params, mb)
            grads = jax.tree.map(lambda a, g: a + g.astype(jnp.float32), grad_acc, grads)
            return (constrain_grads(grads), _combine(stats_acc, stats)), None

        first = jax.tree.map(lambda x: x[0], micro)
        stats_shape = jax.eval_shape(
            lambda: _micro_batch(graphdef, config, params, state.ref_params, first)[1])
        stats0 = {name: (jnp.full((), -jnp.inf, s.dtype) if name in _MAX_STATS
                         else jnp.zeros((), s.dtype)) for name, s in stats_shape.items()}
        grads0 = constrain_grads(jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params))
        (grad_sum, stats), _ = jax.lax.scan(body, (grads0, stats0), micro)

        denom = stats["denom"]
        grads = jax.tree.map(lambda g, p: finalize_loss(g, denom).astype(p.dtype),
                             grad_sum, params)
        grad_norm = optax.tree.norm(grads)
        metrics = _metrics(stats, grad_norm, config)
        updates, opt_state = optimizer.update(grads, state.opt_state, params)
        new_params = optax.apply_updates(params, updates)
        skipped = jnp.zeros((), jnp.bool_)
        if config.skip_nonfinite:
            # A non-finite loss or gradient (a NaN advantage, an overflow) would poison the
            # params and the optimizer moments for good; such a step is skipped instead: both
            # stay as they were (the critic is part of the params, the EMA is not touched
            # here); the step count and the rng advance.
            skipped = ~(jnp.isfinite(metrics["loss/total"]) & jnp.isfinite(grad_norm))
            new_params = _keep_unless(skipped, new_params, params)
            opt_state = _keep_unless(skipped, opt_state, state.opt_state)
        metrics["skipped_nonfinite"] = skipped.astype(jnp.float32)
        rng, _ = jax.random.split(state.rng)
        new_state = TrainState(step=state.step + 1, params=new_params, opt_state=opt_state,
                               ref_params=state.ref_params, rng=rng,
                               ema_params=state.ema_params)
        return new_state, metrics

    return update


class UpdateStep:
    """The jitted step bound to its mesh and rules: calling it traces (once per batch shape)
    inside ``jax.set_mesh(mesh)`` and the logical rules, so the model's activation
    constraints resolve to this mesh. ``jitted`` is the underlying ``jax.jit`` object."""

    def __init__(self, jitted: Any, mesh: jax.sharding.Mesh, rules: LogicalRules | None):
        self.jitted = jitted
        self.mesh = mesh
        self.rules = dict(rules or {})

    def __call__(self, state: TrainState, batch: TrainBatch) -> tuple[TrainState, dict]:
        with jax.set_mesh(self.mesh), logical_rules(self.rules):
            return self.jitted(state, batch)

    def lower(self, state: Any, batch: Any) -> Any:
        with jax.set_mesh(self.mesh), logical_rules(self.rules):
            return self.jitted.lower(state, batch)


def make_update_step(
    graphdef: nnx.GraphDef,
    config: UpdateConfig,
    mesh: jax.sharding.Mesh,
    rules: LogicalRules | None,
    state_shardings: TrainState,
    *,
    optimizer: optax.GradientTransformation,
) -> UpdateStep:
    """``(train_state, batch) -> (train_state, metrics)``, jitted with explicit shardings: the
    state in and out on ``state_shardings`` (see ``train_state_shardings``), the batch rows
    over the batch axes, metrics replicated; the input state is donated."""
    batch_spec = logical_to_spec(("batch",), None, mesh, rules)
    batch_sharding = jax.sharding.NamedSharding(mesh, batch_spec)
    replicated = jax.sharding.NamedSharding(mesh, jax.P())
    batch_shards = 1
    for axes in batch_spec:
        for axis in (axes,) if isinstance(axes, str) else (axes or ()):
            batch_shards *= mesh.shape[axis]
    update = build_update_fn(graphdef, config, optimizer, batch_spec,
                             grad_shardings=state_shardings.params, batch_shards=batch_shards)
    jitted = jax.jit(update, in_shardings=(state_shardings, batch_sharding),
                     out_shardings=(state_shardings, replicated), donate_argnums=(0,))
    return UpdateStep(jitted, mesh, rules)
