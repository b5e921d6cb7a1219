"""Placing a decoder on a mesh: parameter shardings, sharded init and tensor-by-tensor loading.

Parameters are created directly with their target sharding (each device receives only its
shard), so neither a random init nor a checkpoint load ever holds a replicated copy of the
model per device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from flax import nnx

from orchestra_jax.models.config import ModelConfig, dtype_from_name
from orchestra_jax.models.decoder import Decoder
from orchestra_jax.sharding.rules import LogicalRules, logical_to_spec, named_sharding

Path = tuple[Any, ...]


def abstract_decoder(config: ModelConfig) -> tuple[nnx.GraphDef, nnx.State]:
    """The decoder's structure and parameter shapes, without allocating anything."""
    return nnx.split(nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0))))


def state_shardings(state: nnx.State, mesh: jax.sharding.Mesh,
                    rules: LogicalRules | None = None) -> nnx.State:
    """A state-shaped tree of `NamedSharding`s, from each variable's `logical_axes`."""

    def to_sharding(variable: nnx.Variable) -> nnx.Variable:
        axes = variable.get_metadata().get("logical_axes")
        shape = variable.get_value().shape
        if axes is None:
            axes = (None,) * len(shape)
        if len(axes) != len(shape):
            raise ValueError(f"logical axes {axes} do not match shape {shape}")
        return variable.replace(named_sharding(mesh, axes, shape, rules))

    return jax.tree.map(to_sharding, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def sharded_init(config: ModelConfig, mesh: jax.sharding.Mesh, seed: int = 0,
                 rules: LogicalRules | None = None) -> Decoder:
    """A random decoder whose parameters are born sharded on `mesh`."""
    graphdef, abstract = abstract_decoder(config)
    shardings = state_shardings(abstract, mesh, rules)

    @jax.jit
    def init() -> nnx.State:
        return nnx.state(Decoder(config, rngs=nnx.Rngs(params=seed)))

    with jax.set_mesh(mesh):
        state = jax.jit(init, out_shardings=shardings)()
    return nnx.merge(graphdef, state)


def _fresh_parameter(path: Path, shaped: Any, sharding: Any, seed: int) -> jax.Array:
    """Initialise one parameter a checkpoint lacks (the value head) like the module does:
    biases and scalars at zero, kernels N(0, 0.02), born on their sharding."""
    key = jax.random.fold_in(jax.random.key(seed), len(path))
    zero = len(shaped.shape) == 0 or str(path[-1]).endswith("bias")

    def init() -> jax.Array:
        if zero:
            return jax.numpy.zeros(shaped.shape, shaped.dtype)
        return 0.02 * jax.random.normal(key, shaped.shape, shaped.dtype)

    return jax.jit(init, out_shardings=sharding)()


def load_decoder(
    config: ModelConfig,
    tensor_for_path: Callable[[Path, tuple[int, ...]], np.ndarray | None],
    mesh: jax.sharding.Mesh,
    rules: LogicalRules | None = None,
    seed: int = 0,
) -> Decoder:
    """Build a decoder from host tensors, one parameter at a time, straight onto its shards.

    `tensor_for_path(path, shape)` returns the parameter at `path` as a numpy array of `shape`
    (any float dtype), or None for a parameter the checkpoint does not hold (a new value head),
    which then gets a fresh initialisation of that parameter alone.
    """
    graphdef, abstract = abstract_decoder(config)
    shardings = state_shardings(abstract, mesh, rules)
    param_dtype = dtype_from_name(config.param_dtype)
    flat_abstract = dict(nnx.to_flat_state(abstract))
    flat_shardings = dict(nnx.to_flat_state(shardings))
    leaves = []
    for path, variable in flat_abstract.items():
        shaped = variable.get_value()
        sharding = flat_shardings[path].get_value()
        host = tensor_for_path(path, tuple(shaped.shape))
        if host is None:
            array = _fresh_parameter(path, shaped, sharding, seed)
            leaves.append((path, variable.replace(array)))
            continue
        if tuple(host.shape) != tuple(shaped.shape):
            raise ValueError(
                f"parameter {'.'.join(map(str, path))}: checkpoint shape {host.shape} "
                f"!= model shape {shaped.shape}"
            )
        array = jax.make_array_from_callback(
            shaped.shape, sharding, lambda index, host=host: np.asarray(host[index], param_dtype)
        )
        leaves.append((path, variable.replace(array)))
    return nnx.merge(graphdef, nnx.from_flat_state(leaves))


def sharded_logits_fn(
    model: Decoder, mesh: jax.sharding.Mesh, rules: LogicalRules | None = None
) -> Callable[[nnx.State, Any, Any], jax.Array]:
    """`jit(state, ids, mask) -> logits` with explicit shardings for params, batch and logits.

    The batch dimension is split over `data` x `fsdp`: callers pad it to a multiple of that.
    """
    graphdef, state = nnx.split(model)
    param_shardings = state_shardings(state, mesh, rules)
    batch = jax.NamedSharding(mesh, logical_to_spec(("batch", "length"), None, mesh, rules))
    vocab = model.config.vocab_size
    logits = jax.NamedSharding(
        mesh, logical_to_spec(("batch", "length", "act_vocab"), (0, 0, vocab), mesh, rules)
    )

    def forward(state: nnx.State, ids: jax.Array, mask: jax.Array) -> jax.Array:
        return nnx.merge(graphdef, state)(ids, mask).logits

    return jax.jit(forward, in_shardings=(param_shardings, batch, batch), out_shardings=logits)
