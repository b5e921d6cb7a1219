"""Logical axis names -> mesh axes, in one table.

Modules name the *meaning* of each dimension (`embed`, `heads`, `mlp`, ...); this table decides
where each meaning lives on the mesh. Changing a parallelism strategy is editing the table, not
the model.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
from jax.sharding import NamedSharding, PartitionSpec

logger = logging.getLogger(__name__)

MeshAxes = str | tuple[str, ...] | None
LogicalRules = Mapping[str, MeshAxes]

#: FSDP over `fsdp` (weights' model dimension), Megatron-style tensor parallelism over `tensor`
#: (heads, MLP hidden, vocab), batch over `data` and `fsdp`.
DEFAULT_RULES: dict[str, MeshAxes] = {
    "batch": ("data", "fsdp"),
    "length": None,
    "embed": "fsdp",
    "heads": "tensor",
    "kv_heads": "tensor",
    "head_dim": None,
    "mlp": "tensor",
    "vocab": "tensor",
    "norm": None,
    "layers": None,
    "value": None,
    # Activations: the residual stream stays unsharded along its features so that the
    # sequence of matmuls needs no all-gather of activations, only of weights (FSDP).
    "act_embed": None,
    "act_heads": "tensor",
    "act_kv_heads": "tensor",
    "act_mlp": "tensor",
    "act_vocab": "tensor",
    "cache_length": None,
}

_ACTIVE_RULES: contextvars.ContextVar[LogicalRules] = contextvars.ContextVar(
    "orchestra_logical_rules", default=DEFAULT_RULES
)


@contextlib.contextmanager
def logical_rules(rules: LogicalRules) -> Iterator[None]:
    """Use `rules` (merged over the defaults) for activation constraints inside this block."""
    token = _ACTIVE_RULES.set({**DEFAULT_RULES, **rules})
    try:
        yield
    finally:
        _ACTIVE_RULES.reset(token)


def active_rules() -> LogicalRules:
    return _ACTIVE_RULES.get()


def _axes_size(mesh_shape: Mapping[str, int], axes: MeshAxes) -> int:
    if axes is None:
        return 1
    names = (axes,) if isinstance(axes, str) else axes
    size = 1
    for name in names:
        size *= mesh_shape.get(name, 1)
    return size


def logical_to_spec(
    logical_axes: Sequence[str | None],
    shape: Sequence[int] | None = None,
    mesh: jax.sharding.Mesh | jax.sharding.AbstractMesh | None = None,
    rules: LogicalRules | None = None,
) -> PartitionSpec:
    """Translate logical names to a `PartitionSpec`.

    With `shape` and `mesh` given, a dimension whose size the mesh axes do not divide is left
    replicated (e.g. 3 KV heads on 8 tensor-parallel devices) instead of failing, and a mesh
    axis already used by an earlier dimension is not reused.
    """
    rules = {**DEFAULT_RULES, **(rules if rules is not None else active_rules())}
    mesh_shape = dict(mesh.shape) if mesh is not None else {}
    used: set[str] = set()
    spec: list[MeshAxes] = []
    for dim, name in enumerate(logical_axes):
        if name is None:
            spec.append(None)
            continue
        if name not in rules:
            raise KeyError(f"logical axis {name!r} has no rule; known: {sorted(rules)}")
        axes = rules[name]
        names = () if axes is None else ((axes,) if isinstance(axes, str) else tuple(axes))
        if mesh is not None:
            names = tuple(a for a in names if a in mesh_shape and mesh_shape[a] > 1)
        names = tuple(a for a in names if a not in used)
        if shape is not None and mesh is not None and names:
            size = _axes_size(mesh_shape, names)
            if shape[dim] % size:
                logger.info(
                    "dimension %d (%s, size %d) not divisible by mesh axes %s (size %d): "
                    "replicated", dim, name, shape[dim], names, size,
                )
                names = ()
        used.update(names)
        spec.append(None if not names else (names[0] if len(names) == 1 else names))
    return PartitionSpec(*spec)


def named_sharding(
    mesh: jax.sharding.Mesh,
    logical_axes: Sequence[str | None],
    shape: Sequence[int],
    rules: LogicalRules | None = None,
) -> NamedSharding:
    return NamedSharding(mesh, logical_to_spec(logical_axes, shape, mesh, rules))


def constrain(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
    """Sharding constraint on an activation by logical names; a no-op outside a mesh context.

    Modules call this with names only: the mesh comes from `jax.set_mesh` and the table from
    `logical_rules`, so a module never mentions a mesh axis.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh is None or mesh.empty or mesh.size == 1:
        return x
    spec = logical_to_spec(logical_axes, x.shape, mesh)
    return jax.lax.with_sharding_constraint(x, spec)


def tree_shardings(
    logical_tree: Any,
    shape_tree: Any,
    mesh: jax.sharding.Mesh,
    rules: LogicalRules | None = None,
) -> Any:
    """Map a tree of logical-axis tuples and a matching tree of shapes to `NamedSharding`s."""
    return jax.tree.map(
        lambda names, shaped: named_sharding(mesh, names, shaped.shape, rules),
        logical_tree,
        shape_tree,
        is_leaf=lambda x: isinstance(x, tuple) and all(isinstance(n, (str, type(None))) for n in x),
    )
