"""Device meshes with the project's three axes: `data`, `fsdp`, `tensor`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

MESH_AXES = ("data", "fsdp", "tensor")


def make_mesh(
    shape: Sequence[int] | Mapping[str, int] | None = None,
    devices: Sequence[Any] | None = None,
) -> jax.sharding.Mesh:
    """Build a (`data`, `fsdp`, `tensor`) mesh.

    `shape` is a 3-tuple or a dict over the axis names; one entry may be -1 to take the
    remaining devices. `None` puts every device on `fsdp`. Any axis may be 1.
    """
    devices = list(devices) if devices is not None else jax.devices()
    n = len(devices)
    if shape is None:
        dims = [1, n, 1]
    elif isinstance(shape, Mapping):
        unknown = set(shape) - set(MESH_AXES)
        if unknown:
            raise ValueError(f"mesh shape has unknown axes {sorted(unknown)}; axes: {MESH_AXES}")
        dims = [int(shape.get(a, 1)) for a in MESH_AXES]
    else:
        dims = [int(d) for d in shape]
        if len(dims) != 3:
            raise ValueError(f"mesh shape {tuple(shape)} must have 3 entries {MESH_AXES}")
    if dims.count(-1) > 1:
        raise ValueError(f"mesh shape {dims}: at most one axis may be -1")
    if -1 in dims:
        known = int(np.prod([d for d in dims if d != -1]))
        if n % known:
            raise ValueError(f"mesh shape {dims} does not divide {n} devices")
        dims[dims.index(-1)] = n // known
    if int(np.prod(dims)) != n:
        named = dict(zip(MESH_AXES, dims, strict=True))
        raise ValueError(f"mesh shape {named} needs {int(np.prod(dims))} devices, have {n}")
    return jax.make_mesh(
        tuple(dims),
        MESH_AXES,
        devices=devices,
        axis_types=(jax.sharding.AxisType.Auto,) * 3,
    )


def single_device_mesh() -> jax.sharding.Mesh:
    return make_mesh((1, 1, 1), devices=jax.devices()[:1])
