"""The jitted, sharded update step: sharding and micro-batch equivalence, direction, KL, PPO,
and the skip of a non-finite step."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from orchestra_jax.models.decoder import init_decoder
from orchestra_jax.rl.batch import put_batch
from orchestra_jax.rl.optimizer import make_optimizer
from orchestra_jax.rl.train_state import init_train_state, train_state_shardings
from orchestra_jax.rl.update_step import (
    UpdateConfig,
    make_update_step,
    micro_batch_count,
    token_logprobs,
)
from orchestra_jax.sharding import make_mesh
from tests.rl._update_fixtures import TINY, max_abs_diff, random_batch

LR = 1e-3
#: Adam's first step is ``lr * g / (|g| + eps)``: for a gradient entry near ``eps`` it turns
#: float-rounding noise in ``g`` (~1e-9 here) into a visible change of the update. A larger eps
#: than the default 1e-8 keeps the params comparison about the step's maths, not about that
#: amplification (with SGD the gradients agree to < 1e-6 at lr 1).
EPS = 1e-6


def _one_step(mesh, config, batch, *, model_config=TINY, seed=0, reference=True, lr=LR,
              steps=1):
    """Fresh state from the same init, ``steps`` updates on ``batch``; host copies back."""
    optimizer = make_optimizer(lr, eps=EPS)
    graphdef, state = init_train_state(init_decoder(model_config, seed), optimizer, mesh,
                                       reference=reference)
    step = make_update_step(graphdef, config, mesh, None, train_state_shardings(state),
                            optimizer=optimizer)
    device_batch = put_batch(batch, mesh)
    all_metrics, all_params = [], []
    for _ in range(steps):
        state, metrics = step(state, device_batch)
        all_metrics.append({k: float(v) for k, v in metrics.items()})
        all_params.append(jax.device_get(state.params))
    return state, all_metrics, all_params


@pytest.fixture(scope="module")
def meshes():
    return {"one": make_mesh((1, 1, 1), devices=jax.devices()[:1]),
            "fsdp_tensor": make_mesh((1, 4, 2))}


@pytest.fixture(scope="module")
def grpo_runs(meshes):
    """One-device, sharded and sharded-with-4-micro-batches steps on the same 16-row batch;
    kl_coef is large so the KL path is exercised, with params == reference at step 0."""
    batch = random_batch(rows=16)
    config = UpdateConfig(kl_coef=0.1, logits_chunk=8)
    runs = {
        "init": jax.device_get(nnx.split(init_decoder(TINY, 0))[1]),
        "one": _one_step(meshes["one"], config, batch),
        "sharded": _one_step(meshes["fsdp_tensor"], config, batch, steps=2),
        "micro4": _one_step(meshes["fsdp_tensor"],
                            UpdateConfig(kl_coef=0.1, logits_chunk=8, micro_batches=4), batch),
        # 16 tokens per shard per micro-batch: 4 micro-batches of one row per fsdp shard.
        "tokens16": _one_step(meshes["fsdp_tensor"],
                              UpdateConfig(kl_coef=0.1, logits_chunk=8, micro_batch_tokens=16),
                              batch),
    }
    return runs


def test_sharded_step_equals_one_device_step(grpo_runs):
    """Acceptance: mesh (data 1, fsdp 4, tensor 2) vs one device, same init and batch."""
    _, one_metrics, one_params = grpo_runs["one"]
    _, sharded_metrics, sharded_params = grpo_runs["sharded"]
    assert max_abs_diff(one_params[0], sharded_params[0]) < 1e-5
    assert max_abs_diff(one_params[0], grpo_runs["init"]) > 1e-4  # the step did move them
    for name, value in one_metrics[0].items():
        assert sharded_metrics[0][name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    assert one_metrics[0]["tokens"] > 0 and one_metrics[0]["grad_norm"] > 0


def test_sharded_params_keep_rule_shardings(grpo_runs):
    state, _, _ = grpo_runs["sharded"]
    assert state.params["embed"].sharding.spec == jax.P("tensor", "fsdp")
    q_proj = state.params["layers"][0]["attention"]["q_proj"]
    assert q_proj.sharding.spec == jax.P("fsdp", "tensor", None)
    assert state.params["lm_head"].sharding.spec == jax.P("fsdp", "tensor")
    adam = state.opt_state[1][0]  # chain(clip, adamw): adamw's ScaleByAdamState
    assert adam.mu["embed"].sharding.spec == jax.P("tensor", "fsdp")
    assert adam.nu["lm_head"].sharding.spec == jax.P("fsdp", "tensor")
    assert state.step.sharding.spec == jax.P() and int(state.step) == 2


def test_four_micro_batches_equal_one_batch(grpo_runs):
    """Acceptance: k = 4 micro-batches (4 rows each, one per fsdp shard) == the 16-row batch."""
    _, whole_m, whole_params = grpo_runs["sharded"]
    _, split_m, split_params = grpo_runs["micro4"]
    assert max_abs_diff(whole_params[0], split_params[0]) < 1e-5
    for name in ("loss/policy", "loss/kl", "grad_norm", "clipfrac", "ratio_max",
                 "advantage_std", "loss/entropy",
                 "tokens"):
        assert split_m[0][name] == pytest.approx(whole_m[0][name], rel=1e-5, abs=1e-6), name


def test_token_budget_micro_batches_equal_one_batch(grpo_runs):
    """micro_batch_tokens splits the batch by itself (here into 4) and changes nothing."""
    _, whole_m, whole_params = grpo_runs["sharded"]
    _, split_m, split_params = grpo_runs["tokens16"]
    assert micro_batch_count(16, 16, UpdateConfig(micro_batch_tokens=16), batch_shards=4) == 4
    assert max_abs_diff(whole_params[0], split_params[0]) < 1e-5
    for name in ("loss/policy", "loss/kl", "grad_norm", "clipfrac", "ratio_max", "tokens"):
        assert split_m[0][name] == pytest.approx(whole_m[0][name], rel=1e-5, abs=1e-6), name


def test_micro_batch_count_keeps_micro_batches_under_the_token_budget():
    default = UpdateConfig()
    assert default.micro_batch_tokens == 2048
    assert micro_batch_count(16, 1024, default) == 8  # 2 rows x 1024 tokens each
    assert micro_batch_count(4, 256, default) == 1  # the whole batch fits
    assert micro_batch_count(16, 4096, default) == 16  # one row is over: one row each
    assert micro_batch_count(16, 1024, default, batch_shards=4) == 2  # per shard: 4 -> 2 rows
    assert micro_batch_count(12, 1024, default) == 6  # only divisors of the rows
    assert micro_batch_count(16, 1024, UpdateConfig(micro_batches=16)) == 16  # at least this
    assert micro_batch_count(16, 1024, UpdateConfig(micro_batch_tokens=None)) == 1
    assert micro_batch_count(16, 64, UpdateConfig(micro_batches=2, micro_batch_tokens=None)) == 2
    with pytest.raises(ValueError, match="16 rows"):
        micro_batch_count(16, 64, UpdateConfig(micro_batches=3))


def test_micro_batches_exact_for_sequence_mean_aggregation(meshes):
    """Sequence-mean modes have sequence-count denominators; accumulation must stay exact."""
    batch = random_batch(rows=8, seed=2)
    base = dict(kl_coef=0.0, agg_mode="seq-mean-token-mean", logits_chunk=None)
    _, _, whole = _one_step(meshes["one"], UpdateConfig(**base), batch, reference=False)
    _, _, split = _one_step(meshes["one"], UpdateConfig(micro_batches=2, **base), batch,
                            reference=False)
    assert max_abs_diff(whole[0], split[0]) < 1e-5


def test_kl_is_zero_when_params_equal_reference_and_grows_after_a_step(grpo_runs):
    _, metrics, _ = grpo_runs["sharded"]
    assert metrics[0]["loss/kl"] == 0.0 and metrics[0]["kl_k1"] == 0.0
    assert metrics[1]["loss/kl"] > 0.0


def _policy_logprobs(state, graphdef, batch):
    model = nnx.merge(graphdef, state.params)
    hidden, _ = model.hidden_states(jnp.asarray(batch.input_ids),
                                    jnp.asarray(batch.attention_mask))
    logp, _ = token_logprobs(model, hidden, jnp.asarray(batch.input_ids), chunk=4)
    return np.asarray(logp)


def test_step_raises_logprobs_of_positive_advantages_and_lowers_the_loss(meshes):
    mesh = meshes["one"]
    batch = random_batch(rows=8, seed=3)
    batch.advantages = np.where(np.arange(8) % 2 == 0, 1.0, -1.0).astype(np.float32)
    optimizer = make_optimizer(1e-2)
    graphdef, state = init_train_state(init_decoder(TINY, 0), optimizer, mesh, reference=False)
    before = _policy_logprobs(state, graphdef, batch)
    batch.old_logprobs = np.where(batch.loss_mask > 0, before, 0.0).astype(np.float32)
    step = make_update_step(graphdef, UpdateConfig(kl_coef=0.0, logits_chunk=4), mesh, None,
                            train_state_shardings(state), optimizer=optimizer)
    device_batch = put_batch(batch, mesh)
    state, first = step(state, device_batch)
    after = _policy_logprobs(state, graphdef, batch)
    state, second = step(state, device_batch)

    mask = batch.loss_mask > 0
    change = np.where(mask, after - before, 0.0).sum(axis=1) / mask.sum(axis=1)
    assert np.all(change[0::2] > 0), change  # A > 0: those tokens became more likely
    assert np.all(change[1::2] < 0), change  # A < 0: less likely
    assert float(first["ratio_mean"]) == pytest.approx(1.0, abs=1e-5)  # on-policy start
    assert float(first["clipfrac"]) == 0.0
    assert float(second["loss/policy"]) < float(first["loss/policy"])


def test_ppo_value_head_trains_with_clipped_value_loss(meshes):
    mesh = meshes["one"]
    value_model = TINY.replace(value_head=True)
    batch = random_batch(rows=8, seed=4, value_targets=True)
    config = UpdateConfig(kl_coef=0.0, value_coef=0.5, value_clip=0.2, logits_chunk=None)
    optimizer = make_optimizer(LR)
    graphdef, state = init_train_state(init_decoder(value_model, 0), optimizer, mesh,
                                       reference=False)
    kernel_before = np.asarray(state.params["value_kernel"])
    step = make_update_step(graphdef, config, mesh, None, train_state_shardings(state),
                            optimizer=optimizer)
    state, metrics = step(state, put_batch(batch, mesh))
    assert np.isfinite(float(metrics["loss/value"])) and float(metrics["loss/value"]) > 0
    assert 0.0 <= float(metrics["value_clipfrac"]) <= 1.0
    assert float(metrics["loss/total"]) == pytest.approx(
        float(metrics["loss/policy"]) + 0.5 * float(metrics["loss/value"]), rel=1e-5)
    assert not np.allclose(np.asarray(state.params["value_kernel"]), kernel_before)


def test_a_non_finite_step_is_skipped_and_a_finite_one_applied(meshes):
    """A NaN advantage makes the loss and every gradient NaN: params (critic included),
    optimizer state and moving average stay as they were and the step says it skipped; the
    next, finite batch is applied as usual."""
    mesh = meshes["one"]
    config = UpdateConfig(kl_coef=1e-2, value_coef=0.5, logits_chunk=None, skip_nonfinite=True)
    optimizer = make_optimizer(LR)
    graphdef, state = init_train_state(init_decoder(TINY.replace(value_head=True), 0),
                                       optimizer, mesh, reference=True, ema=True)
    step = make_update_step(graphdef, config, mesh, None, train_state_shardings(state),
                            optimizer=optimizer)
    good = random_batch(rows=8, seed=5, value_targets=True)
    advantages = np.array(good.advantages, copy=True)
    advantages[3] = np.nan
    bad = dataclasses.replace(good, advantages=advantages)

    # Two finite steps first, so the optimizer moments are not at their zero init.
    for _ in range(2):
        state, metrics = step(state, put_batch(good, mesh))
        assert float(metrics["skipped_nonfinite"]) == 0.0
    before = jax.device_get((state.params, state.opt_state, state.ema_params))
    step_before = int(state.step)

    state, metrics = step(state, put_batch(bad, mesh))
    assert float(metrics["skipped_nonfinite"]) == 1.0
    assert not np.isfinite(float(metrics["loss/total"]))
    after = jax.device_get((state.params, state.opt_state, state.ema_params))
    for (path, old), new in zip(jax.tree_util.tree_leaves_with_path(before),
                                jax.tree.leaves(after), strict=True):
        np.testing.assert_array_equal(np.asarray(new), np.asarray(old),
                                      err_msg=jax.tree_util.keystr(path))
    assert int(state.step) == step_before + 1

    state, metrics = step(state, put_batch(good, mesh))
    assert float(metrics["skipped_nonfinite"]) == 0.0
    assert max_abs_diff(jax.device_get(state.params), before[0]) > 0


def test_without_the_guard_a_non_finite_step_is_applied_and_reports_no_skip(meshes):
    mesh = meshes["one"]
    optimizer = make_optimizer(LR)
    graphdef, state = init_train_state(init_decoder(TINY, 0), optimizer, mesh, reference=False)
    step = make_update_step(graphdef, UpdateConfig(kl_coef=0.0, logits_chunk=None), mesh, None,
                            train_state_shardings(state), optimizer=optimizer)
    good = random_batch(rows=8, seed=5)
    advantages = np.array(good.advantages, copy=True)
    advantages[0] = np.nan
    state, metrics = step(state, put_batch(dataclasses.replace(good, advantages=advantages),
                                           mesh))
    assert float(metrics["skipped_nonfinite"]) == 0.0
    assert not np.isfinite(np.asarray(jax.device_get(state.params)["lm_head"])).all()


def test_kl_without_reference_is_a_clear_error(meshes):
    mesh = meshes["one"]
    optimizer = make_optimizer(LR)
    graphdef, state = init_train_state(init_decoder(TINY, 0), optimizer, mesh, reference=False)
    step = make_update_step(graphdef, UpdateConfig(kl_coef=1e-4), mesh, None,
                            train_state_shardings(state), optimizer=optimizer)
    with pytest.raises(ValueError, match="reference"):
        step(state, put_batch(random_batch(rows=4), mesh))


@pytest.mark.parametrize("bad", [dict(policy_loss="ppo_clipp"), dict(agg_mode="mean"),
                                 dict(micro_batches=0), dict(kl_estimator="k9"),
                                 dict(value_clip=0.0), dict(micro_batch_tokens=0)])
def test_bad_update_config_is_rejected_before_tracing(bad):
    with pytest.raises(ValueError):
        UpdateConfig(**bad).validate()
