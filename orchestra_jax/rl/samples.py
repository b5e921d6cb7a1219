"""One step's host maths between the reward and the update: episodes -> typed samples.

    trajectories ─► rewards (ToolOrchestra, per group) ─► sequences + filters
                 ─► [KL in the reward] ─► advantages (per episode, or per token for GAE)
                 ─► `TrainingSamples` (what the mini-batch updates pack)

Everything is numpy on the host and knows nothing of the environment that produced the
episodes: tool counts and preferences arrive as callables and vectors. What leaves is typed:
each training sequence stays a `TokenSequence` (ids, loss mask, sampler log-probs) until
`rl.batch.pack_sequences` turns a mini-batch of them into the one device batch.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from orchestra_jax.rewards import NUM_EXTRA_FEATURES
from orchestra_jax.rewards.features import (
    DefaultPreference,
    preference_vector,
    rewards_and_solved_credit,
    tool_count_matrix,
)
from orchestra_jax.rl.advantages import ADVANTAGES, compute_advantages, gae_advantages_and_returns
from orchestra_jax.rl.filters import filter_samples
from orchestra_jax.rl.losses import kl_penalized_rewards
from orchestra_jax.rollout.trajectory import TokenSequence, Trajectory

#: Scores every sequence under the current parameters: {"ref_logprobs": [...], "values": [...]}
#: (only what was asked for), one array per sequence, trimmed to its length.
Scorer = Callable[[Sequence[TokenSequence]], Mapping[str, Sequence[np.ndarray]]]


# ---------------------------------------------------------------------------------------------
# Rewards


def step_rewards(
    trajectories: Sequence[Trajectory], tasks: Sequence[Any], *, tool_names: Sequence[str],
    count_calls: Callable[[Trajectory], Mapping[str, int]] | None,
    preference_of: Callable[[Any], Sequence[float] | None] | None,
    default_preference: DefaultPreference, task_label: Callable[[Any, int | None], str],
    alias_min_over_users: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The ToolOrchestra reward of each episode and the solved-group credit
    (`rewards.features`). The tool-count features are `tool_names` as counted by
    `count_calls` (default: calls per tool); each task's own preference vector when
    `preference_of` gives one, else `default_preference`."""
    counts, preference = [], []
    for t in trajectories:
        counts.append(count_calls(t) if count_calls is not None else t.tool_counts())
        task = tasks[t.group] if t.group is not None and t.group < len(tasks) else None
        own = preference_of(task) if preference_of is not None and task is not None else None
        preference.append(preference_vector(own, default_preference, tool_names,
                                            task_label(task, None)))
    return rewards_and_solved_credit(
        tool_count_matrix(counts, tool_names),
        np.asarray([t.outcome for t in trajectories], np.float32),
        np.asarray([t.cost_usd for t in trajectories], np.float32),
        np.asarray([t.latency_s for t in trajectories], np.float32),
        np.asarray(preference, np.float32).reshape(
            len(trajectories), max(1, len(tool_names)) + NUM_EXTRA_FEATURES),
        np.asarray([t.group for t in trajectories], np.int32),
        alias_min_over_users=alias_min_over_users)


# ---------------------------------------------------------------------------------------------
# Sequences and filters


@dataclasses.dataclass(frozen=True)
class SampleFilters:
    """Which training sequences the loss sees (`config.filter`; `rl.filters`)."""

    min_group_std: float | None = 0.1
    drop_invalid_final_output: bool = False
    drop_malformed_turns: bool = False
    drop_truncated: bool = False


@dataclasses.dataclass
class StepSequences:
    """Every training sequence of a step (a turn in qa mode, the dialogue otherwise), the
    episode each came from and whether the filters keep it."""

    sequences: list[TokenSequence]
    trajectory: np.ndarray  # int, per sequence: index into the step's trajectories
    keep: np.ndarray  # bool, per sequence
    dropped: dict[str, int]


def step_sequences(trajectories: Sequence[Trajectory], rewards: np.ndarray,
                   filters: SampleFilters) -> StepSequences:
    """The step's sequences with the filters' verdict; a sequence with no sampled token
    after its first (nothing to learn from) is dropped as `no_loss_tokens`."""
    sequences: list[TokenSequence] = []
    groups, seq_rewards, traj_ids, valid, well_formed, truncated = [], [], [], [], [], []
    for i, t in enumerate(trajectories):
        own = t.sequences(mask_malformed=filters.drop_malformed_turns)
        per_turn = len(own) == len(t.samples)
        for k, seq in enumerate(own):
            sequences.append(seq)
            groups.append(t.group)
            seq_rewards.append(rewards[i])
            traj_ids.append(i)
            valid.append(t.done)
            last = t.samples[k] if per_turn else t.samples[-1]
            well_formed.append(not last.malformed if per_turn else True)
            truncated.append(last.finish_reason == "length")
    if not sequences:
        return StepSequences([], np.zeros(0, np.int64), np.zeros(0, bool), {})
    result = filter_samples(
        np.asarray(groups), np.asarray(seq_rewards), min_group_std=filters.min_group_std,
        valid_final_output=np.asarray(valid) if filters.drop_invalid_final_output else None,
        well_formed=np.asarray(well_formed) if filters.drop_malformed_turns else None,
        truncated=np.asarray(truncated) if filters.drop_truncated else None,
        trajectory_ids=np.asarray(traj_ids))
    has_loss = np.asarray([bool(np.any(seq.loss_mask[1:] != 0)) for seq in sequences])
    keep = np.asarray(result.keep, bool) & has_loss
    dropped = dict(result.dropped)
    dropped["no_loss_tokens"] = int(result.n_kept - int(keep.sum()))
    return StepSequences(sequences, np.asarray(traj_ids), keep, dropped)


# ---------------------------------------------------------------------------------------------
# Advantages


@dataclasses.dataclass(frozen=True)
class AdvantageSettings:
    """`config.advantage`: the estimator and its options (each estimator takes the ones its
    signature names); gamma, lam and whiten for GAE."""

    estimator: str = "grpo"
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    gamma: float = 1.0
    lam: float = 1.0
    whiten: bool = True

    @property
    def per_token(self) -> bool:
        return self.estimator == "gae"


def outcome_advantages(rewards: np.ndarray, groups: np.ndarray,
                       settings: AdvantageSettings) -> np.ndarray:
    """Outcome-level estimators (grpo, drgrpo, rloo): one advantage per episode."""
    accepted = inspect.signature(ADVANTAGES.get(settings.estimator)).parameters
    options = {k: v for k, v in settings.options.items() if k in accepted}
    return np.asarray(compute_advantages(settings.estimator, rewards, group_ids=groups,
                                         **options), np.float32)


def token_rewards(mask: np.ndarray, reward: float, kl_penalty: np.ndarray | None) -> np.ndarray:
    """The reward on a sequence's last sampled token, minus the per-token KL penalty."""
    out = np.zeros(len(mask), np.float32) if kl_penalty is None else -kl_penalty.copy()
    sampled = np.flatnonzero(mask)
    if len(sampled):
        out[sampled[-1]] += reward
    return np.where(mask != 0, out, 0.0).astype(np.float32)


def gae_per_sequence(rewards: Sequence[np.ndarray], values: Sequence[np.ndarray],
                     masks: Sequence[np.ndarray], settings: AdvantageSettings,
                     ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """GAE per sequence, whitened over all sampled tokens: (advantages, returns), each
    trimmed to its sequence's length."""
    length = max(len(m) for m in masks)

    def pad(rows: Sequence[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(rows), length), np.float32)
        for i, r in enumerate(rows):
            out[i, : len(r)] = r
        return out

    adv, ret = gae_advantages_and_returns(
        pad(rewards), pad(values), pad([m.astype(np.float32) for m in masks]),
        gamma=settings.gamma, lam=settings.lam, whiten=settings.whiten)
    adv, ret = np.asarray(adv), np.asarray(ret)
    return ([adv[i, : len(m)] for i, m in enumerate(masks)],
            [ret[i, : len(m)] for i, m in enumerate(masks)])


@dataclasses.dataclass(frozen=True)
class KLInReward:
    """`loss.kl_in = "reward"`: a per-token penalty `coef * KL(sampling || reference)` on
    the sampled tokens, summed into the episode's reward before the advantages."""

    coef: float
    estimator: str = "k1"


def kl_penalties(sequences: Sequence[TokenSequence], ref_logprobs: Sequence[np.ndarray],
                 kl: KLInReward) -> list[np.ndarray]:
    """Each sequence's per-token penalty (0 off the loss mask)."""
    out = []
    for seq, ref in zip(sequences, ref_logprobs, strict=True):
        zeros = np.zeros((1, len(seq)), np.float32)
        penalised = kl_penalized_rewards(zeros, seq.logprobs[None], ref[None],
                                         (seq.loss_mask != 0)[None], coef=kl.coef,
                                         estimator=kl.estimator)
        out.append(-np.asarray(penalised, np.float32)[0])
    return out


# ---------------------------------------------------------------------------------------------
# The step's samples


@dataclasses.dataclass
class TrainingSamples:
    """The sequences that enter the loss, their advantages (a float each, or a per-token
    array for GAE) and, for the critic, returns and old values; what the filters dropped and
    the step's KL metrics."""

    sequences: list[TokenSequence]
    advantages: list[float] | list[np.ndarray]
    dropped: dict[str, int]
    returns: list[np.ndarray] | None = None
    old_values: list[np.ndarray] | None = None
    extra_metrics: dict[str, float] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.sequences)


def training_samples(trajectories: Sequence[Trajectory], rewards: np.ndarray, *,
                     filters: SampleFilters, advantage: AdvantageSettings,
                     kl: KLInReward | None = None, score: Scorer | None = None,
                     ) -> TrainingSamples:
    """Filter, score (reference log-probs / values, when the recipe needs them) and attach
    advantages: one per episode for the outcome estimators, per token for GAE."""
    seqs = step_sequences(trajectories, rewards, filters)
    groups = np.asarray([t.group for t in trajectories], np.int32)
    extra: dict[str, float] = {}
    if not seqs.sequences:
        return TrainingSamples([], [], seqs.dropped)
    needs_scores = kl is not None or advantage.per_token
    if needs_scores and score is None:
        raise ValueError("KL in the reward and GAE need a scorer")
    scores = score(seqs.sequences) if needs_scores and score is not None else {}
    penalty: list[np.ndarray | None] = [None] * len(seqs.sequences)
    if kl is not None:
        penalty = list(kl_penalties(seqs.sequences, scores["ref_logprobs"], kl))
        totals = np.zeros(len(trajectories), np.float64)
        for i, p in enumerate(penalty):
            totals[seqs.trajectory[i]] += float(p.sum())
        rewards = (rewards - totals).astype(np.float32)
        tokens = sum(int((s.loss_mask != 0).sum()) for s in seqs.sequences)
        extra["train/ref_kl"] = float(totals.sum()) / kl.coef / max(tokens, 1)
        extra["train/reward_kl_penalty"] = float(totals.mean())
    kept = np.flatnonzero(seqs.keep)
    sequences = [seqs.sequences[i] for i in kept]
    if not sequences:
        return TrainingSamples([], [], seqs.dropped, extra_metrics=extra)
    if advantage.per_token:
        values = [scores["values"][i] for i in kept]
        per_token = [token_rewards(seqs.sequences[i].loss_mask,
                                   float(rewards[seqs.trajectory[i]]), penalty[i])
                     for i in kept]
        adv, ret = gae_per_sequence(per_token, values, [s.loss_mask for s in sequences],
                                    advantage)
        return TrainingSamples(sequences, adv, seqs.dropped, returns=ret, old_values=values,
                               extra_metrics=extra)
    per_episode = outcome_advantages(rewards, groups, advantage)
    return TrainingSamples(sequences, [float(per_episode[seqs.trajectory[i]]) for i in kept],
                           seqs.dropped, extra_metrics=extra)


__all__ = ["AdvantageSettings", "KLInReward", "SampleFilters", "Scorer", "StepSequences",
           "TrainingSamples", "gae_per_sequence", "kl_penalties", "outcome_advantages",
           "step_rewards", "step_sequences", "token_rewards", "training_samples"]
