"""`Run`: what one training run owns, and the operations the loop drives it with.

A `Run` is built from a config by `train.builders.build_run`; its fields say what a run
owns (the environment suite, the mesh, the tokenizer, the jitted update and sampler, the
train state and the settings of the step's host maths), and its methods are what the loop
does with them: play episodes, score and learn from a step's samples, hand the checkpoint
form of the state to orbax and take it back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import optax
from flax import nnx

from orchestra_jax.rewards.features import DefaultPreference
from orchestra_jax.rl.batch import TrainBatch, mini_batch_indices, pack_sequences, put_batch
from orchestra_jax.rl.optimizer import set_lr_scale
from orchestra_jax.rl.samples import AdvantageSettings, KLInReward, SampleFilters, TrainingSamples
from orchestra_jax.rl.train_state import TrainState
from orchestra_jax.rl.update_step import UpdateConfig
from orchestra_jax.rollout.batcher import Batcher
from orchestra_jax.rollout.engine import grouped_episodes, run_episodes
from orchestra_jax.rollout.episode import task_id_of
from orchestra_jax.rollout.requests import SamplingParams
from orchestra_jax.rollout.sampler import Sampler
from orchestra_jax.rollout.trajectory import TokenSequence, Trajectory
from orchestra_jax.seeding import derive_seed
from orchestra_jax.sharding.multihost import allgather_objects, local_block, process_count
from orchestra_jax.sync import run_coroutine
from orchestra_jax.tokenization import Tokenizer
from orchestra_jax.train.envs import EnvSuite

#: The seed tag of each step's rollout sampling (the run seed and the step come first).
SAMPLING_SEED_TAG = 0x5A
#: The seed tag of each epoch's mini-batch order.
MINI_BATCH_SEED_TAG = 0xB7


@dataclasses.dataclass(frozen=True)
class RolloutSettings:
    """`config.rollout`, as the episodes read it."""

    max_turns: int
    max_new_tokens: int
    max_prompt_tokens: int
    temperature: float
    top_p: float
    episode_timeout_s: float
    max_concurrent_episodes: int | None


@dataclasses.dataclass(frozen=True)
class UpdateSettings:
    """How a step's samples become optimizer steps (`config.train`, `config.optimizer`)."""

    mini_batch_size: int
    ppo_epochs: int
    group_by_length: bool
    base_lr: float
    lr_schedule: Callable[[int], Any]  # RL step (0-based) -> learning rate
    lr_scheduled: bool  # the optimizer sits behind `with_lr_scale`
    ema_decay: float  # 0: no moving average of the params
    max_nonfinite_updates: int  # in a row, before the run stops


@dataclasses.dataclass
class Run:
    """The live components of one run; `train.loop.train` drives it step by step."""

    config: ml_collections.ConfigDict
    workdir: Path
    seed: int
    suite: EnvSuite
    tokenizer: Tokenizer
    mesh: jax.sharding.Mesh
    rules: Mapping[str, Any] | None
    shards: int  # ways the batch dimension is split: packed rows are a multiple of it
    rows: int  # rows of one packed mini-batch
    buckets: tuple[int, ...]  # the lengths training sequences are padded to
    strata: list[Any] | None  # each training task's kind, for balanced steps
    strata_weights: dict[Any, int] | None
    rollout: RolloutSettings
    updates: UpdateSettings
    filters: SampleFilters
    advantage: AdvantageSettings
    kl_in_reward: KLInReward | None
    default_preference: DefaultPreference
    update_config: UpdateConfig
    optimizer: optax.GradientTransformation
    graphdef: nnx.GraphDef  # the policy's structure; `state.params` are its weights
    state: TrainState
    update: Callable[[TrainState, TrainBatch], tuple[TrainState, dict]]
    scorer: Callable[[TrainState, TrainBatch], dict] | None
    sampler: Sampler
    batcher: Batcher
    nonfinite_in_a_row: int = 0

    # ---- rollouts -------------------------------------------------------------------------

    def episodes(self, tasks: Sequence[Any], group_size: int, sampling: SamplingParams,
                 ) -> list[Trajectory]:
        """`group_size` episodes of every task through the batcher and the sampler.

        With several processes each plays the episodes of its own block of `tasks` (whole
        groups, with their places in the whole step, so what is sampled does not depend on
        the number of processes) through its own tool executor, and every process gets every
        trajectory back, in task order: rewards normalised within a group, metrics and the
        global batch all see the whole step."""
        block = local_block(len(tasks))
        first = block.start * group_size
        specs = grouped_episodes([tasks[i] for i in block], self.suite.make_env, group_size)
        specs = [dataclasses.replace(s, group=block.start + s.group, index=first + n,
                                     task_id=task_id_of(s.task, block.start + s.group))
                 for n, s in enumerate(specs)]
        r = self.rollout
        trajectories = run_coroutine(run_episodes(
            specs, generator=self.batcher, tokenizer=self.tokenizer,
            executor=self.suite.make_executor(), sampling=sampling, max_turns=r.max_turns,
            timeout_s=r.episode_timeout_s, max_prompt_tokens=r.max_prompt_tokens,
            max_concurrent_episodes=r.max_concurrent_episodes)) if specs else []
        if process_count() > 1:
            trajectories = [t for part in allgather_objects(trajectories) for t in part]
        price = self.suite.policy_price
        if price is not None:  # the orchestrator's own tokens, at its model's price
            for t in trajectories:
                t.policy_cost_usd = price.cost_usd(t.prompt_tokens, t.completion_tokens)
        return trajectories

    def sampling(self, step: int, *, greedy: bool = False) -> SamplingParams:
        """The step's sampling parameters, seeded from the run seed and the step alone."""
        r = self.rollout
        return SamplingParams(max_new_tokens=r.max_new_tokens,
                              temperature=0.0 if greedy else r.temperature, top_p=r.top_p,
                              seed=derive_seed(self.seed, step, SAMPLING_SEED_TAG))

    @property
    def policy_params(self) -> Any:
        """The params a trained policy is evaluated with: the moving average when the run
        keeps one (`train.ema_decay`), else the latest params."""
        ema = self.state.ema_params
        return self.state.params if ema is None else ema

    # ---- updates --------------------------------------------------------------------------

    def seq_len(self, sequences: Sequence[TokenSequence]) -> int:
        """The smallest bucket that holds the longest of `sequences`."""
        longest = max(len(s) for s in sequences)
        return next((b for b in self.buckets if b >= longest), longest)

    def score(self, sequences: Sequence[TokenSequence]) -> dict[str, list[np.ndarray]]:
        """Reference log-probs and/or values of every sequence under the current (sampling)
        parameters, each trimmed to its sequence's length."""
        if self.scorer is None:
            raise RuntimeError("this run's recipe needs no scores (no KL in the reward, no "
                               "critic)")
        seq_len = self.seq_len(sequences)
        size = self.updates.mini_batch_size
        out: dict[str, list[np.ndarray]] = {}
        for start in range(0, len(sequences), size):
            chunk = list(sequences[start:start + size])
            batch = pack_sequences(chunk, [0.0] * len(chunk), seq_len=seq_len,
                                   batch_multiple=self.rows, pad_id=self.tokenizer.pad_token_id)
            scored = jax.device_get(self.scorer(self.state,
                                                put_batch(batch, self.mesh, self.rules)))
            for name, array in scored.items():
                out.setdefault(name, []).extend(
                    np.asarray(array[i, : len(s)], np.float32) for i, s in enumerate(chunk))
        return out

    def learn(self, step: int, samples: TrainingSamples) -> dict[str, float]:
        """`ppo_epochs` passes over mini-batches of the kept samples; the mean update
        metrics, the learning rate, the optimizer-step count and `skipped_nonfinite` (how
        many updates the step skipped because the loss or a gradient was not finite)."""
        if not samples.sequences:
            return {}
        u = self.updates
        lengths = [len(s) for s in samples.sequences]
        step_len = self.seq_len(samples.sequences)
        lr = float(u.lr_schedule(step))
        if u.lr_scheduled:
            scale = lr / u.base_lr if u.base_lr > 0 else 1.0
            self.state = dataclasses.replace(
                self.state, opt_state=set_lr_scale(self.state.opt_state, scale))
        collected: list[dict[str, Any]] = []
        for epoch in range(u.ppo_epochs):
            rng = np.random.default_rng([self.seed, step, epoch, MINI_BATCH_SEED_TAG])
            for chosen in mini_batch_indices(lengths, u.mini_batch_size, rng,
                                             u.group_by_length):
                self.state, metrics = self.update(
                    self.state, self._mini_batch(samples, chosen,
                                                 None if u.group_by_length else step_len))
                collected.append(metrics)
        host = jax.device_get(collected)
        skipped = [float(m.pop("skipped_nonfinite", 0.0)) for m in host]
        out = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
        out["tokens"] = float(np.sum([m["tokens"] for m in host]))
        out["lr"] = lr
        out["optimizer_steps"] = float(len(host))
        out["skipped_nonfinite"] = float(sum(skipped))
        self.nonfinite_in_a_row = _after(self.nonfinite_in_a_row, skipped)
        return out

    def _mini_batch(self, samples: TrainingSamples, chosen: np.ndarray,
                    seq_len: int | None) -> TrainBatch:
        sequences = [samples.sequences[i] for i in chosen]
        critic = samples.returns is not None and samples.old_values is not None
        batch = pack_sequences(
            sequences, [samples.advantages[i] for i in chosen],
            seq_len=self.seq_len(sequences) if seq_len is None else seq_len,
            batch_multiple=self.rows, pad_id=self.tokenizer.pad_token_id,
            returns=[samples.returns[i] for i in chosen] if critic else None,
            old_values=[samples.old_values[i] for i in chosen] if critic else None)
        return put_batch(batch, self.mesh, self.rules)

    # ---- checkpoints ----------------------------------------------------------------------

    def checkpoint_state(self) -> TrainState:
        """The state as orbax stores it: the rng as key data, not a typed PRNG key."""
        return dataclasses.replace(self.state, rng=jax.random.key_data(self.state.rng))

    def restore_state(self, stored: TrainState) -> None:
        """Take back a state stored by `checkpoint_state` (re-wrapping the rng key)."""
        like = self.state.rng
        rng = jax.random.wrap_key_data(stored.rng, impl=jax.random.key_impl(like))
        self.state = dataclasses.replace(stored, rng=jax.device_put(rng, like.sharding))


def _after(in_a_row: int, skipped: Sequence[float]) -> int:
    """Consecutive skipped updates after this step's `skipped` flags, in order."""
    for flag in skipped:
        in_a_row = in_a_row + 1 if flag > 0 else 0
    return in_a_row


__all__ = ["MINI_BATCH_SEED_TAG", "SAMPLING_SEED_TAG", "RolloutSettings", "Run",
           "UpdateSettings"]
