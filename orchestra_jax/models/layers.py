"""The decoder's building blocks: RMSNorm, rotary embeddings, GQA attention, SwiGLU MLP.

Every parameter carries `logical_axes` metadata (see `orchestra_jax.sharding.rules`); the
modules never name a mesh axis. Activations are constrained by logical name too, which is a
no-op outside a mesh context.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from orchestra_jax.models.config import ModelConfig, dtype_from_name
from orchestra_jax.sharding.rules import constrain

#: Added to the scores of masked keys. Finite (not -inf) so that a query with no visible key
#: (a pad token in a left-padded row) yields a uniform, not a NaN, distribution.
MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)

_normal = jax.nn.initializers.normal(stddev=0.02)

#: Query block of the cache-free (prefill/training) attention: blocks above the causal
#: diagonal are skipped.
ATTENTION_BLOCK = 256


def make_param(
    rngs: nnx.Rngs | None,
    shape: tuple[int, ...],
    logical_axes: tuple[str | None, ...],
    dtype: Any,
    init: str = "normal",
) -> nnx.Param:
    """A parameter with its logical axes recorded as metadata."""
    if init == "ones":
        value = jnp.ones(shape, dtype)
    elif init == "zeros":
        value = jnp.zeros(shape, dtype)
    else:
        value = _normal(rngs.params(), shape, dtype)
    return nnx.Param(value, logical_axes=logical_axes)


class RMSNorm(nnx.Module):
    """Root-mean-square norm with a learned scale, computed in float32."""

    def __init__(self, dim: int, eps: float, param_dtype: Any, logical_axis: str = "norm"):
        self.eps = eps
        self.scale = make_param(None, (dim,), (logical_axis,), param_dtype, init="ones")

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (normed * self.scale[...].astype(jnp.float32)).astype(x.dtype)


def rope_inverse_frequencies(config: ModelConfig) -> jax.Array:
    """Per-pair rotation frequencies, with the configured scaling applied (float32)."""
    dim = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))
    scaling = config.rope_scaling_dict
    rope_type = scaling.get("rope_type", "default")
    if rope_type == "linear":
        inv_freq = inv_freq / scaling["factor"]
    elif rope_type == "llama3":
        # Long wavelengths are slowed by `factor`, short ones kept, the band between blended.
        factor = scaling["factor"]
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_context = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        low_wavelen, high_wavelen = old_context / low, old_context / high
        smooth = (old_context / wavelen - low) / (high - low)
        blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
        inv_freq = jnp.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        is_medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        inv_freq = jnp.where(is_medium, blended, inv_freq)
    return inv_freq


def apply_rope(x_bthd: jax.Array, positions_bt: jax.Array, inv_freq: jax.Array) -> jax.Array:
    """Rotate the two halves of each head (the HF "rotate_half" layout), in float32."""
    angles = positions_bt.astype(jnp.float32)[:, :, None] * inv_freq[None, None, :]
    cos = jnp.cos(angles)[:, :, None, :]
    sin = jnp.sin(angles)[:, :, None, :]
    x32 = x_bthd.astype(jnp.float32)
    first, second = jnp.split(x32, 2, axis=-1)
    rotated = jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)
    return rotated.astype(x_bthd.dtype)


class Attention(nnx.Module):
    """Grouped-query attention with optional q/k RMSNorm (Qwen3) and q/k/v biases (Qwen2)."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        pdt = dtype_from_name(config.param_dtype)
        d, h, kv, hd = config.hidden_size, config.num_heads, config.num_kv_heads, config.head_dim
        self.config = config
        self.q_proj = make_param(rngs, (d, h, hd), ("embed", "heads", "head_dim"), pdt)
        self.k_proj = make_param(rngs, (d, kv, hd), ("embed", "kv_heads", "head_dim"), pdt)
        self.v_proj = make_param(rngs, (d, kv, hd), ("embed", "kv_heads", "head_dim"), pdt)
        self.o_proj = make_param(rngs, (h, hd, d), ("heads", "head_dim", "embed"), pdt)
        if config.attention_bias:
            self.q_bias = make_param(None, (h, hd), ("heads", "head_dim"), pdt, init="zeros")
            self.k_bias = make_param(None, (kv, hd), ("kv_heads", "head_dim"), pdt, init="zeros")
            self.v_bias = make_param(None, (kv, hd), ("kv_heads", "head_dim"), pdt, init="zeros")
        if config.qk_norm:
            self.q_norm = RMSNorm(hd, config.rms_norm_eps, pdt, logical_axis="head_dim")
            self.k_norm = RMSNorm(hd, config.rms_norm_eps, pdt, logical_axis="head_dim")

    def _project(self, x_btd: jax.Array, name: str) -> jax.Array:
        dtype = x_btd.dtype
        kernel = getattr(self, f"{name}_proj")[...].astype(dtype)
        y = jnp.einsum("btd,dhk->bthk", x_btd, kernel)
        if self.config.attention_bias:
            y = y + getattr(self, f"{name}_bias")[...].astype(dtype)
        return y

    def __call__(
        self,
        x_btd: jax.Array,
        positions_bt: jax.Array,
        key_mask_bs: jax.Array,
        query_slots_t: jax.Array,
        inv_freq: jax.Array,
        cache_kv: tuple[jax.Array, jax.Array] | None = None,
        cache_start: jax.Array | None = None,
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
        """Attend from T new tokens to the keys of this call (and of the cache, if given).

        `key_mask_bs` marks which key slots hold real tokens; a query at slot t sees key slot
        s only if s <= t. With a cache, the new keys are written at `cache_start`.
        """
        cfg = self.config
        q = self._project(x_btd, "q")
        k = self._project(x_btd, "k")
        v = self._project(x_btd, "v")
        if cfg.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q = apply_rope(q, positions_bt, inv_freq)
        k = apply_rope(k, positions_bt, inv_freq)
        q = constrain(q, ("batch", "length", "act_heads", "head_dim"))
        k = constrain(k, ("batch", "length", "act_kv_heads", "head_dim"))
        v = constrain(v, ("batch", "length", "act_kv_heads", "head_dim"))

        new_cache = None
        if cache_kv is not None:
            cache_k, cache_v = cache_kv
            start = (0, cache_start, 0, 0)
            cache_k = jax.lax.dynamic_update_slice(cache_k, k.astype(cache_k.dtype), start)
            cache_v = jax.lax.dynamic_update_slice(cache_v, v.astype(cache_v.dtype), start)
            new_cache = (cache_k, cache_v)
            k, v = cache_k.astype(q.dtype), cache_v.astype(q.dtype)

        b, t, _, hd = q.shape
        key_slots = jnp.arange(k.shape[1])
        visible = (key_slots[None, :] <= query_slots_t[:, None])[None] & key_mask_bs[:, None, :]
        # Head-major operands: every (batch, kv head) pair is one plain matmul whose scores come
        # out in the (..., t, s) layout that the mask and the softmax read, with no transposing
        # copy of the scores in between (XLA:CPU then fuses the softmax into the PV matmul).
        q = q.reshape(b, t, cfg.num_kv_heads, cfg.num_query_groups, hd).transpose(0, 2, 3, 1, 4)
        k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # (b, kv_heads, s, hd)
        # Without a cache, queries [c0, c1) see keys [0, c1) only: skip the masked-out blocks.
        block = ATTENTION_BLOCK if cache_kv is None else t
        outs = []
        for c0 in range(0, t, block):
            c1 = min(c0 + block, t)
            s1 = c1 if cache_kv is None else k.shape[2]
            scores = jnp.einsum("bkgtd,bksd->bkgts", q[:, :, :, c0:c1], k[:, :, :s1],
                                preferred_element_type=jnp.float32) / math.sqrt(hd)
            scores = jnp.where(visible[:, None, None, c0:c1, :s1], scores, MASK_VALUE)
            probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
            outs.append(jnp.einsum("bkgts,bksd->bkgtd", probs, v[:, :, :s1]))
        out = outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=3)
        out = out.transpose(0, 3, 1, 2, 4).reshape(b, t, cfg.num_heads, hd)
        out = constrain(out, ("batch", "length", "act_heads", "head_dim"))
        y = jnp.einsum("bthk,hkd->btd", out, self.o_proj[...].astype(out.dtype))
        return y, new_cache


class MLP(nnx.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        pdt = dtype_from_name(config.param_dtype)
        d, f = config.hidden_size, config.intermediate_size
        self.gate_proj = make_param(rngs, (d, f), ("embed", "mlp"), pdt)
        self.up_proj = make_param(rngs, (d, f), ("embed", "mlp"), pdt)
        self.down_proj = make_param(rngs, (f, d), ("mlp", "embed"), pdt)

    def __call__(self, x_btd: jax.Array) -> jax.Array:
        dtype = x_btd.dtype
        gate = x_btd @ self.gate_proj[...].astype(dtype)
        up = x_btd @ self.up_proj[...].astype(dtype)
        hidden = constrain(jax.nn.silu(gate) * up, ("batch", "length", "act_mlp"))
        return hidden @ self.down_proj[...].astype(dtype)


class DecoderLayer(nnx.Module):
    """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        pdt = dtype_from_name(config.param_dtype)
        self.input_norm = RMSNorm(config.hidden_size, config.rms_norm_eps, pdt)
        self.attention = Attention(config, rngs=rngs)
        self.post_attention_norm = RMSNorm(config.hidden_size, config.rms_norm_eps, pdt)
        self.mlp = MLP(config, rngs=rngs)

    def __call__(
        self,
        x_btd: jax.Array,
        positions_bt: jax.Array,
        key_mask_bs: jax.Array,
        query_slots_t: jax.Array,
        inv_freq: jax.Array,
        cache_kv: tuple[jax.Array, jax.Array] | None = None,
        cache_start: jax.Array | None = None,
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
        attn, new_cache = self.attention(
            self.input_norm(x_btd), positions_bt, key_mask_bs, query_slots_t, inv_freq,
            cache_kv, cache_start,
        )
        x_btd = constrain(x_btd + attn, ("batch", "length", "act_embed"))
        x_btd = x_btd + self.mlp(self.post_attention_norm(x_btd))
        return constrain(x_btd, ("batch", "length", "act_embed")), new_cache
