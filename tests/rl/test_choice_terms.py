"""The two choice terms of the update step: the marginal choice entropy bonus and the
choice-set format term -- their values against numpy, their gradients, and what one update
step with each does to a policy whose advantages are all zero."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from orchestra_jax.models.decoder import init_decoder
from orchestra_jax.rl.batch import pack_sequences, put_batch
from orchestra_jax.rl.optimizer import make_optimizer
from orchestra_jax.rl.train_state import init_train_state, train_state_shardings
from orchestra_jax.rl.update_step import (
    UpdateConfig,
    choice_set_logmass,
    head_outputs,
    make_update_step,
    marginal_choice_entropy,
)
from orchestra_jax.rollout.trajectory import TokenSequence
from orchestra_jax.sharding import make_mesh
from tests.rl._update_fixtures import TINY

CHOICES = (5, 6, 7)


def _np_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_marginal_choice_entropy_is_the_entropy_of_the_mean_renormalised_choice_distribution():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 3)).astype(np.float32)
    ids = np.array([[1, 5, 9, 6, 2], [7, 3, 5, 1, 1]])
    mask = np.array([[0, 1, 1, 1, 0], [1, 1, 0, 1, 1]])
    got, count = marginal_choice_entropy(jnp.asarray(logits), jnp.asarray(ids),
                                         jnp.asarray(mask), CHOICES)
    # Choice tokens inside the loss mask: (0,1)=5, (0,3)=6, (1,0)=7; (1,2)=5 is masked out.
    picked = np.stack([logits[0, 1], logits[0, 3], logits[1, 0]])
    mean = _np_softmax(picked).mean(0)
    assert int(count) == 3
    assert float(got) == pytest.approx(float(-(mean * np.log(mean)).sum()), rel=1e-6)


def test_marginal_choice_entropy_without_choice_positions_is_zero_with_a_finite_gradient():
    """A micro-batch of only malformed or padded rows: entropy 0 and no NaN in the gradient
    (a NaN here would poison every parameter of the run)."""
    ids = jnp.asarray([[1, 2, 3]])
    mask = jnp.asarray([[0, 1, 1]])

    def f(logits):
        return marginal_choice_entropy(logits, ids, mask, CHOICES)[0]

    logits = jnp.zeros((1, 3, 3))
    assert float(f(logits)) == 0.0
    grad = jax.grad(f)(logits)
    assert np.all(np.isfinite(np.asarray(grad))) and float(jnp.abs(grad).sum()) == 0.0


def test_grouped_marginal_choice_entropy_is_over_group_mass_and_blind_within_a_group():
    """With groups the bonus is the entropy of the mean's mass per group: moving probability
    between two choices of one group changes neither the value nor (so) the gradient's say."""
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(2, 5, 3)).astype(np.float32)
    ids = np.array([[1, 5, 9, 6, 2], [7, 3, 5, 1, 1]])
    mask = np.array([[0, 1, 1, 1, 0], [1, 1, 0, 1, 1]])
    groups = (0, 1, 1)  # choice 5 alone; 6 and 7 together
    got, count = marginal_choice_entropy(jnp.asarray(logits), jnp.asarray(ids),
                                         jnp.asarray(mask), CHOICES, groups)
    picked = np.stack([logits[0, 1], logits[0, 3], logits[1, 0]])
    mean = _np_softmax(picked).mean(0)
    grouped = np.array([mean[0], mean[1] + mean[2]])
    assert int(count) == 3
    assert float(got) == pytest.approx(float(-(grouped * np.log(grouped)).sum()), rel=1e-6)

    def f(x):
        return marginal_choice_entropy(x, jnp.asarray(ids), jnp.asarray(mask), CHOICES,
                                       groups)[0]

    # Re-split every position's mass of choices 6 and 7 (their summed exp kept): the grouped
    # entropy stays, the ungrouped one moves.
    both = np.logaddexp(logits[..., 1], logits[..., 2])
    moved = logits.copy()
    moved[..., 1] = both + np.log(0.9)
    moved[..., 2] = both + np.log(0.1)
    assert float(f(jnp.asarray(moved))) == pytest.approx(float(got), rel=1e-5)

    def ungrouped(x):
        return marginal_choice_entropy(x, jnp.asarray(ids), jnp.asarray(mask), CHOICES)[0]

    assert abs(float(ungrouped(jnp.asarray(moved))) - float(ungrouped(jnp.asarray(logits)))
               ) > 0.05
    # So the gradient never pushes mass from one of them to the other: at every position it
    # is the same per unit of each one's probability.
    grad = np.asarray(jax.grad(f)(jnp.asarray(logits)))
    probs = _np_softmax(logits)
    np.testing.assert_allclose(grad[..., 1] / probs[..., 1], grad[..., 2] / probs[..., 2],
                               rtol=1e-4, atol=1e-6)


def test_choice_groups_must_cover_every_choice():
    with pytest.raises(ValueError, match="choice_groups"):
        UpdateConfig(choice_ids=CHOICES, choice_groups=(0, 1), choice_entropy_coef=0.1).validate()


def test_choice_set_logmass_averages_log_mass_over_each_turns_first_completion_token():
    rng = np.random.default_rng(1)
    logp = np.log(rng.uniform(0.01, 0.3, size=(2, 6, 3))).astype(np.float32)
    mask = np.array([[0, 0, 1, 1, 0, 0], [0, 1, 1, 1, 1, 0]])
    got, count = choice_set_logmass(jnp.asarray(logp), jnp.asarray(mask))
    expected = np.mean([np.log(np.exp(logp[0, 2]).sum()), np.log(np.exp(logp[1, 1]).sum())])
    assert int(count) == 2
    assert float(got) == pytest.approx(float(expected), rel=1e-6)


def test_head_outputs_choice_logprobs_match_the_full_log_softmax():
    model = init_decoder(TINY, 0)
    ids = jnp.asarray(np.random.default_rng(2).integers(1, TINY.vocab_size, (2, 8)))
    hidden, _ = model.hidden_states(ids, jnp.ones_like(ids))
    _, _, choice = head_outputs(model, hidden, ids, chunk=4, choice_ids=CHOICES)
    full = jax.nn.log_softmax(model.logits_from_hidden(hidden), axis=-1)
    # Position t holds the distribution that predicted token t (made at t - 1).
    np.testing.assert_allclose(np.asarray(choice[:, 1:]),
                               np.asarray(full[:, :-1][..., list(CHOICES)]), atol=1e-5)


def _choice_batch(rows: int = 8):
    """Prompts of random tokens, then one choice token (always choice 5) and an end token, in
    the loss; zero advantages, so the policy term has no gradient at all."""
    rng = np.random.default_rng(3)
    samples = []
    for _ in range(rows):
        prompt = rng.integers(10, TINY.vocab_size, 6)
        ids = np.concatenate([prompt, [CHOICES[0], 2]])
        mask = np.concatenate([np.zeros(6), np.ones(2)])
        samples.append(TokenSequence(ids, mask, np.full(8, -4.0)))
    return pack_sequences(samples, [0.0] * rows, seq_len=8)


def _choice_stats(graphdef, params, batch):
    model = nnx.merge(graphdef, params)
    ids = jnp.asarray(batch.input_ids)
    hidden, _ = model.hidden_states(ids, jnp.asarray(batch.attention_mask))
    _, _, choice = head_outputs(model, hidden, ids, choice_ids=CHOICES)
    at = choice[:, 6]  # the decision position (predicts token 6, the choice)
    renormalised = np.asarray(jax.nn.softmax(at, axis=-1)).mean(0)
    return renormalised, float(jnp.mean(jax.nn.logsumexp(at, axis=-1)))


@pytest.mark.parametrize("term", ["entropy", "format"])
def test_one_step_of_a_choice_term_alone_moves_the_policy_its_way(term):
    mesh = make_mesh((1, 1, 1), devices=jax.devices()[:1])
    batch = _choice_batch()
    optimizer = make_optimizer(1e-2)
    graphdef, state = init_train_state(init_decoder(TINY, 0), optimizer, mesh, reference=False)
    coefs = ({"choice_entropy_coef": 1.0} if term == "entropy"
             else {"choice_format_coef": 1.0})
    config = UpdateConfig(kl_coef=0.0, logits_chunk=None, choice_ids=CHOICES, **coefs)
    step = make_update_step(graphdef, config, mesh, None, train_state_shardings(state),
                            optimizer=optimizer)
    before = _choice_stats(graphdef, state.params, batch)
    state, metrics = step(state, put_batch(batch, mesh))
    after = _choice_stats(graphdef, state.params, batch)
    if term == "entropy":
        # Every row chose choice 0: the bonus moves mass to the other choices.
        assert after[0][0] < before[0][0] and float(metrics["loss/choice_entropy"]) > 0
    else:
        assert after[1] > before[1]  # more mass on the choice set as a whole
        assert float(metrics["loss/choice_logmass"]) == pytest.approx(before[1], rel=1e-4)


@pytest.mark.parametrize("bad", [dict(choice_entropy_coef=-1.0), dict(choice_format_coef=-0.5),
                                 dict(choice_entropy_coef=0.1, choice_ids=(3,)),
                                 dict(choice_format_coef=0.1, choice_ids=(3, 3))])
def test_bad_choice_settings_are_rejected_before_tracing(bad):
    with pytest.raises(ValueError, match="choice"):
        UpdateConfig(**bad).validate()
