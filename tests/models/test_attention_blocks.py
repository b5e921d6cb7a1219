"""Blockwise causal attention (custom VJP) and the hand-written dense VJP agree with the plain
computations they replace: values and gradients, with padding, several lengths and blocks."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from orchestra_jax.models import get_preset, init_decoder, layers
from orchestra_jax.models.layers import (
    MASK_VALUE,
    attention_block_size,
    causal_attention,
    dense,
)

TOL = 1e-5


def plain_attention(q, k, v, key_mask, query_slots):
    """One softmax over all keys: the definition the blockwise path must reproduce."""
    scores = jnp.einsum("bkgtd,bksd->bkgts", q, k) / math.sqrt(q.shape[-1])
    visible = (jnp.arange(k.shape[2])[None, :] <= query_slots[:, None])[None] & key_mask[:, None]
    scores = jnp.where(visible[:, None, None], scores, MASK_VALUE)
    return jnp.einsum("bkgts,bksd->bkgtd", jax.nn.softmax(scores, axis=-1), v)


def _inputs(batch, kv_heads, groups, length, head_dim, seed=0):
    keys = jax.random.split(jax.random.key(seed), 4)
    q = jax.random.normal(keys[0], (batch, kv_heads, groups, length, head_dim))
    k = jax.random.normal(keys[1], (batch, kv_heads, length, head_dim))
    v = jax.random.normal(keys[2], (batch, kv_heads, length, head_dim))
    key_mask = np.ones((batch, length), bool)
    key_mask[0, : min(3, length - 1)] = False  # left padding: early queries see no key
    if batch > 1:
        key_mask[-1, length - length // 3:] = False  # right padding
    d_out = jax.random.normal(keys[3], q.shape)
    return q, k, v, jnp.asarray(key_mask), d_out


def _sees_a_key(key_mask):
    """(B, 1, 1, T, 1): queries with at least one visible key (their own slot or earlier)."""
    seen = np.cumsum(np.asarray(key_mask), axis=1) > 0
    return seen[:, None, None, :, None]


# (batch, kv_heads, groups, length, head_dim, block): lengths that are and are not multiples
# of the block, one block longer than the sequence, a one-token sequence, the automatic block.
CASES = [
    (2, 2, 4, 37, 8, 8),
    (3, 1, 2, 64, 16, 16),
    (2, 2, 2, 50, 8, 64),
    (1, 1, 1, 1, 4, 8),
    (2, 1, 3, 130, 8, None),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_forward_matches_plain_softmax_attention(case):
    *shape, block = case
    q, k, v, key_mask, _ = _inputs(*shape)
    slots = jnp.arange(q.shape[3])
    ours = causal_attention(q, k, v, key_mask, slots, block)
    ref = plain_attention(q, k, v, key_mask, slots)
    sees = _sees_a_key(key_mask)
    assert ours.shape == ref.shape and ours.dtype == ref.dtype
    assert np.abs(np.where(sees, ours - ref, 0.0)).max() <= TOL
    assert np.isfinite(np.asarray(ours)).all()  # a query that sees nothing is not a NaN


@pytest.mark.parametrize("case", CASES, ids=str)
def test_gradients_match_plain_softmax_attention(case):
    *shape, block = case
    q, k, v, key_mask, d_out = _inputs(*shape, seed=1)
    slots = jnp.arange(q.shape[3])
    # A query that sees no key averages over every key in the plain path but over its block's
    # keys here (both arbitrary: such rows are pads); the loss never reads them.
    d_out = d_out * _sees_a_key(key_mask)
    _, ours_vjp = jax.vjp(lambda *a: causal_attention(*a, key_mask, slots, block), q, k, v)
    _, ref_vjp = jax.vjp(lambda *a: plain_attention(*a, key_mask, slots), q, k, v)
    for name, ours, ref in zip("qkv", ours_vjp(d_out), ref_vjp(d_out), strict=True):
        assert np.abs(np.asarray(ours) - np.asarray(ref)).max() <= TOL, f"d{name}"


def test_gradient_of_a_query_that_sees_no_key_stays_finite_and_local():
    """A fully masked query (left pad) gets a cotangent too: its uniform weights send
    gradient to the values but none to queries or keys, exactly as the plain path does
    when its block covers all keys."""
    q, k, v, key_mask, d_out = _inputs(1, 1, 2, 16, 4, seed=2)
    slots = jnp.arange(16)
    _, ours_vjp = jax.vjp(lambda *a: causal_attention(*a, key_mask, slots, 16), q, k, v)
    _, ref_vjp = jax.vjp(lambda *a: plain_attention(*a, key_mask, slots), q, k, v)
    for ours, ref in zip(ours_vjp(d_out), ref_vjp(d_out), strict=True):
        assert np.isfinite(np.asarray(ours)).all()
        assert np.abs(np.asarray(ours) - np.asarray(ref)).max() <= TOL


def test_jitted_and_rematerialised_gradients_equal_eager_ones():
    q, k, v, key_mask, d_out = _inputs(2, 2, 2, 40, 8, seed=3)
    slots = jnp.arange(40)

    def loss(q, k, v):
        return jnp.sum(causal_attention(q, k, v, key_mask, slots, 16) * d_out)

    eager = jax.grad(loss, argnums=(0, 1, 2))(q, k, v)
    remat = jax.jit(jax.grad(jax.checkpoint(loss), argnums=(0, 1, 2)))(q, k, v)
    for a, b in zip(eager, remat, strict=True):
        assert np.abs(np.asarray(a) - np.asarray(b)).max() <= TOL


def test_bfloat16_inputs_give_bfloat16_output_close_to_float32():
    q, k, v, key_mask, _ = _inputs(2, 2, 2, 33, 8, seed=4)
    slots = jnp.arange(33)
    full = causal_attention(q, k, v, key_mask, slots, 8)
    low = causal_attention(*(x.astype(jnp.bfloat16) for x in (q, k, v)), key_mask, slots, 8)
    assert low.dtype == jnp.bfloat16
    sees = _sees_a_key(key_mask)
    assert np.abs(np.where(sees, np.asarray(low, np.float32) - np.asarray(full), 0)).max() < 0.05


def test_block_size_keeps_one_block_of_scores_within_the_budget(monkeypatch):
    monkeypatch.setattr(layers, "ATTENTION_BLOCK_BYTES", 4 << 20)
    # tiny's 2 x 1024 micro-batch, 8 heads: 64 queries x 1024 keys x 16 (row, head) pairs.
    assert attention_block_size(2, 8, 1024) == 64
    for batch, heads, length in [(1, 4, 256), (2, 8, 1024), (4, 9, 512), (16, 8, 1024)]:
        block = attention_block_size(batch, heads, length)
        assert block & (block - 1) == 0 and block <= layers.ATTENTION_BLOCK
        fits = block * batch * heads * length * 4 <= layers.ATTENTION_BLOCK_BYTES
        assert fits or block == layers.MIN_ATTENTION_BLOCK
    assert attention_block_size(1, 1, 5) == 5  # never longer than the sequence
    monkeypatch.setattr(layers, "ATTENTION_BLOCK", 16)
    assert attention_block_size(1, 1, 4096) == 16  # ATTENTION_BLOCK caps it


def test_backward_keeps_linear_not_quadratic_attention_state():
    """What the forward saves for the backward is O(T): the policy's forward of a training
    step no longer holds every layer's (T, T) weights until its backward."""
    q, k, v, key_mask, _ = _inputs(1, 2, 2, 256, 8, seed=5)
    slots = jnp.arange(256)
    _, residuals = jax.vjp(lambda *a: causal_attention(*a, key_mask, slots, 32), q, k, v)
    saved = sum(x.size for x in jax.tree.leaves(residuals) if hasattr(x, "size"))
    scores = q.shape[0] * q.shape[1] * q.shape[2] * 256 * 256
    assert saved < scores / 8


def test_decoder_gradients_equal_those_with_plain_attention(monkeypatch):
    """The whole training path: a tiny decoder's parameter gradients on a padded batch with the
    blockwise attention equal those with one plain softmax over all keys."""
    config = get_preset("tiny", vocab_size=128, num_layers=2, hidden_size=32,
                        intermediate_size=48, num_heads=4, num_kv_heads=2, head_dim=8)
    model = init_decoder(config, seed=0)
    graphdef, params = nnx.split(model)
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(0, 128, (3, 21)), jnp.int32)
    mask = np.ones((3, 21), np.int32)
    mask[1, :4] = 0
    mask[2, 15:] = 0
    mask = jnp.asarray(mask)
    weights = jnp.asarray(rng.normal(size=(3, 21, 128)), jnp.float32) * mask[..., None]

    def loss(p):
        return jnp.sum(nnx.merge(graphdef, p)(ids, mask).logits * weights)

    def plain(q, k, v, key_mask, query_slots, block=None):
        return plain_attention(q, k, v, key_mask, query_slots)

    monkeypatch.setattr(layers, "ATTENTION_BLOCK", 8)  # 21 tokens: blocks of 8, 8 and 5
    ours = jax.jit(jax.grad(loss))(params)
    monkeypatch.setattr(layers, "causal_attention", plain)
    ref = jax.jit(jax.grad(loss))(params)
    # Relative to each gradient's scale: the embedding's sums over 63 tokens reach ~10.
    errors = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max() / jnp.abs(b).max()), ours, ref)
    assert max(jax.tree.leaves(errors)) <= TOL


@pytest.mark.parametrize("out_shape", [(6,), (3, 4)])
def test_dense_value_and_gradients_match_autodiff(out_shape):
    keys = jax.random.split(jax.random.key(6), 3)
    x = jax.random.normal(keys[0], (2, 5, 8))
    kernel = jax.random.normal(keys[1], (8, *out_shape))
    g = jax.random.normal(keys[2], (2, 5, *out_shape))

    def plain(x, w):
        return jnp.tensordot(x, w, axes=1)

    out, ours_vjp = jax.vjp(dense, x, kernel)
    ref_out, ref_vjp = jax.vjp(plain, x, kernel)
    assert np.abs(np.asarray(out) - np.asarray(ref_out)).max() <= TOL
    for a, b in zip(ours_vjp(g), ref_vjp(g), strict=True):
        assert a.shape == b.shape
        assert np.abs(np.asarray(a) - np.asarray(b)).max() <= TOL
