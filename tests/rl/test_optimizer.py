"""The learner's optimizer: which parameters weight decay and Muon touch (never biases and norm
scales, unless asked), and that a Muon step on the sharded train state runs, moves those
matrices by an orthogonalised step and the rest by AdamW."""

from __future__ import annotations

import functools

import jax
import numpy as np
import optax
import pytest
from flax import nnx
from optax.contrib import MuonDimensionNumbers

from orchestra_jax.models import get_preset
from orchestra_jax.models.decoder import init_decoder
from orchestra_jax.rl.batch import put_batch
from orchestra_jax.rl.optimizer import (
    make_optimizer,
    muon_dimension_numbers,
    set_lr_scale,
    weight_decay_mask,
    with_lr_scale,
)
from orchestra_jax.rl.train_state import init_train_state, train_state_shardings
from orchestra_jax.rl.update_step import UpdateConfig, make_update_step
from orchestra_jax.sharding import make_mesh
from tests.rl._update_fixtures import TINY, random_batch


def _specs(params, **kwargs):
    is_spec = lambda x: x is None or isinstance(x, MuonDimensionNumbers)  # noqa: E731
    tree = muon_dimension_numbers(params, **kwargs)
    return {jax.tree_util.keystr(path).replace(".value", ""): spec for path, spec in
            jax.tree_util.tree_leaves_with_path(tree, is_leaf=is_spec)}


@functools.cache
def _biased_params(scan: bool = False):
    """The `tiny` preset with every kind of parameter: Qwen2-style q/k/v biases, q/k norms,
    the value head's kernel and bias (two small layers, stacked or not)."""
    config = get_preset("tiny", attention_bias=True, qk_norm=True, value_head=True,
                        num_layers=2, scan_layers=scan, vocab_size=128, hidden_size=64,
                        intermediate_size=128, num_heads=4, num_kv_heads=2, head_dim=16)
    return nnx.split(init_decoder(config, 0))[1]


def _by_path(tree):
    return {jax.tree_util.keystr(path).replace(".value", ""): leaf
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _is_bias_or_norm(path: str) -> bool:
    return "bias" in path or "norm']" in path


@pytest.mark.parametrize("scan", [False, True])
def test_weight_decay_spares_biases_and_norm_scales_by_default(scan):
    params = _biased_params(scan)
    mask = _by_path(weight_decay_mask(params))
    layer = "['layers']" if scan else "['layers'][0]"
    for spared in ("['final_norm']['scale']", f"{layer}['input_norm']['scale']",
                   f"{layer}['post_attention_norm']['scale']",
                   f"{layer}['attention']['q_norm']['scale']",
                   f"{layer}['attention']['k_norm']['scale']",
                   f"{layer}['attention']['q_bias']", f"{layer}['attention']['k_bias']",
                   f"{layer}['attention']['v_bias']", "['value_bias']"):
        assert mask[spared] is False, spared
    for decayed in ("['embed']", f"{layer}['attention']['q_proj']",
                    f"{layer}['attention']['o_proj']", f"{layer}['mlp']['down_proj']",
                    "['value_kernel']"):
        assert mask[decayed] is True, decayed
    # Exactly those: every other parameter decays.
    assert {p for p, m in mask.items() if not m} == {p for p in mask if _is_bias_or_norm(p)}


def test_decay_biases_and_norms_decays_every_non_scalar_parameter():
    params = _biased_params()
    mask = _by_path(weight_decay_mask(params, decay_biases_and_norms=True))
    ranks = {p: np.ndim(leaf) for p, leaf in _by_path(params).items()}
    assert mask == {p: ranks[p] > 0 for p in mask}


@pytest.mark.parametrize("name", ["adamw", "muon"])
@pytest.mark.parametrize("decay_biases_and_norms", [False, True])
def test_a_decayed_step_with_zero_gradient_moves_biases_and_norms_only_when_asked(
        name, decay_biases_and_norms):
    # Shifted off zero, so a decayed bias (initialised to 0) would show it.
    params = jax.tree.map(lambda p: p + 0.25, _biased_params())
    optimizer = make_optimizer(1e-2, name=name, weight_decay=0.5, grad_clip=None,
                               decay_biases_and_norms=decay_biases_and_norms)
    zeros = jax.tree.map(jax.numpy.zeros_like, params)
    updates, _ = optimizer.update(zeros, optimizer.init(params), params)
    before, after = _by_path(params), _by_path(optax.apply_updates(params, updates))
    for path, old in before.items():
        new = np.asarray(after[path])
        if _is_bias_or_norm(path) and not decay_biases_and_norms:
            np.testing.assert_array_equal(new, np.asarray(old), err_msg=path)
        elif np.ndim(old) > 0:
            assert np.abs(new).sum() < np.abs(np.asarray(old)).sum(), path


def test_muon_leaves_biases_to_adam():
    specs = _specs(_biased_params())
    for bias in ("q_bias", "k_bias", "v_bias"):
        assert specs[f"['layers'][0]['attention']['{bias}']"] is None, bias
    assert specs["['layers'][0]['attention']['q_proj']"] == MuonDimensionNumbers(0, (1, 2))


@pytest.mark.parametrize("scan", [False, True])
def test_muon_takes_the_layers_projection_matrices_from_inputs_to_outputs(scan):
    params = nnx.split(init_decoder(TINY.replace(scan_layers=scan), 0))[1]
    specs = _specs(params)
    lead = 1 if scan else 0  # the stacked-layers axis is a batch axis
    layer = "['layers']" if scan else "['layers'][0]"
    assert specs[f"{layer}['attention']['q_proj']"] == MuonDimensionNumbers(
        lead, (lead + 1, lead + 2))
    assert specs[f"{layer}['attention']['o_proj']"] == MuonDimensionNumbers(
        (lead, lead + 1), lead + 2)
    assert specs[f"{layer}['mlp']['down_proj']"] == MuonDimensionNumbers(lead, lead + 1)
    for adam in ("['embed']", "['lm_head']", "['final_norm']['scale']",
                 f"{layer}['input_norm']['scale']", f"{layer}['attention']['q_norm']['scale']"):
        assert specs[adam] is None, adam


def test_muon_embeddings_reads_the_embedding_and_the_head_from_hidden_to_vocabulary():
    tied = nnx.split(init_decoder(TINY.replace(tie_word_embeddings=True), 0))[1]
    assert _specs(tied)["['embed']"] is None
    # (vocab, d) read by the tied head as d -> vocab; a separate head is (d, vocab).
    assert _specs(tied, embeddings=True)["['embed']"] == MuonDimensionNumbers(1, 0)
    separate = nnx.split(init_decoder(TINY, 0))[1]
    assert _specs(separate, embeddings=True)["['lm_head']"] == MuonDimensionNumbers(0, 1)
    assert _specs(separate, embeddings=True)["['final_norm']['scale']"] is None


def test_a_muon_step_runs_on_the_sharded_state_and_orthogonalises_the_matrix_updates():
    mesh = make_mesh((1, 4, 2))
    optimizer = make_optimizer(1e-2, name="muon", grad_clip=None, weight_decay=0.0)
    graphdef, state = init_train_state(init_decoder(TINY, 0), optimizer, mesh, reference=False)
    before = jax.device_get(state.params)
    step = make_update_step(graphdef, UpdateConfig(kl_coef=0.0, logits_chunk=None), mesh, None,
                            train_state_shardings(state), optimizer=optimizer)
    state, metrics = step(state, put_batch(random_batch(rows=8), mesh))
    after = jax.device_get(state.params)
    assert np.isfinite(float(metrics["grad_norm"]))
    # An orthogonalised (64 x 128) step: its singular values are all alike (Newton-Schulz
    # brings them near 1, then the step is scaled), unlike any raw gradient's.
    delta = np.asarray(after["layers"][0]["mlp"]["up_proj"]) - np.asarray(
        before["layers"][0]["mlp"]["up_proj"])
    singular = np.linalg.svd(delta, compute_uv=False)
    assert singular.min() > 0.5 * singular.max() > 0
    # The head is Adam's -- Nesterov Adam on Muon's side, whose first step is
    # lr * (1 + b1 (1 - b1) / (1 - b1^2)) per entry wherever the gradient is non-zero.
    head = np.abs(np.asarray(after["lm_head"]) - np.asarray(before["lm_head"]))
    assert np.median(head) == pytest.approx(1e-2 * (1 + 0.9 * 0.1 / 0.19), rel=0.01)


@pytest.mark.parametrize("name", ["adamw", "muon"])
def test_the_lr_scale_multiplies_each_update_as_a_smaller_learning_rate_would(name):
    """The multiplier scales the finished update (weight decay and Muon's scaling included)
    and leaves the moments alone: with it set to 0.25 then 0.5, the two updates are those of
    the plain optimizer times 0.25 and 0.5, and the first is a fresh optimizer's at lr / 4."""
    params = nnx.split(init_decoder(TINY, 0))[1]
    grads = [jax.tree.map(lambda p, k=k: jax.numpy.cos(p * 3.0 + k), params) for k in (1, 2)]
    plain = make_optimizer(1e-2, name=name, weight_decay=0.1)
    scaled = with_lr_scale(make_optimizer(1e-2, name=name, weight_decay=0.1))
    plain_state, scaled_state = plain.init(params), scaled.init(params)

    def close(got, want, factor):
        pairs = zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want), strict=True)
        for (path, a), b in pairs:
            np.testing.assert_allclose(np.asarray(a), factor * np.asarray(b), rtol=1e-5,
                                       atol=1e-10, err_msg=jax.tree_util.keystr(path))

    for factor, grad in zip((0.25, 0.5), grads, strict=True):
        scaled_state = set_lr_scale(scaled_state, factor)
        got, scaled_state = scaled.update(grad, scaled_state, params)
        want, plain_state = plain.update(grad, plain_state, params)
        close(got, want, factor)
        if factor == 0.25:
            quarter = make_optimizer(1e-2 * factor, name=name, weight_decay=0.1)
            close(got, quarter.update(grad, quarter.init(params), params)[0], 1.0)


def test_an_unknown_optimizer_name_is_refused():
    with pytest.raises(ValueError, match="adamw"):
        make_optimizer(1e-3, name="lion")
