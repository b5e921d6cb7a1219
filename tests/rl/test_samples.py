"""One step's host maths (`rl.samples`): rewards with the solved-group credit, sequences and
filters, KL in the reward, GAE token rewards and the typed samples that leave for packing."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from orchestra_jax.rewards.features import DefaultPreference
from orchestra_jax.rl.advantages import compute_advantages, gae_advantages_and_returns
from orchestra_jax.rl.losses import kl_divergence
from orchestra_jax.rl.samples import (
    AdvantageSettings,
    KLInReward,
    SampleFilters,
    kl_penalties,
    step_rewards,
    step_sequences,
    token_rewards,
    training_samples,
)
from orchestra_jax.rollout.trajectory import TokenSequence

NEUTRAL = DefaultPreference(tools=0.0, outcome=0.8, cost=0.3, latency=0.0)


def _label(task, group):
    return f"task-{group}"


def _episode(outcome, group, cost=0.01, sequences=(), done=True, malformed=False,
             finish="stop"):
    samples = [SimpleNamespace(malformed=malformed, finish_reason=finish)] * max(1, len(sequences))
    return SimpleNamespace(outcome=outcome, group=group, cost_usd=cost, latency_s=1.0,
                           tool_counts=lambda: {"a": 1}, done=done, samples=samples,
                           sequences=lambda mask_malformed=False: list(sequences))


def _seq(n=6, first=3, logp=-1.0):
    mask = np.zeros(n, np.int32)
    mask[first:] = 1
    return TokenSequence(np.arange(1, n + 1, dtype=np.int32), mask,
                         np.where(mask != 0, logp, 0.0).astype(np.float32))


def test_the_raw_outcome_reward_adds_back_only_what_solved_groups_tie_away():
    """The paper's reward gives a group that is all right no outcome credit (its outcome
    feature ties); `train/reward_raw_outcome` adds the outcome weight back to exactly those
    rollouts, which moves no group-relative advantage."""
    outcomes = [1, 1, 1, 0, 0, 0, 1, 0]  # group 0 all right, 1 mixed, 2 all wrong, 3 mixed
    groups = [0, 0, 1, 1, 2, 2, 3, 3]
    episodes = [_episode(o, g, cost=0.01 * (i + 1))
                for i, (o, g) in enumerate(zip(outcomes, groups, strict=True))]
    reward, credit = step_rewards(episodes, [None] * 4, tool_names=("a", "b"), count_calls=None,
                                  preference_of=None, default_preference=NEUTRAL,
                                  task_label=_label)
    np.testing.assert_allclose(credit, [0.8, 0.8, 0, 0, 0, 0, 0, 0])
    # In the mixed groups the right rollout's normalised outcome is already 1: 0.8 + 0.3 x
    # normalised (negated) cost; the cheaper of group 0 gets the whole cost weight.
    np.testing.assert_allclose(reward, [0.3, 0.0, 1.1, 0, 0, 0, 1.1, 0], atol=1e-6)
    ids = np.asarray(groups)
    np.testing.assert_allclose(compute_advantages("grpo", reward, group_ids=ids),
                               compute_advantages("grpo", reward + credit, group_ids=ids),
                               atol=1e-5)


def test_a_tasks_own_preference_wins_and_a_wrong_shape_names_the_task():
    episodes = [_episode(1, 0, cost=0.01), _episode(1, 0, cost=0.02)]
    own = [0.0, 0.0, 1.0, 1.0, 0.0]  # tools a, b, then outcome, cost, latency

    def prefer(task):
        return own

    reward, _ = step_rewards(episodes, ["t"], tool_names=("a", "b"), count_calls=None,
                             preference_of=prefer, default_preference=NEUTRAL,
                             task_label=_label)
    np.testing.assert_allclose(reward, [1.0, 0.0], atol=1e-6)  # cost weight 1 on the cheaper
    with pytest.raises(ValueError, match=r"task 'task-None'.*shape \(3,\)"):
        step_rewards(episodes, ["t"], tool_names=("a", "b"), count_calls=None,
                     preference_of=lambda task: [1.0, 1.0, 1.0], default_preference=NEUTRAL,
                     task_label=_label)


def test_sequences_keep_their_type_and_the_filters_drop_homogeneous_groups_and_empty_loss():
    no_loss = TokenSequence(np.arange(1, 5), np.asarray([0, 0, 0, 0]), np.zeros(4))
    episodes = [_episode(1, 0, sequences=[_seq()]), _episode(0, 0, sequences=[_seq()]),
                _episode(1, 1, sequences=[_seq()]), _episode(1, 1, sequences=[no_loss]),
                _episode(0, 2, sequences=[_seq()]), _episode(1, 2, sequences=[no_loss])]
    rewards = np.asarray([1.0, 0.0, 1.0, 1.0, 0.0, 1.0], np.float32)
    got = step_sequences(episodes, rewards, SampleFilters(min_group_std=0.1))
    assert all(isinstance(s, TokenSequence) for s in got.sequences)
    assert got.keep.tolist() == [True, True, False, False, True, False]
    assert got.dropped["homogeneous_group"] == 2 and got.dropped["no_loss_tokens"] == 1
    assert got.trajectory.tolist() == [0, 1, 2, 3, 4, 5]


def test_the_truncation_and_final_output_filters_follow_their_switches():
    episodes = [_episode(1, 0, sequences=[_seq()], finish="length"),
                _episode(0, 0, sequences=[_seq()], done=False)]
    rewards = np.asarray([1.0, 0.0], np.float32)
    off = step_sequences(episodes, rewards, SampleFilters(min_group_std=None))
    assert off.keep.tolist() == [True, True]
    on = step_sequences(episodes, rewards, SampleFilters(
        min_group_std=None, drop_truncated=True, drop_invalid_final_output=True))
    assert on.keep.tolist() == [False, False]
    assert on.dropped["truncated"] == 1 and on.dropped["invalid_final_output"] == 1


def test_grpo_samples_carry_their_episodes_advantage():
    episodes = [_episode(1, 0, sequences=[_seq(), _seq(8, 5)]),
                _episode(0, 0, sequences=[_seq()])]
    rewards = np.asarray([1.0, 0.0], np.float32)
    samples = training_samples(episodes, rewards, filters=SampleFilters(min_group_std=None),
                               advantage=AdvantageSettings("grpo", {"std": "sample"}))
    expected = compute_advantages("grpo", rewards, group_ids=np.asarray([0, 0]))
    assert len(samples) == 3 and all(isinstance(s, TokenSequence) for s in samples.sequences)
    np.testing.assert_allclose(samples.advantages, [expected[0], expected[0], expected[1]])
    assert samples.returns is None and samples.extra_metrics == {}


def test_token_rewards_put_the_reward_on_the_last_sampled_token_minus_the_kl():
    mask = np.asarray([0, 1, 1, 0, 1, 0])
    np.testing.assert_allclose(token_rewards(mask, 2.0, None), [0, 0, 0, 0, 2, 0])
    penalty = np.asarray([9, 0.1, 0.2, 9, 0.3, 9], np.float32)
    np.testing.assert_allclose(token_rewards(mask, 2.0, penalty), [0, -0.1, -0.2, 0, 1.7, 0],
                               rtol=1e-6)


def test_kl_in_the_reward_is_coef_times_the_estimator_on_sampled_tokens():
    seq = _seq(6, 3, logp=-1.0)
    ref = np.full(6, -1.5, np.float32)
    (penalty,) = kl_penalties([seq], [ref], KLInReward(coef=0.1, estimator="k3"))
    kl = np.asarray(kl_divergence("k3", seq.logprobs, ref))
    np.testing.assert_allclose(penalty, np.where(seq.loss_mask != 0, 0.1 * kl, 0.0), rtol=1e-6)

    episodes = [_episode(1, 0, sequences=[seq]), _episode(0, 0, sequences=[seq])]
    samples = training_samples(
        episodes, np.asarray([1.0, 0.0], np.float32),
        filters=SampleFilters(min_group_std=None), advantage=AdvantageSettings("grpo"),
        kl=KLInReward(coef=0.1, estimator="k3"),
        score=lambda sequences: {"ref_logprobs": [ref for _ in sequences]})
    per_episode = float(penalty.sum())
    assert samples.extra_metrics["train/reward_kl_penalty"] == pytest.approx(per_episode)
    assert samples.extra_metrics["train/ref_kl"] == pytest.approx(per_episode / 0.1 / 3)


def test_gae_samples_whiten_the_token_rewards_of_the_kept_sequences():
    seqs = [_seq(6, 3), _seq(5, 2)]
    values = [np.linspace(0, 1, 6).astype(np.float32), np.linspace(1, 0, 5).astype(np.float32)]
    episodes = [_episode(1, 0, sequences=[seqs[0]]), _episode(0, 0, sequences=[seqs[1]])]
    settings = AdvantageSettings("gae", gamma=0.9, lam=0.8, whiten=True)
    samples = training_samples(episodes, np.asarray([1.0, -1.0], np.float32),
                               filters=SampleFilters(min_group_std=None), advantage=settings,
                               score=lambda sequences: {"values": values})
    rewards = np.zeros((2, 6), np.float32)
    rewards[0, 5], rewards[1, 4] = 1.0, -1.0
    padded_values = np.zeros((2, 6), np.float32)
    padded_values[0], padded_values[1, :5] = values[0], values[1]
    masks = np.zeros((2, 6), np.float32)
    masks[0, :6], masks[1, :5] = seqs[0].loss_mask, seqs[1].loss_mask
    adv, ret = gae_advantages_and_returns(rewards, padded_values, masks, gamma=0.9, lam=0.8,
                                          whiten=True)
    np.testing.assert_allclose(samples.advantages[0], np.asarray(adv)[0], rtol=1e-6)
    np.testing.assert_allclose(samples.advantages[1], np.asarray(adv)[1, :5], rtol=1e-6)
    np.testing.assert_allclose(samples.returns[1], np.asarray(ret)[1, :5], rtol=1e-6)
    assert samples.old_values == values


def test_scores_are_required_only_when_the_recipe_needs_them():
    episodes = [_episode(1, 0, sequences=[_seq()]), _episode(0, 0, sequences=[_seq()])]
    with pytest.raises(ValueError, match="scorer"):
        training_samples(episodes, np.asarray([1.0, 0.0], np.float32),
                         filters=SampleFilters(min_group_std=None),
                         advantage=AdvantageSettings("gae"))
