"""Train state placement, optimizer masks and schedules, and the abstract Qwen3-8B state."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from orchestra_jax.models.config import get_preset
from orchestra_jax.models.decoder import init_decoder
from orchestra_jax.rl.optimizer import make_optimizer, make_schedule, weight_decay_mask
from orchestra_jax.rl.train_state import (
    abstract_train_state,
    bytes_per_device,
    ema_update,
    init_train_state,
    train_state_shardings,
)
from orchestra_jax.sharding import make_mesh
from tests.rl._update_fixtures import TINY


@pytest.fixture(scope="module")
def sharded_state():
    mesh = make_mesh((2, 2, 2))
    return init_train_state(init_decoder(TINY, 0), make_optimizer(1e-3), mesh)[1]


def test_state_is_born_on_rule_shardings(sharded_state):
    state = sharded_state
    assert state.params["embed"].sharding.spec == jax.P("tensor", "fsdp")
    adam = state.opt_state[1][0]
    assert adam.mu["lm_head"].sharding.spec == state.params["lm_head"].sharding.spec
    assert adam.count.sharding.spec == jax.P()
    assert state.rng.sharding.spec == jax.P() and int(state.step) == 0
    shardings = train_state_shardings(state)
    assert shardings.params["embed"] == state.params["embed"].sharding


def test_reference_is_an_equal_but_separate_copy(sharded_state):
    params, ref = sharded_state.params["embed"], sharded_state.ref_params["embed"]
    np.testing.assert_array_equal(np.asarray(params), np.asarray(ref))
    assert (params.addressable_shards[0].data.unsafe_buffer_pointer()
            != ref.addressable_shards[0].data.unsafe_buffer_pointer())


def test_no_reference_when_not_asked():
    mesh = make_mesh((1, 1, 1), devices=jax.devices()[:1])
    _, state = init_train_state(init_decoder(TINY, 0), make_optimizer(), mesh, reference=False)
    assert state.ref_params is None and bytes_per_device(state)["reference"] == 0


def test_bytes_per_device_matches_the_real_shards(sharded_state):
    def most_loaded(tree) -> int:
        per_device: dict[int, int] = {}
        for leaf in jax.tree.leaves(tree):
            for shard in leaf.addressable_shards:
                per_device[shard.device.id] = per_device.get(shard.device.id, 0) + shard.data.nbytes
        return max(per_device.values())

    counted = bytes_per_device(sharded_state)
    assert counted["params"] == most_loaded(sharded_state.params)
    assert counted["optimizer"] == most_loaded(sharded_state.opt_state)
    assert counted["reference"] == counted["params"]


def test_weight_decay_skips_norms_biases_and_scalars():
    _, params = nnx.split(init_decoder(TINY.replace(value_head=True), 0))
    mask = dict(nnx.to_flat_state(weight_decay_mask(params)))
    flags = {".".join(map(str, path)): bool(v.get_value()) for path, v in mask.items()}
    assert flags["embed"] and flags["lm_head"] and flags["layers.0.mlp.up_proj"]
    assert not flags["final_norm.scale"] and not flags["layers.1.attention.q_norm.scale"]
    assert not flags["value_bias"]
    # With zero gradients only decay moves parameters: kernels shrink, norm scales stay 1.
    opt = make_optimizer(0.1, weight_decay=0.5, grad_clip=None)
    zeros = jax.tree.map(np.zeros_like, params)
    updates, _ = opt.update(zeros, opt.init(params), params)
    new = optax.apply_updates(params, updates)
    np.testing.assert_array_equal(np.asarray(new["final_norm"]["scale"]), 1.0)
    assert np.all(np.abs(np.asarray(new["embed"])) < np.abs(np.asarray(params["embed"])) + 1e-12)
    assert np.abs(np.asarray(new["embed"])).sum() < np.abs(np.asarray(params["embed"])).sum()


def test_schedules():
    constant = make_schedule(1e-6)
    assert float(constant(0)) == float(constant(10_000)) == pytest.approx(1e-6)
    cosine = make_schedule(1.0, schedule="cosine", warmup_steps=10, total_steps=110)
    assert float(cosine(0)) == 0.0 and float(cosine(5)) == pytest.approx(0.5)
    assert float(cosine(10)) == pytest.approx(1.0)
    assert float(cosine(60)) == pytest.approx(0.5, abs=1e-6)
    assert float(cosine(110)) == pytest.approx(0.0, abs=1e-6)
    linear = make_schedule(1.0, schedule="linear", total_steps=100, final_lr_fraction=0.1)
    assert float(linear(50)) == pytest.approx(0.55)
    with pytest.raises(ValueError, match="schedule"):
        make_schedule(1.0, schedule="step")
    with pytest.raises(ValueError, match="total_steps"):
        make_schedule(1.0, schedule="cosine")


def test_grad_clip_bounds_the_update_norm():
    params = {"w": np.ones((4, 4), np.float32)}
    opt = make_optimizer(1.0, weight_decay=0.0, grad_clip=1.0)
    clip_state = opt.init(params)[0]
    clipped, _ = optax.clip_by_global_norm(1.0).update({"w": 100 * params["w"]}, clip_state)
    assert float(optax.tree.norm(clipped)) == pytest.approx(1.0, rel=1e-6)


def test_abstract_qwen3_8b_on_a_64_device_mesh_reports_bytes_the_shapes_imply():
    """A (data 1, fsdp 16, tensor 4) pod described by an AbstractMesh: no device, no weight.

    Every Qwen3-8B matrix divides 64 ways (vocab 151936, hidden 4096, 32 / 8 heads and MLP 12288
    over tensor 4; the model dimension over fsdp 16); the norm scales (2 per layer of 4096, q/k
    norms of 128, the final 4096) are replicated. bf16 params, bf16 Adam moments (mu and nu take
    the param dtype) and two int32 step counts (Adam's and the schedule's)."""
    config = get_preset("qwen3_8b")
    mesh = jax.sharding.AbstractMesh((1, 16, 4), ("data", "fsdp", "tensor"))
    state = abstract_train_state(config, make_optimizer(), mesh)
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(state.params))
    assert state.params["embed"].sharding.spec == jax.P("tensor", "fsdp")

    norm_params = config.num_layers * (2 * config.hidden_size + 2 * config.head_dim)
    norm_params += config.hidden_size
    matrix_params = config.num_params() - norm_params
    params_bytes = 2 * (matrix_params // 64 + norm_params)
    counted = bytes_per_device(state)
    assert counted["params"] == params_bytes == 256_567_296
    assert counted["optimizer"] == 2 * params_bytes + 2 * 4
    assert counted["reference"] == params_bytes
    assert counted["total"] == 4 * params_bytes + 8


def test_a_masked_optimizer_gets_shardings_for_the_moments_it_keeps():
    """muon sends matrices to Newton-Schulz momentum and the rest to Adam; each side keeps a
    ``MaskedNode`` where the other side's parameters are, and must still be placeable."""
    mesh = make_mesh((2, 2, 2))
    muon = optax.contrib.muon(0.02, adam_learning_rate=1e-3)
    _, state = init_train_state(init_decoder(TINY, 0), muon, mesh)
    inner = state.opt_state.inner_states
    momentum = inner["muon"].inner_state[0].mu
    assert momentum["lm_head"].sharding.spec == state.params["lm_head"].sharding.spec
    assert isinstance(momentum["final_norm"]["scale"].get_value(), optax.MaskedNode)
    adam_mu = inner["adam"].inner_state[0].mu
    assert adam_mu["final_norm"]["scale"].sharding == state.params["final_norm"]["scale"].sharding
    assert isinstance(adam_mu["lm_head"].get_value(), optax.MaskedNode)


def test_the_moving_average_is_born_a_separate_copy_and_moves_by_its_decay():
    mesh = make_mesh((2, 2, 2))
    state = init_train_state(init_decoder(TINY, 0), make_optimizer(1e-3), mesh,
                             reference=False, ema=True)[1]
    params = jax.device_get(state.params)
    for a, b in zip(jax.tree.leaves(state.ema_params), jax.tree.leaves(state.params),
                    strict=True):
        assert a.sharding == b.sharding
        assert (a.addressable_shards[0].data.unsafe_buffer_pointer()
                != b.addressable_shards[0].data.unsafe_buffer_pointer())
    # New params 1 + params: the average moves a quarter of the way at decay 0.75.
    state = dataclasses.replace(state, params=jax.tree.map(lambda p: p + 1.0, state.params))
    moved = ema_update(state, 0.75)
    for ema, p in zip(jax.tree.leaves(jax.device_get(moved.ema_params)), jax.tree.leaves(params),
                      strict=True):
        np.testing.assert_allclose(ema, p + 0.25, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(jax.tree.leaves(jax.device_get(moved.params))[0],
                                  jax.tree.leaves(params)[0] + 1.0)
    without = init_train_state(init_decoder(TINY, 0), make_optimizer(1e-3), mesh,
                               reference=False)[1]
    assert without.ema_params is None
    with pytest.raises(ValueError, match="ema=True"):
        ema_update(without, 0.5)
