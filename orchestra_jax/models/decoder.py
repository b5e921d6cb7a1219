"""The decoder-only policy: embeddings, a stack of `DecoderLayer`s, final norm, LM/value heads.

The same module serves training (full sequences, optional remat and scanned layers) and
sampling (prefill and one-token decode over a `KVCache`). Positions come from the attention
mask, so left- and right-padded batches give each real token the position it would have alone.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from orchestra_jax.models.config import ModelConfig, dtype_from_name
from orchestra_jax.models.kv_cache import KVCache
from orchestra_jax.models.layers import DecoderLayer, RMSNorm, make_param, rope_inverse_frequencies
from orchestra_jax.sharding.rules import constrain


class DecoderOutput(NamedTuple):
    logits: jax.Array | None  # (B, T, V) float32
    values: jax.Array | None  # (B, T) float32, when the config has a value head
    cache: KVCache | None  # the updated cache, when one was given
    hidden: jax.Array | None = None  # (B, T, D) after the final norm, on request


def positions_from_mask(mask_bt: jax.Array, offset_b: jax.Array | None = None) -> jax.Array:
    """Position of each token = number of real tokens before it (pads get the next position)."""
    positions = jnp.maximum(jnp.cumsum(mask_bt.astype(jnp.int32), axis=1) - 1, 0)
    if offset_b is not None:
        positions = positions + offset_b[:, None]
    return positions


def _stacked_layers(config: ModelConfig, rngs: nnx.Rngs) -> DecoderLayer:
    """One `DecoderLayer` whose parameters carry a leading `layers` axis, for `lax.scan`."""
    keys = jax.random.split(rngs.params(), config.num_layers)

    def init_one(key: jax.Array) -> nnx.State:
        return nnx.split(DecoderLayer(config, rngs=nnx.Rngs(params=key)))[1]

    graphdef = nnx.graphdef(nnx.eval_shape(lambda: DecoderLayer(config, rngs=nnx.Rngs(0))))
    stacked = nnx.merge(graphdef, jax.vmap(init_one)(keys))
    for _, variable in nnx.iter_graph(stacked):
        if isinstance(variable, nnx.Variable) and "logical_axes" in variable.get_metadata():
            variable.set_metadata("logical_axes", ("layers", *variable.logical_axes))
    return stacked


class Decoder(nnx.Module):
    """A Llama / Qwen2 / Qwen3 style causal decoder."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        pdt = dtype_from_name(config.param_dtype)
        d, v = config.hidden_size, config.vocab_size
        self.embed = make_param(rngs, (v, d), ("vocab", "embed"), pdt)
        if config.scan_layers:
            self.layers = _stacked_layers(config, rngs)
        else:
            self.layers = nnx.List(
                [DecoderLayer(config, rngs=rngs) for _ in range(config.num_layers)]
            )
        self.final_norm = RMSNorm(d, config.rms_norm_eps, pdt)
        if not config.tie_word_embeddings:
            self.lm_head = make_param(rngs, (d, v), ("embed", "vocab"), pdt)
        if config.value_head:
            self.value_kernel = make_param(rngs, (d,), ("embed",), jnp.float32)
            self.value_bias = make_param(None, (), (), jnp.float32, init="zeros")

    # ---- the pieces, usable alone (e.g. chunked log-probs in the learner) -------------------

    def hidden_states(
        self,
        input_ids_bt: jax.Array,
        attention_mask_bt: jax.Array | None = None,
        positions_bt: jax.Array | None = None,
        cache: KVCache | None = None,
    ) -> tuple[jax.Array, KVCache | None]:
        """Final-normed hidden states (B, T, D) and the updated cache."""
        cfg = self.config
        dtype = dtype_from_name(cfg.dtype)
        b, t = input_ids_bt.shape
        mask_bt = (
            jnp.ones((b, t), bool) if attention_mask_bt is None else attention_mask_bt.astype(bool)
        )
        if cache is None:
            key_mask_bs = mask_bt
            query_slots_t = jnp.arange(t)
            start = None
            if positions_bt is None:
                positions_bt = positions_from_mask(mask_bt)
        else:
            start = cache.end
            key_mask_bs = jax.lax.dynamic_update_slice(cache.key_mask, mask_bt, (0, start))
            query_slots_t = start + jnp.arange(t)
            if positions_bt is None:
                positions_bt = positions_from_mask(mask_bt, cache.next_position)
        inv_freq = rope_inverse_frequencies(cfg)

        x = jnp.take(self.embed[...], input_ids_bt, axis=0).astype(dtype)
        x = constrain(x, ("batch", "length", "act_embed"))
        layer_args = (positions_bt, key_mask_bs, query_slots_t, inv_freq)
        if cfg.scan_layers:
            x, new_kv = self._scan_layers(x, layer_args, cache, start)
        else:
            new_k, new_v = [], []
            for i, layer in enumerate(self.layers):
                kv = None if cache is None else (cache.k[i], cache.v[i])
                x, kv = _apply_layer(layer, x, layer_args, kv, start, cfg.remat)
                if kv is not None:
                    new_k.append(kv[0])
                    new_v.append(kv[1])
            new_kv = (tuple(new_k), tuple(new_v)) if cache is not None else None
        hidden = self.final_norm(x)
        new_cache = None
        if cache is not None:
            new_cache = KVCache(
                k=new_kv[0],
                v=new_kv[1],
                key_mask=key_mask_bs,
                end=cache.end + t,
                next_position=cache.next_position + mask_bt.sum(axis=1, dtype=jnp.int32),
            )
        return hidden, new_cache

    def _scan_layers(self, x, layer_args, cache, start):
        graphdef, state = nnx.split(self.layers)
        remat = self.config.remat

        def body(h, xs):
            layer_state, kv = xs
            layer = nnx.merge(graphdef, layer_state)
            return _apply_layer(layer, h, layer_args, kv, start, remat)

        kv_stack = None
        if cache is not None:  # a per-layer cache (built for an unrolled config) is stacked
            kv_stack = tuple(
                jnp.stack(c) if isinstance(c, tuple) else c for c in (cache.k, cache.v)
            )
        return jax.lax.scan(body, x, (state, kv_stack))

    def logits_from_hidden(self, hidden_btd: jax.Array) -> jax.Array:
        """LM-head logits in float32 (the matmul runs in the compute dtype)."""
        dtype = hidden_btd.dtype
        if self.config.tie_word_embeddings:
            logits = jnp.einsum(
                "btd,vd->btv", hidden_btd, self.embed[...].astype(dtype),
                preferred_element_type=jnp.float32,
            )
        else:
            logits = jnp.einsum(
                "btd,dv->btv", hidden_btd, self.lm_head[...].astype(dtype),
                preferred_element_type=jnp.float32,
            )
        return constrain(logits.astype(jnp.float32), ("batch", "length", "act_vocab"))

    def values_from_hidden(self, hidden_btd: jax.Array) -> jax.Array:
        """Scalar value per position (PPO critic), in float32."""
        h = hidden_btd.astype(jnp.float32)
        return h @ self.value_kernel[...] + self.value_bias[...]

    def __call__(
        self,
        input_ids_bt: jax.Array,
        attention_mask_bt: jax.Array | None = None,
        positions_bt: jax.Array | None = None,
        cache: KVCache | None = None,
        *,
        return_hidden: bool = False,
    ) -> DecoderOutput:
        hidden, new_cache = self.hidden_states(
            input_ids_bt, attention_mask_bt, positions_bt, cache
        )
        values = self.values_from_hidden(hidden) if self.config.value_head else None
        return DecoderOutput(
            logits=self.logits_from_hidden(hidden),
            values=values,
            cache=new_cache,
            hidden=hidden if return_hidden else None,
        )


def _apply_layer(
    layer: DecoderLayer,
    x: jax.Array,
    layer_args: tuple[Any, ...],
    kv: tuple[jax.Array, jax.Array] | None,
    start: jax.Array | None,
    remat: bool,
) -> tuple[jax.Array, Any]:
    if not remat:
        return layer(x, *layer_args, kv, start)
    graphdef, state = nnx.split(layer)

    @jax.checkpoint
    def run(state, x, layer_args, kv, start):
        return nnx.merge(graphdef, state)(x, *layer_args, kv, start)

    return run(state, x, layer_args, kv, start)


def init_decoder(config: ModelConfig, seed: int = 0) -> Decoder:
    """A randomly initialised decoder (unsharded); see `sharded_init` for meshes."""
    return Decoder(config, rngs=nnx.Rngs(params=seed))
