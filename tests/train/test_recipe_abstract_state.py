"""The paper's Qwen3-8B recipe builds its train state on its 64-device mesh, abstractly.

Shapes and shardings come from `eval_shape` over an `AbstractMesh`: no device, no weight. The
bytes each device holds (parameters, AdamW moments, the frozen KL reference) are what a user
checks against the accelerator's memory before launching on a pod.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from orchestra_jax.models import get_preset
from orchestra_jax.rl.optimizer import make_optimizer
from orchestra_jax.rl.train_state import abstract_train_state, bytes_per_device
from orchestra_jax.sharding import MESH_AXES
from orchestra_jax.train.config import load_config

RECIPE = Path(__file__).resolve().parents[2] / "experiments" / "orchestrator_qwen3_8b.py"


def _shard_bytes(leaf) -> int:
    """Bytes of one device's shard of `leaf`, from its shape and partition spec."""
    mesh = leaf.sharding.mesh
    shape = list(leaf.shape)
    for dim, axes in enumerate(leaf.sharding.spec):
        for axis in (axes,) if isinstance(axes, str) else (axes or ()):
            shape[dim] //= mesh.shape[axis]
    return int(np.prod(shape)) * np.dtype(leaf.dtype).itemsize


def test_the_qwen3_8b_recipe_builds_its_abstract_train_state_on_64_devices(capsys):
    config = load_config(RECIPE)
    model_config = get_preset(
        config.model.preset, dtype=config.model.dtype, param_dtype=config.model.param_dtype,
        remat=config.model.remat, scan_layers=config.model.scan_layers)
    optimizer = make_optimizer(
        config.optimizer.lr, schedule=config.optimizer.schedule,
        warmup_steps=config.optimizer.warmup_steps, b1=config.optimizer.b1,
        b2=config.optimizer.b2, weight_decay=config.optimizer.weight_decay,
        grad_clip=config.optimizer.grad_clip)
    mesh = jax.sharding.AbstractMesh(tuple(config.mesh.shape), MESH_AXES)
    assert mesh.size == 64
    state = abstract_train_state(model_config, optimizer, mesh, rules=dict(config.mesh.rules),
                                 reference=config.loss.kl_coef > 0)

    leaves = jax.tree.leaves(state.params)
    assert leaves and all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)
    assert sum(int(np.prod(x.shape)) for x in leaves) == model_config.num_params()
    assert {x.dtype for x in leaves} == {np.dtype(config.model.param_dtype)}
    sizes = bytes_per_device(state)
    params = sum(_shard_bytes(x) for x in leaves)
    assert sizes["params"] == params
    assert sizes["reference"] == params  # the recipe's KL is in the loss: a frozen copy
    # AdamW keeps two moments of the parameters' shape and sharding (+ step counters).
    assert 2 * params <= sizes["optimizer"] <= 2 * params + 64
    assert sizes["total"] == sizes["params"] + sizes["optimizer"] + sizes["reference"]
    # Everything but the norms is split 64 ways: far below one device's share of 16 GB.
    assert params < 1.1 * model_config.num_params() * 4 / 64
    with capsys.disabled():
        print(f"\nqwen3_8b on {dict(mesh.shape)}: "
              + ", ".join(f"{k} {v / 2**30:.2f} GiB" for k, v in sizes.items()) + " per device")
