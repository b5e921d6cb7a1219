"""The learner's state -- step, params, optimizer state, frozen reference, rng, and optionally
a moving average of the params -- on a mesh.

Everything is born with its final sharding: parameters follow the model's logical-axis rules,
optimizer moments follow the parameter they belong to, scalars (step, Adam's count, the rng)
are replicated. ``abstract_train_state`` builds the same tree from shapes alone, so the memory a
large run needs per device can be read off before a single weight exists.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from orchestra_jax.models.config import ModelConfig
from orchestra_jax.models.sharded import abstract_decoder, state_shardings
from orchestra_jax.sharding.rules import LogicalRules

AnyMesh = jax.sharding.Mesh | jax.sharding.AbstractMesh


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TrainState:
    """One pytree with everything an update step reads and replaces.

    ``ref_params`` is the frozen reference policy for the KL term (``None`` when the run uses
    no KL); ``rng`` is a typed PRNG key, replicated. ``ema_params`` is an exponential moving
    average of ``params`` that the training loop advances once per RL step (`ema_update`);
    ``None`` when the run keeps none. It lives here so that checkpoints carry it."""

    step: Any
    params: nnx.State
    opt_state: optax.OptState
    ref_params: nnx.State | None
    rng: Any
    ema_params: nnx.State | None = None


def _replicated(mesh: AnyMesh) -> jax.sharding.NamedSharding:
    return jax.sharding.NamedSharding(mesh, jax.P())


def optimizer_state_shardings(optimizer: optax.GradientTransformation, abstract_opt_state: Any,
                              param_shardings: nnx.State, mesh: AnyMesh) -> Any:
    """Shardings of the optimizer state: a moment takes its parameter's sharding, anything
    else (step counts, schedule state) is replicated.

    A partitioned or masked optimizer (``optax.contrib.muon`` sends matrices and the rest to
    two inner optimizers) keeps a ``MaskedNode`` where a moment does not exist; it stays one,
    so the shardings tree has the state's structure."""
    replicated = _replicated(mesh)

    def is_masked(leaf: Any) -> bool:
        return isinstance(leaf, optax.MaskedNode)

    return optax.tree_map_params(
        optimizer,
        lambda moment, sharding: moment if is_masked(moment) else sharding,
        abstract_opt_state,
        param_shardings,
        transform_non_params=lambda _: replicated,
        is_leaf=is_masked,
    )


def _with_sharding(shapes: Any, shardings: Any) -> Any:
    return jax.tree.map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings
    )


def _abstract_from_params(graph_params: nnx.State, optimizer: optax.GradientTransformation,
                          mesh: AnyMesh, rules: LogicalRules | None,
                          reference: bool, ema: bool = False) -> TrainState:
    param_shardings = state_shardings(graph_params, mesh, rules)
    params = _with_sharding(jax.eval_shape(lambda p: p, graph_params), param_shardings)
    opt_shapes = jax.eval_shape(optimizer.init, params)
    opt_shardings = optimizer_state_shardings(optimizer, opt_shapes, param_shardings, mesh)
    replicated = _replicated(mesh)
    key_shape = jax.eval_shape(lambda: jax.random.key(0))
    return TrainState(
        step=jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated),
        params=params,
        opt_state=_with_sharding(opt_shapes, opt_shardings),
        ref_params=params if reference else None,
        rng=jax.ShapeDtypeStruct(key_shape.shape, key_shape.dtype, sharding=replicated),
        ema_params=params if ema else None,
    )


def abstract_train_state(
    model_config: ModelConfig,
    optimizer: optax.GradientTransformation,
    mesh: AnyMesh,
    rules: LogicalRules | None = None,
    reference: bool = True,
) -> TrainState:
    """The train state of ``model_config`` as ``ShapeDtypeStruct``s carrying their shardings;
    nothing is allocated. ``mesh`` may be a ``jax.sharding.AbstractMesh`` (e.g. a 64-device
    pod described on a laptop)."""
    _, abstract = abstract_decoder(model_config)
    return _abstract_from_params(abstract, optimizer, mesh, rules, reference)


def train_state_shardings(state: TrainState) -> TrainState:
    """The sharding of every leaf of a concrete or abstract train state (same tree)."""
    return jax.tree.map(lambda x: x.sharding, state)


def init_train_state(
    model: nnx.Module,
    optimizer: optax.GradientTransformation,
    mesh: jax.sharding.Mesh,
    rules: LogicalRules | None = None,
    reference: bool = True,
    seed: int = 0,
    ema: bool = False,
) -> tuple[nnx.GraphDef, TrainState]:
    """``(graphdef, state)`` for ``model`` on ``mesh``: the params are placed on their rule
    shardings (a no-op for a model from ``sharded_init``), the optimizer state is created
    directly on its shards, and the reference and the moving average (``ema``) are separate
    copies of the params (the update step donates the state, so none may share buffers)."""
    graphdef, params = nnx.split(model)
    abstract = _abstract_from_params(params, optimizer, mesh, rules, reference, ema)
    shardings = train_state_shardings(abstract)
    params = jax.device_put(params, shardings.params)
    opt_state = jax.jit(optimizer.init, out_shardings=shardings.opt_state)(params)

    def copy(out_shardings: Any) -> nnx.State:
        return jax.jit(lambda p: jax.tree.map(jnp.copy, p), out_shardings=out_shardings)(params)

    ref_params = copy(shardings.ref_params) if reference else None
    ema_params = copy(shardings.ema_params) if ema else None
    # Made by jitted functions onto their shardings: `device_put` of an array that lives on
    # one local device cannot reach a mesh that spans processes.
    step = jax.jit(lambda: jnp.zeros((), jnp.int32), out_shardings=shardings.step)()
    rng = jax.jit(lambda: jax.random.key(seed), out_shardings=shardings.rng)()
    return graphdef, TrainState(step=step, params=params, opt_state=opt_state,
                                ref_params=ref_params, rng=rng, ema_params=ema_params)


@functools.partial(jax.jit, donate_argnums=(0,))
def _ema_step(ema: nnx.State, params: nnx.State, decay: jax.Array) -> nnx.State:
    return jax.tree.map(
        lambda e, p: (decay * e.astype(jnp.float32)
                      + (1.0 - decay) * p.astype(jnp.float32)).astype(e.dtype), ema, params)


def ema_update(state: TrainState, decay: float) -> TrainState:
    """``state`` with ``ema_params`` moved to ``decay * ema + (1 - decay) * params`` (in float32,
    stored in the params' dtype; the old average's buffers are donated). Why a moving average:
    the greedy policy of a small RL run flips between near-tied choices from one step to the
    next, and an average over the last ``1 / (1 - decay)`` steps settles those ties by what
    the run preferred over that window rather than by the last step's noise."""
    if state.ema_params is None:
        raise ValueError("this train state keeps no moving average: build it with ema=True")
    ema = _ema_step(state.ema_params, state.params, jnp.asarray(decay, jnp.float32))
    return dataclasses.replace(state, ema_params=ema)


def _shard_bytes(leaf: Any) -> int:
    """Bytes of the largest shard of ``leaf`` (a dimension split over ``n`` devices holds at
    most ``ceil(size / n)`` rows on one device)."""
    sharding = leaf.sharding
    mesh_shape = dict(sharding.mesh.shape)
    spec = tuple(sharding.spec) + (None,) * (len(leaf.shape) - len(sharding.spec))
    elements = 1
    for size, axes in zip(leaf.shape, spec, strict=True):
        names = () if axes is None else ((axes,) if isinstance(axes, str) else tuple(axes))
        ways = math.prod(mesh_shape[name] for name in names)
        elements *= -(-size // ways)
    itemsize = jax.random.key_data(jax.random.key(0)).nbytes if jax.dtypes.issubdtype(
        leaf.dtype, jax.dtypes.prng_key) else np.dtype(leaf.dtype).itemsize
    return elements * itemsize


def bytes_per_device(state: TrainState) -> dict[str, int]:
    """Bytes of params, optimizer state and reference params on the most-loaded device, from
    shapes and shardings alone (works on abstract and concrete states)."""

    def total(tree: Any) -> int:
        return sum(_shard_bytes(leaf) for leaf in jax.tree.leaves(tree))

    parts = {
        "params": total(state.params),
        "optimizer": total(state.opt_state),
        "reference": total(state.ref_params) if state.ref_params is not None else 0,
    }
    parts["total"] = sum(parts.values())
    return parts
