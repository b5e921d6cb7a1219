"""Device meshes and the logical-axis rules that place parameters and activations on them."""

from orchestra_jax.sharding.mesh import MESH_AXES, make_mesh, single_device_mesh
from orchestra_jax.sharding.rules import (
    DEFAULT_RULES,
    active_rules,
    constrain,
    logical_rules,
    logical_to_spec,
    named_sharding,
    tree_shardings,
)

__all__ = [
    "DEFAULT_RULES",
    "MESH_AXES",
    "active_rules",
    "constrain",
    "logical_rules",
    "logical_to_spec",
    "make_mesh",
    "named_sharding",
    "single_device_mesh",
    "tree_shardings",
]
