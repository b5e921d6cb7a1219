"""The learner's optimizer: which parameters Muon orthogonalises, and that a Muon step on the
sharded train state runs, moves those matrices by an orthogonalised step and the rest by AdamW."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx
from optax.contrib import MuonDimensionNumbers

from orchestra_jax.models.decoder import init_decoder
from orchestra_jax.rl.batch import put_batch
from orchestra_jax.rl.optimizer import (
    make_optimizer,
    muon_dimension_numbers,
    set_lr_scale,
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
