"""The decoder's building blocks: RMSNorm, rotary embeddings, GQA attention, SwiGLU MLP.

Every parameter carries `logical_axes` metadata (see `orchestra_jax.sharding.rules`); the
modules never name a mesh axis. Activations are constrained by logical name too, which is a
no-op outside a mesh context.
"""

from __future__ import annotations

import functools
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

#: Largest query block of the cache-free (prefill/training) attention: keys after a block's
#: last query are skipped, so a block of queries ending at slot ``c1`` scores ``c1`` keys.
ATTENTION_BLOCK = 256

#: Bytes of float32 scores one query block may hold (all rows and heads together); large
#: batches get smaller blocks. On a CPU the passes over a block's scores run several times
#: faster while they stay in cache (2-core EPYC, 32 MiB L3: ~1 G scores/s for blocks up to
#: ~8 MiB, ~0.25 G/s from 16 MiB), and smaller blocks score fewer masked keys.
ATTENTION_BLOCK_BYTES = 4 << 20

#: Smallest query block chosen automatically: below it, per-block overhead dominates.
MIN_ATTENTION_BLOCK = 32


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


@jax.custom_vjp
def dense(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """``x (..., d_in)`` times ``kernel (d_in, *out)`` -> ``(..., *out)``: a linear layer whose
    gradient is written out by hand. Its kernel gradient contracts the token rows of the
    transposed activations, ``x^T @ g``; under autodiff XLA:CPU may transpose the (often
    wider) output gradient instead, a strided copy of the largest tensor of the layer (SwiGLU
    MLP forward+backward of 2k tokens on 2 cores: ~1.5x faster this way)."""
    return jnp.tensordot(x, kernel, axes=1)


def _dense_fwd(x: jax.Array, kernel: jax.Array) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    return dense(x, kernel), (x, kernel)


def _dense_bwd(residuals: tuple[jax.Array, ...], g: jax.Array) -> tuple[jax.Array, jax.Array]:
    x, kernel = residuals
    d_in = x.shape[-1]
    kernel_2d = kernel.reshape(d_in, -1)
    g_2d = g.reshape(-1, kernel_2d.shape[1]).astype(x.dtype)
    dx = (g_2d @ kernel_2d.T).reshape(x.shape)
    d_kernel = (x.reshape(-1, d_in).T @ g_2d).reshape(kernel.shape)
    return dx.astype(x.dtype), d_kernel.astype(kernel.dtype)


dense.defvjp(_dense_fwd, _dense_bwd)


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


def attention_block_size(batch: int, heads: int, length: int) -> int:
    """Query block of the cache-free attention for ``batch`` rows of ``length`` tokens: the
    largest power of two whose float32 scores fit `ATTENTION_BLOCK_BYTES`, within
    [`MIN_ATTENTION_BLOCK`, `ATTENTION_BLOCK`] and never longer than the sequence."""
    rows = ATTENTION_BLOCK_BYTES // max(4 * batch * heads * length, 1)
    block = MIN_ATTENTION_BLOCK
    while block * 2 <= rows:
        block *= 2
    return max(1, min(block, ATTENTION_BLOCK, length))


def _query_blocks(length: int, block: int) -> list[tuple[int, int]]:
    return [(c0, min(c0 + block, length)) for c0 in range(0, length, block)]


def _block_visibility(key_mask_bs: jax.Array, query_slots_t: jax.Array, c0: int,
                      c1: int) -> jax.Array:
    """(B, 1, 1, c, c1): query slot t sees the real key slots s <= t among the first c1."""
    causal = jnp.arange(c1)[None, :] <= query_slots_t[c0:c1, None]
    return (causal[None] & key_mask_bs[:, None, :c1])[:, None, None]


def _blockwise_forward(q, k, v, key_mask_bs, query_slots_t, block):
    """Per query block: float32 scores, masked, exponentiated against the row max; the output
    is normalised after the PV matmul (a (c, head_dim) divide, not a (c, keys) one).
    Returns the output (B, K, G, T, D) and each query's row max and row sum of weights."""
    outs, maxes, sums = [], [], []
    for c0, c1 in _query_blocks(q.shape[3], block):
        scores = jnp.einsum("bkgtd,bksd->bkgts", q[:, :, :, c0:c1], k[:, :, :c1],
                            preferred_element_type=jnp.float32)
        visible = _block_visibility(key_mask_bs, query_slots_t, c0, c1)
        scores = jnp.where(visible, scores, MASK_VALUE)
        row_max = jnp.max(scores, axis=-1, keepdims=True)
        weights = jnp.exp(scores - row_max)
        row_sum = jnp.sum(weights, axis=-1, keepdims=True)
        out = jnp.einsum("bkgts,bksd->bkgtd", weights.astype(v.dtype), v[:, :, :c1],
                         preferred_element_type=jnp.float32)
        outs.append(out / row_sum)
        maxes.append(row_max)
        sums.append(row_sum)
    if len(outs) == 1:
        return outs[0], maxes[0], sums[0]
    return tuple(jnp.concatenate(xs, axis=3) for xs in (outs, maxes, sums))


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _causal_attention(q, k, v, key_mask_bs, query_slots_t, block):
    out, _, _ = _blockwise_forward(q, k, v, key_mask_bs, query_slots_t, block)
    return out.astype(q.dtype)


def _causal_attention_fwd(q, k, v, key_mask_bs, query_slots_t, block):
    out, row_max, row_sum = _blockwise_forward(q, k, v, key_mask_bs, query_slots_t, block)
    residuals = (q, k, v, key_mask_bs, query_slots_t, out, row_max, row_sum)
    return out.astype(q.dtype), residuals


def _causal_attention_bwd(block, residuals, d_out):
    """Flash-style backward: each block's weights are recomputed from the saved row max and
    sum instead of being stored for every layer, and dK, dV are accumulated transposed,
    (B, K, D, S), which keeps the large (queries, keys) operand of those matmuls in its own
    layout (contracting its rows needs a transposing copy of it on XLA:CPU)."""
    q, k, v, key_mask_bs, query_slots_t, out, row_max, row_sum = residuals
    d_out = d_out.astype(jnp.float32)
    delta = jnp.sum(d_out * out, axis=-1, keepdims=True)  # (B, K, G, T, 1)
    inv_sum = 1.0 / row_sum
    b, kv, _, t, hd = q.shape
    dk_t = jnp.zeros((b, kv, hd, k.shape[2]), jnp.float32)
    dv_t = jnp.zeros_like(dk_t)
    dq_parts = []
    for c0, c1 in _query_blocks(t, block):
        q_blk, k_blk, v_blk = q[:, :, :, c0:c1], k[:, :, :c1], v[:, :, :c1]
        do_blk = d_out[:, :, :, c0:c1]
        visible = _block_visibility(key_mask_bs, query_slots_t, c0, c1)
        scores = jnp.einsum("bkgtd,bksd->bkgts", q_blk, k_blk,
                            preferred_element_type=jnp.float32)
        weights = (jnp.exp(jnp.where(visible, scores, MASK_VALUE) - row_max[:, :, :, c0:c1])
                   * inv_sum[:, :, :, c0:c1])
        dv_t = dv_t.at[..., :c1].add(jnp.einsum("bkgtd,bkgts->bkds", do_blk, weights))
        d_weights = jnp.einsum("bkgtd,bksd->bkgts", do_blk, v_blk.astype(jnp.float32))
        d_scores = jnp.where(visible, weights * (d_weights - delta[:, :, :, c0:c1]), 0.0)
        dq_parts.append(jnp.einsum("bkgts,bksd->bkgtd", d_scores, k_blk.astype(jnp.float32)))
        dk_t = dk_t.at[..., :c1].add(
            jnp.einsum("bkgtd,bkgts->bkds", q_blk.astype(jnp.float32), d_scores))
    dq = dq_parts[0] if len(dq_parts) == 1 else jnp.concatenate(dq_parts, axis=3)
    dk, dv = dk_t.swapaxes(2, 3), dv_t.swapaxes(2, 3)
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None, None


_causal_attention.defvjp(_causal_attention_fwd, _causal_attention_bwd)


def causal_attention(
    q_bkgtd: jax.Array,
    k_bksd: jax.Array,
    v_bksd: jax.Array,
    key_mask_bs: jax.Array,
    query_slots_t: jax.Array,
    block: int | None = None,
) -> jax.Array:
    """Softmax attention of queries at slots ``query_slots_t`` over key slots ``0..S-1``: a
    query at slot t sees key slot s only if ``s <= t`` and ``key_mask_bs[b, s]``; a query that
    sees no key gets uniform weights over the keys its block scores. Grouped-query layout:
    queries (B, K, G, T, D) for K key heads of G queries each, keys and values (B, K, S, D).

    Computed per block of queries (``block``, default `attention_block_size`), each scoring
    only the keys up to its last slot, which assumes ``query_slots_t == arange(T)`` and S == T
    (the cache-free case). The gradient is a custom VJP that recomputes each block's weights,
    so a training step keeps O(T) attention state per layer instead of O(T^2)."""
    b, kv, g, t, hd = q_bkgtd.shape
    if block is None:
        block = attention_block_size(b, kv * g, t)
    q_scaled = q_bkgtd * jnp.asarray(1.0 / math.sqrt(hd), q_bkgtd.dtype)
    return _causal_attention(q_scaled, k_bksd, v_bksd, key_mask_bs.astype(bool),
                             query_slots_t, int(block))


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
        y = dense(x_btd, kernel)  # (b, t, heads, head_dim)
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
        # Head-major operands: every (batch, kv head) pair is one plain matmul whose scores come
        # out in the (..., t, s) layout that the mask and the softmax read, with no transposing
        # copy of the scores in between.
        q = q.reshape(b, t, cfg.num_kv_heads, cfg.num_query_groups, hd).transpose(0, 2, 3, 1, 4)
        k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # (b, kv_heads, s, hd)
        if cache_kv is None:
            out = causal_attention(q, k, v, key_mask_bs, query_slots_t)
        else:  # decoding: every query over the whole cache, in one block
            key_slots = jnp.arange(k.shape[2])
            visible = ((key_slots[None, :] <= query_slots_t[:, None])[None]
                       & key_mask_bs[:, None, :])
            scores = jnp.einsum("bkgtd,bksd->bkgts", q, k,
                                preferred_element_type=jnp.float32) / math.sqrt(hd)
            scores = jnp.where(visible[:, None, None], scores, MASK_VALUE)
            probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
            out = jnp.einsum("bkgts,bksd->bkgtd", probs, v)
        out = out.transpose(0, 3, 1, 2, 4).reshape(b, t, cfg.num_heads, hd)
        out = constrain(out, ("batch", "length", "act_heads", "head_dim"))
        o_kernel = self.o_proj[...].astype(out.dtype)
        y = dense(out.reshape(b, t, cfg.num_heads * hd), o_kernel.reshape(-1, o_kernel.shape[-1]))
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
        gate = dense(x_btd, self.gate_proj[...].astype(dtype))
        up = dense(x_btd, self.up_proj[...].astype(dtype))
        hidden = constrain(jax.nn.silu(gate) * up, ("batch", "length", "act_mlp"))
        return dense(hidden, self.down_proj[...].astype(dtype))


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
