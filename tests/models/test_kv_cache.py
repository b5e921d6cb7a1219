"""Decoding token by token over the KV cache reproduces the full-sequence forward."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from orchestra_jax.models import KVCache, get_preset, init_decoder

CONFIG = get_preset("tiny", vocab_size=256, num_layers=2, hidden_size=64, intermediate_size=96,
                    num_heads=4, num_kv_heads=2, head_dim=16)


@pytest.mark.parametrize("scan_layers", [False, True])
def test_stepwise_decode_matches_recompute(scan_layers):
    model = init_decoder(CONFIG.replace(scan_layers=scan_layers), seed=3)
    rng = np.random.RandomState(0)
    prompt_len, new_len = 6, 5
    ids = rng.randint(0, CONFIG.vocab_size, (3, prompt_len + new_len)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, :2] = 0  # left-padded prompt
    mask[2, :5] = 0  # a one-token prompt
    full = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)).logits)

    cache = KVCache.init(model.config, batch_size=3, max_length=16)
    assert cache.stacked == scan_layers  # one array per layer unless the layers are scanned
    out = model(jnp.asarray(ids[:, :prompt_len]), jnp.asarray(mask[:, :prompt_len]), cache=cache)
    step_logits = [np.asarray(out.logits)]
    cache = out.cache
    for t in range(prompt_len, prompt_len + new_len):
        out = model(jnp.asarray(ids[:, t : t + 1]), jnp.asarray(mask[:, t : t + 1]), cache=cache)
        step_logits.append(np.asarray(out.logits))
        cache = out.cache
    stepwise = np.concatenate(step_logits, axis=1)
    real = mask.astype(bool)
    np.testing.assert_allclose(stepwise[real], full[real], atol=1e-5, rtol=1e-5)
    assert int(cache.end) == prompt_len + new_len
    np.testing.assert_array_equal(np.asarray(cache.next_position), mask.sum(1))


def test_jitted_decode_step_reuses_one_compilation():
    model = init_decoder(CONFIG, seed=0)
    cache = KVCache.init(CONFIG, batch_size=2, max_length=8)
    step = jax.jit(lambda ids, cache: model(ids, cache=cache))
    out = step(jnp.zeros((2, 1), jnp.int32), cache)
    step(jnp.ones((2, 1), jnp.int32), out.cache)
    assert step._cache_size() == 1
