"""The key/value cache for prefill and one-token decode.

A plain pytree passed in and returned (not NNX state), so the sampler's jitted steps stay pure
functions that can donate the cache buffers. All rows advance together through the same
`end` slot; each row keeps its own `next_position`, so a left-padded prompt and a full one
both continue at the right RoPE position.

Layout follows the layer stack: a model with scanned layers keeps one stacked (L, B, S, H, D)
array (the scan slices it and writes its outputs in place); an unrolled model keeps a tuple of
L per-layer (B, S, H, D) arrays. With one stacked array an unrolled model must rebuild the
whole stack every step, which made a SmolLM2 decode step almost twice as slow on CPU.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from orchestra_jax.models.config import ModelConfig, dtype_from_name

#: Logical axes of the cache arrays, for placing them on a mesh.
CACHE_KV_AXES = ("layers", "batch", "cache_length", "kv_heads", "head_dim")
CACHE_MASK_AXES = ("batch", "cache_length")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KVCache:
    k: jax.Array | tuple[jax.Array, ...]  # (L, B, S, H_kv, D), or L arrays (B, S, H_kv, D)
    v: jax.Array | tuple[jax.Array, ...]
    key_mask: jax.Array  # (B, S) bool: slot holds a real token
    end: jax.Array  # () int32: next slot to write
    next_position: jax.Array  # (B,) int32: RoPE position of each row's next token

    @classmethod
    def init(
        cls, config: ModelConfig, batch_size: int, max_length: int, dtype: Any = None
    ) -> KVCache:
        """An empty cache with room for `max_length` tokens per row."""
        dtype = dtype_from_name(dtype or config.dtype)
        layer_shape = (batch_size, max_length, config.num_kv_heads, config.head_dim)
        if config.scan_layers:
            k = jnp.zeros((config.num_layers, *layer_shape), dtype)
            v = jnp.zeros((config.num_layers, *layer_shape), dtype)
        else:
            k = tuple(jnp.zeros(layer_shape, dtype) for _ in range(config.num_layers))
            v = tuple(jnp.zeros(layer_shape, dtype) for _ in range(config.num_layers))
        return cls(
            k=k,
            v=v,
            key_mask=jnp.zeros((batch_size, max_length), bool),
            end=jnp.zeros((), jnp.int32),
            next_position=jnp.zeros((batch_size,), jnp.int32),
        )

    @property
    def stacked(self) -> bool:
        return not isinstance(self.k, tuple)

    @property
    def max_length(self) -> int:
        return self.key_mask.shape[1]

    def logical_axes(self) -> KVCache:
        """A cache-shaped tree of logical axes (for `orchestra_jax.sharding.tree_shardings`)."""
        if self.stacked:
            kv = CACHE_KV_AXES
        else:
            kv = tuple(CACHE_KV_AXES[1:] for _ in self.k)
        return KVCache(kv, kv, CACHE_MASK_AXES, (), ("batch",))
