"""On 8 fake CPU devices, sharded models give single-device logits and really are sharded."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from orchestra_jax.models import load_pretrained
from orchestra_jax.sharding import make_mesh
from tests.models.hf_reference import build_hf_model, padded_batch

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")

MESHES = [(8, 1, 1), (2, 2, 2), (1, 1, 8), (1, 8, 1)]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("qwen3")
    # 8 query heads and 2 KV heads: heads and the MLP split 8 ways, KV heads fall back.
    build_hf_model("qwen3", directory, heads=8, kv_heads=2, tied=False,
                   intermediate_size=128, hidden_size=128)
    return directory


@pytest.fixture(scope="module")
def single_device_logits(checkpoint):
    ids, mask = padded_batch(160, seed=6)
    return load_pretrained(checkpoint).logits(ids, mask)


def _spec(lm, *path):
    node = lm.model
    for part in path:
        node = node[part] if isinstance(part, int) else getattr(node, part)
    return node[...].sharding.spec


@pytest.mark.parametrize("shape", MESHES, ids=str)
def test_mesh_logits_match_one_device(checkpoint, single_device_logits, shape):
    lm = load_pretrained(checkpoint, mesh=make_mesh(shape))
    ids, mask = padded_batch(160, seed=6)
    logits = lm.logits(ids, mask)
    real = mask.astype(bool)
    assert np.abs(logits - single_device_logits)[real].max() <= 1e-5


def test_fsdp_and_tensor_axes_shard_the_parameters(checkpoint):
    lm = load_pretrained(checkpoint, mesh=make_mesh((2, 2, 2)))
    assert _spec(lm, "embed") == jax.P("tensor", "fsdp")
    assert _spec(lm, "layers", 0, "attention", "q_proj") == jax.P("fsdp", "tensor", None)
    assert _spec(lm, "layers", 0, "attention", "o_proj") == jax.P("tensor", None, "fsdp")
    assert _spec(lm, "layers", 0, "mlp", "gate_proj") == jax.P("fsdp", "tensor")
    assert _spec(lm, "layers", 0, "mlp", "down_proj") == jax.P("tensor", "fsdp")
    q = lm.model.layers[0].attention.q_proj[...]
    # Each device holds a quarter of the q projection, not a replica.
    assert {s.data.shape for s in q.addressable_shards} == {(64, 4, 16)}


def test_tensor_parallel_splits_heads_and_mlp_eight_ways(checkpoint):
    lm = load_pretrained(checkpoint, mesh=make_mesh((1, 1, 8)))
    assert _spec(lm, "layers", 1, "attention", "q_proj") == jax.P(None, "tensor", None)
    assert _spec(lm, "layers", 1, "mlp", "up_proj") == jax.P(None, "tensor")
    # Two KV heads cannot split eight ways: they stay replicated rather than failing.
    assert _spec(lm, "layers", 1, "attention", "k_proj") == jax.P(None, None, None)
    up = lm.model.layers[1].mlp.up_proj[...]
    assert {s.data.shape for s in up.addressable_shards} == {(128, 16)}


def test_scanned_layers_shard_with_a_leading_layer_axis(checkpoint):
    lm = load_pretrained(checkpoint, mesh=make_mesh((1, 2, 4)), scan_layers=True)
    spec = lm.model.layers.attention.q_proj[...].sharding.spec
    assert spec == jax.P(None, "fsdp", "tensor", None)
