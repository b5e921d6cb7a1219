"""Plain batched generation over the KV cache: one jitted prefill, then one-token decode steps.

This is the simple, exact reference path (demo, tests, small evaluations). The rollout engine's
bucketed sampler is built for throughput; this one is built to be obviously right.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from orchestra_jax.models.decoder import Decoder
from orchestra_jax.models.kv_cache import KVCache
from orchestra_jax.sharding.rules import logical_to_spec, tree_shardings

_LENGTH_BUCKET = 64


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int, length: int | None = None):
    """Left-pad token lists into (ids, mask) int32 arrays, so every row ends at the same slot."""
    length = length or max(len(s) for s in sequences)
    ids = np.full((len(sequences), length), pad_id, np.int32)
    mask = np.zeros((len(sequences), length), np.int32)
    for row, seq in enumerate(sequences):
        if len(seq):
            ids[row, length - len(seq):] = seq
            mask[row, length - len(seq):] = 1
    return ids, mask


def _pick(logits_bv: jax.Array, temperature: jax.Array, key: jax.Array) -> jax.Array:
    greedy = jnp.argmax(logits_bv, axis=-1)
    sampled = jax.random.categorical(key, logits_bv / jnp.maximum(temperature, 1e-6), axis=-1)
    return jnp.where(temperature > 0, sampled, greedy).astype(jnp.int32)


@functools.lru_cache(maxsize=16)
def _step_fn(graphdef: nnx.GraphDef):
    """One jitted prefill-or-decode step per model structure, reused across calls."""

    def run(state, ids, mask, cache, temperature, key):
        out = nnx.merge(graphdef, state)(ids, mask, cache=cache)
        return _pick(out.logits[:, -1], temperature, key), out.cache

    return jax.jit(run, donate_argnums=(3,))


def generate_tokens(
    model: Decoder,
    mesh: jax.sharding.Mesh,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    stop_token_ids: Sequence[int] = (),
    pad_id: int = 0,
    temperature: float = 0.0,
    seed: int = 0,
) -> list[list[int]]:
    """Continue each prompt (a list of token ids) until a stop token or `max_new_tokens`.

    Returns the new tokens of each row, the stop token included when one was produced.
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate_tokens needs at least one prompt, and no empty prompt")
    config = model.config
    batch_shards = int(np.prod([mesh.shape[a] for a in ("data", "fsdp")]))
    batch = _round_up(len(prompts), batch_shards)
    rows = list(prompts) + [prompts[0]] * (batch - len(prompts))
    prompt_len = _round_up(max(len(p) for p in rows), 8)
    ids, mask = left_pad(rows, pad_id, prompt_len)
    cache_len = _round_up(prompt_len + max_new_tokens, _LENGTH_BUCKET)
    graphdef, state = nnx.split(model)
    step = _step_fn(graphdef)
    with jax.set_mesh(mesh):
        cache = KVCache.init(config, batch, cache_len)
        cache = jax.device_put(cache, tree_shardings(cache.logical_axes(), cache, mesh))
        batch_spec = logical_to_spec(("batch", "length"), ids.shape, mesh)
        put = lambda x: jax.device_put(x, jax.NamedSharding(mesh, batch_spec))  # noqa: E731
        temperature_arr = jnp.float32(temperature)
        key = jax.random.key(seed)
        key, sub = jax.random.split(key)
        token, cache = step(state, put(ids), put(mask), cache, temperature_arr, sub)
        stops = set(int(s) for s in stop_token_ids)
        outputs: list[list[int]] = [[] for _ in range(batch)]
        done = np.zeros(batch, bool)
        ones = put(np.ones((batch, 1), np.int32))
        for i in range(max_new_tokens):
            host = np.asarray(token)
            for row in np.flatnonzero(~done):
                outputs[row].append(int(host[row]))
                done[row] = host[row] in stops
            if done[: len(prompts)].all() or i == max_new_tokens - 1:
                break
            key, sub = jax.random.split(key)
            token, cache = step(state, put(host[:, None].astype(np.int32)), ones, cache,
                                temperature_arr, sub)
    return outputs[: len(prompts)]
