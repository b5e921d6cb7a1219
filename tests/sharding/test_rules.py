"""The logical-axis table and mesh construction."""

from __future__ import annotations

import jax
import pytest

from orchestra_jax.sharding import logical_to_spec, make_mesh


def test_mesh_has_the_three_named_axes_and_infers_one():
    mesh = make_mesh({"tensor": 2, "fsdp": -1}, devices=jax.devices()[:8])
    assert mesh.axis_names == ("data", "fsdp", "tensor")
    assert dict(mesh.shape) == {"data": 1, "fsdp": 4, "tensor": 2}


@pytest.mark.parametrize("bad", [(3, 1, 1), (2, 2), {"model": 2}])
def test_impossible_mesh_shapes_are_clear_errors(bad):
    with pytest.raises(ValueError, match="mesh shape"):
        make_mesh(bad, devices=jax.devices()[:8])


def test_batch_spans_data_and_fsdp():
    mesh = make_mesh((2, 4, 1), devices=jax.devices()[:8])
    assert logical_to_spec(("batch", "length"), (8, 5), mesh) == jax.P(("data", "fsdp"), None)


def test_indivisible_dimension_is_replicated_not_an_error():
    mesh = make_mesh((1, 1, 8), devices=jax.devices()[:8])
    assert logical_to_spec(("embed", "kv_heads"), (64, 3), mesh) == jax.P(None, None)


def test_custom_rules_override_the_table():
    mesh = make_mesh((1, 8, 1), devices=jax.devices()[:8])
    spec = logical_to_spec(("embed", "mlp"), (64, 64), mesh, rules={"embed": None, "mlp": "fsdp"})
    assert spec == jax.P(None, "fsdp")


def test_unknown_logical_axis_names_itself():
    with pytest.raises(KeyError, match="nonsense"):
        logical_to_spec(("nonsense",))
