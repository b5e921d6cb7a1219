"""The RL training loop: tasks -> episodes -> rewards -> advantages -> filters -> updates.

`train(config, workdir)` wires the project's pieces into one run that can be stopped and
resumed exactly. One RL step:

1. the next batch of `rollout.prompts_per_step` tasks from the grain pipeline;
2. `group_size` episodes of each through the batcher and the jitted sampler (`run_episodes`),
   seeded from `train.seed` and the step, so the step's samples do not depend on how the run
   got there;
3. the ToolOrchestra reward (preference from the config), advantages from the registry;
4. the sample filters, then packing into mini-batches of `train.mini_batch_size` turn-samples
   and `train.ppo_epochs` passes of jitted, donated update steps (several optimizer steps per RL
   step); the sampler then reads the new parameters;
5. metrics to TensorBoard under the documented tags and to the progress line; evaluation every
   `train.eval_every` steps; an Orbax checkpoint (train state, pipeline position and the
   per-step metrics history) every `train.checkpoint_every` steps and at the end;
6. a SIGTERM (preemption) is honoured at the step boundary: save, wait for the write, return.

Why exact resume works: everything random is derived from `train.seed` and the step number
(initialisation, the pipeline's shuffles, each step's sampling seed, each epoch's mini-batch
order) or lives in the checkpoint (params, optimizer state, the update step's rng key, the
pipeline index). A resumed run restores those and replays nothing, so steps 4..6 after a kill
at step 3 are the same computation as steps 4..6 of a run that never stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import logging
import math
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from orchestra_jax.data.pipeline import strata_weight_problems, task_pipeline
from orchestra_jax.models import get_preset, sharded_init
from orchestra_jax.rewards import toolorchestra_reward
from orchestra_jax.rl.advantages import ADVANTAGES, compute_advantages
from orchestra_jax.rl.batch import DEFAULT_BUCKETS, batch_shards, pack_sequences, put_batch
from orchestra_jax.rl.filters import filter_samples
from orchestra_jax.rl.losses import POLICY_LOSSES, kl_divergence
from orchestra_jax.rl.optimizer import (
    OPTIMIZERS,
    make_optimizer,
    make_schedule,
    set_lr_scale,
    with_lr_scale,
)
from orchestra_jax.rl.scoring import make_scorer
from orchestra_jax.rl.train_state import (
    TrainState,
    ema_update,
    init_train_state,
    train_state_shardings,
)
from orchestra_jax.rl.update_step import UpdateConfig, make_update_step
from orchestra_jax.rollout.batcher import Batcher
from orchestra_jax.rollout.engine import grouped_episodes, run_episodes
from orchestra_jax.rollout.requests import SamplingParams
from orchestra_jax.rollout.sampler import Sampler, SamplerBuckets
from orchestra_jax.rollout.trajectory import Trajectory
from orchestra_jax.sharding import make_mesh
from orchestra_jax.sync import run_coroutine
from orchestra_jax.train.checkpoint import CheckpointManager, abstract_like
from orchestra_jax.train.config import ConfigError, config_to_json, dump_config
from orchestra_jax.train.envs import EnvSuite, build_env_suite
from orchestra_jax.train.metrics import (
    MetricsWriter,
    rollout_metrics,
    tool_usage_histogram,
    trajectory_markdown,
    update_tags,
)
from orchestra_jax.train.preemption import PreemptionGuard
from orchestra_jax.train.progress import ProgressLine

log = logging.getLogger(__name__)

#: Tags whose values are wall-clock measurements: they differ between otherwise identical runs.
TIMING_TAGS = ("time/step_s", "time/rollout_s", "time/update_s", "time/eval_s", "train/wall_s")


# ---------------------------------------------------------------------------------------------
# Setup: each function turns one config section into a component, or raises ConfigError


def _mesh(config: ml_collections.ConfigDict) -> jax.sharding.Mesh:
    """The mesh of `mesh.shape`; a shape with no -1 takes the first devices it needs, so a
    (1, 1, 1) recipe runs on one device of a multi-device host."""
    shape = tuple(int(d) for d in config.mesh.shape)
    devices = jax.devices()
    if -1 not in shape:
        need = int(np.prod(shape)) if shape else 0
        if len(shape) != 3 or need < 1 or need > len(devices):
            raise ConfigError(f"config key 'mesh.shape' is {shape}: needs {need} devices, "
                              f"{len(devices)} available")
        devices = devices[:need]
    try:
        return make_mesh(shape, devices=devices)
    except ValueError as exc:
        raise ConfigError(f"config key 'mesh.shape': {exc}") from exc


def _uses_critic(config: ml_collections.ConfigDict) -> bool:
    return config.advantage.estimator == "gae"


def _model_config(config: ml_collections.ConfigDict, vocab_size: int) -> Any:
    """The preset with dtypes, layer options and the recipe's `model.overrides` applied."""
    overrides = dict(config.model.get("overrides", None) or {})
    overrides.setdefault("vocab_size", vocab_size)
    overrides.setdefault("value_head", _uses_critic(config))
    try:
        return get_preset(config.model.preset, dtype=config.model.dtype,
                          param_dtype=config.model.param_dtype, remat=config.model.remat,
                          scan_layers=config.model.scan_layers, **overrides)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config key 'model': {exc}") from exc


def _load_model(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                rules: Any, seed: int) -> tuple[Any, Any]:
    """`model.path` loaded onto the mesh (HF directory, .gguf or a packaged model name):
    the model and the tokenizer it ships with (None when it has none)."""
    from orchestra_jax.models.pretrained import load_pretrained

    path = str(config.model.path)
    try:
        loaded = load_pretrained(path, dtype=config.model.dtype,
                                 param_dtype=config.model.param_dtype, mesh=mesh, rules=rules,
                                 value_head=_uses_critic(config),
                                 scan_layers=config.model.scan_layers,
                                 remat=config.model.remat, seed=seed)
    except (FileNotFoundError, ValueError, KeyError, OSError) as exc:
        raise ConfigError(f"config key 'model.path' ({path!r}): {exc}") from exc
    return loaded.model, loaded.tokenizer


def _chat_template(config: ml_collections.ConfigDict) -> str | None:
    """The source of `model.chat_template` (None: keep the tokenizer's own), which replaces
    the run tokenizer's template so that a checkpoint whose own drops the tool schemas
    (SmolLM2's) is prompted with them; the run's saved tokenizer then carries it, so
    evaluation and serving render alike. Read before anything is built or loaded, so a bad
    name costs no model load."""
    name = config.model.get("chat_template")
    if name is None:
        return None
    from orchestra_jax.tokenization import named_chat_template

    try:
        return named_chat_template(str(name))
    except ValueError as exc:
        raise ConfigError(f"config key 'model.chat_template': {exc}") from exc


def _kl_in_reward(config: ml_collections.ConfigDict) -> bool:
    return config.loss.kl_coef > 0 and config.loss.kl_in == "reward"


def _choice_ids(config: ml_collections.ConfigDict, suite: EnvSuite,
                tokenizer: Any) -> tuple[int, ...]:
    """The token ids of the suite's choice pieces, for `loss.choice_entropy_coef` and
    `loss.choice_format_coef` (empty when both are off); ConfigError naming the key when one is
    on and the world has no one-token choices."""
    keys = [key for key in ("choice_entropy_coef", "choice_format_coef")
            if float(config.loss[key]) > 0]
    if not keys:
        return ()
    key = f"loss.{keys[0]}"
    try:
        ids = suite.choice_token_ids(tokenizer)
    except ValueError as exc:
        raise ConfigError(f"config key '{key}' needs every choice to be one token; {exc}"
                          ) from exc
    if len(set(ids)) < 2:
        raise ConfigError(f"config key '{key}' is {config.loss[keys[0]]}, but data.source "
                          f"{config.data.source!r} defines no choice pieces")
    return ids


def _choice_groups(config: ml_collections.ConfigDict, suite: EnvSuite,
                   choice_ids: tuple[int, ...]) -> tuple[int, ...]:
    """The group index of each choice for `loss.choice_entropy_over` "group" (empty for
    "choice", or when no choice term is on); ConfigError naming the key otherwise."""
    over = config.loss.get("choice_entropy_over", "choice")
    if over not in ("choice", "group"):
        raise ConfigError(f"config key 'loss.choice_entropy_over' is {over!r}; expected "
                          "'choice' or 'group'")
    if over == "choice" or not choice_ids:
        return ()
    if len(suite.choice_groups) != len(choice_ids):
        raise ConfigError("config key 'loss.choice_entropy_over' is 'group', but data.source "
                          f"{config.data.source!r} gives its choices no groups")
    labels = list(dict.fromkeys(suite.choice_groups))
    return tuple(labels.index(label) for label in suite.choice_groups)


def _update_config(config: ml_collections.ConfigDict,
                   choice_ids: tuple[int, ...] = (),
                   choice_groups: tuple[int, ...] = ()) -> UpdateConfig:
    loss = config.loss
    if loss.kl_in not in ("loss", "reward"):
        raise ConfigError(f"config key 'loss.kl_in' is {loss.kl_in!r}; known: "
                          "['loss', 'reward']")
    try:
        fn = POLICY_LOSSES.get(loss.policy_loss)
    except ValueError as exc:
        raise ConfigError(f"config key 'loss.policy_loss': {exc}") from exc
    accepted = inspect.signature(fn).parameters
    options = {k: v for k, v in (("clip_low", loss.clip_low), ("clip_high", loss.clip_high),
                                 ("dual_clip", loss.dual_clip)) if k in accepted}
    update = UpdateConfig(policy_loss=loss.policy_loss, policy_options=options,
                          agg_mode=loss.agg_mode,
                          kl_coef=0.0 if _kl_in_reward(config) else float(loss.kl_coef),
                          kl_estimator=loss.kl_estimator, entropy_coef=float(loss.entropy_coef),
                          value_coef=float(loss.value_coef) if _uses_critic(config) else 0.0,
                          value_clip=loss.value_clip,
                          micro_batches=int(config.train.micro_batches),
                          choice_ids=choice_ids, choice_groups=choice_groups,
                          choice_entropy_coef=float(loss.choice_entropy_coef),
                          choice_format_coef=float(loss.choice_format_coef))
    if _uses_critic(config) and update.value_coef <= 0:
        raise ConfigError("config key 'loss.value_coef' must be > 0 with advantage.estimator "
                          "'gae' (the critic must learn)")
    try:
        update.validate()
    except ValueError as exc:
        raise ConfigError(f"config key 'loss': {exc}") from exc
    return update


def _lr_schedule(config: ml_collections.ConfigDict) -> Any:
    """The learning rate by RL step (0-based): `optimizer.schedule` and `optimizer.warmup_steps`
    count RL steps, `train.steps` of them in all. Raises naming the key for a bad value."""
    opt = config.optimizer
    try:
        return make_schedule(float(opt.lr), schedule=opt.schedule,
                             warmup_steps=int(opt.warmup_steps),
                             total_steps=max(1, int(config.train.steps)))
    except ValueError as exc:
        raise ConfigError(f"config key 'optimizer': {exc}") from exc


def _lr_scheduled(config: ml_collections.ConfigDict) -> bool:
    return config.optimizer.schedule != "constant" or int(config.optimizer.warmup_steps) > 0


def _make_optimizer(config: ml_collections.ConfigDict) -> Any:
    """The RL optimizer at the constant `optimizer.lr`; with a schedule, behind `with_lr_scale`,
    whose multiplier `_Run.learn` sets at every RL step (an RL step's count of optimizer
    updates varies with what its filters keep, so optax's own count cannot place the step)."""
    opt = config.optimizer
    if opt.name not in OPTIMIZERS:
        raise ConfigError(f"config key 'optimizer.name' is {opt.name!r}; known: "
                          f"{list(OPTIMIZERS)}")
    try:
        optimizer = make_optimizer(float(opt.lr), name=opt.name, b1=opt.b1, b2=opt.b2,
                                   eps=opt.eps, muon_embeddings=bool(opt.muon_embeddings),
                                   weight_decay=opt.weight_decay, grad_clip=opt.grad_clip)
    except ValueError as exc:
        raise ConfigError(f"config key 'optimizer': {exc}") from exc
    return with_lr_scale(optimizer) if _lr_scheduled(config) else optimizer


def _ema_decay(config: ml_collections.ConfigDict) -> float:
    """`train.ema_decay`: 0 keeps no moving average; otherwise the final evaluation and
    `orchestra eval` play the average of the params (`ema_update`, once per RL step)."""
    return float(config.train.get("ema_decay", 0.0))


def _check_train(config: ml_collections.ConfigDict, shards: int) -> int:
    """Rows of one packed mini-batch; raises naming the key for impossible sizes."""
    train = config.train
    for key in ("steps", "mini_batch_size", "ppo_epochs", "micro_batches"):
        if train[key] < 1:
            raise ConfigError(f"config key 'train.{key}' must be >= 1, got {train[key]}")
    for key in ("prompts_per_step", "group_size", "max_turns", "max_new_tokens",
                "max_batch_size"):
        if config.rollout[key] < 1:
            raise ConfigError(f"config key 'rollout.{key}' must be >= 1, got "
                              f"{config.rollout[key]}")
    if config.advantage.estimator not in ADVANTAGES:
        raise ConfigError(f"config key 'advantage.estimator' is "
                          f"{config.advantage.estimator!r}; known: {sorted(ADVANTAGES)}")
    decay = train.get("ema_decay", 0.0)
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 <= decay < 1:
        raise ConfigError(f"config key 'train.ema_decay' must be a number in [0, 1), got "
                          f"{decay!r}")
    unit = shards * int(train.micro_batches)
    return -(-int(train.mini_batch_size) // unit) * unit


def _buckets(config: ml_collections.ConfigDict) -> tuple[int, ...]:
    """Packing lengths: `train.seq_buckets` (None: powers of two from 128) below the longest
    possible sequence, and that.

    A sequence is at most one prompt (`max_prompt_tokens`, longer prompts end the episode)
    plus one turn, so the last bucket is exact and a toy run compiles one update program.
    Finer buckets pad less (every padded token costs a full forward and backward) at the price
    of one more compiled update program per bucket that a step's longest sequence reaches."""
    longest = int(config.rollout.max_prompt_tokens) + int(config.rollout.max_new_tokens)
    longest = -(-longest // 8) * 8
    given = config.train.seq_buckets
    if given is None:
        buckets = DEFAULT_BUCKETS
    else:
        buckets = tuple(given)
        if not buckets or any(isinstance(b, bool) or not isinstance(b, int) or b < 1
                              for b in buckets):
            raise ConfigError("config key 'train.seq_buckets' must be a tuple of positive "
                              f"ints (or None), got {given!r}")
    return (*sorted(b for b in set(buckets) if b < longest), longest)


def _strata(config: ml_collections.ConfigDict, suite: EnvSuite,
            ) -> tuple[list[Any] | None, dict[Any, int] | None]:
    """Each training task's kind when `data.balanced` asks for balanced steps, and the kinds'
    shares of a step (`data.kind_weights`, None: equal). Checked when the run is built, so a
    misspelt kind fails before the warm start rather than after it."""
    weights = config.data.get("kind_weights")
    weights = weights.to_dict() if weights else {}
    if not bool(config.data.balanced):
        if any(w != 1 for w in weights.values()):
            raise ConfigError("config key 'data.kind_weights' needs 'data.balanced' True, "
                              f"got {weights!r}")
        return None, None
    if suite.kind_of is None:
        raise ConfigError("config key 'data.balanced' is True but this environment "
                          f"({config.data.source!r}) does not label its tasks' kinds")
    labels = [suite.kind_of(task) for task in suite.tasks]
    unknown, bad = strata_weight_problems(labels, weights)
    if unknown or bad:
        raise ConfigError(
            f"config key 'data.kind_weights' ({weights!r}): "
            + (f"{unknown} are not task kinds of this environment ({sorted(set(labels))})"
               if unknown else f"weights must be positive integers, got {bad!r}"))
    return labels, (weights or None)


def _seed(*parts: int) -> int:
    """A reproducible 31-bit seed from integers (the run seed, the step, a purpose tag)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0] & 0x7FFFFFFF)


# ---------------------------------------------------------------------------------------------
# One step's host maths


def _preference(config: ml_collections.ConfigDict, suite: EnvSuite, task: Any,
                width: int) -> np.ndarray:
    """The task's own preference vector when its suite gives one, else the config's."""
    own = suite.preference_of(task) if suite.preference_of is not None else None
    if own is not None:
        vector = np.asarray(own, np.float32)
        if vector.shape != (width + 3,):
            raise ValueError(f"task {_task_id(task, None)!r}: preference has shape "
                             f"{vector.shape}, expected ({width + 3},) "
                             f"(one per reward feature {list(suite.tool_names)} + 3)")
        return vector
    pref = config.reward.preference
    return np.asarray([pref.tools] * width + [pref.outcome, pref.cost, pref.latency],
                      np.float32)


def _rewards(config: ml_collections.ConfigDict, trajectories: Sequence[Trajectory],
             suite: EnvSuite, tasks: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """The ToolOrchestra reward of each trajectory, normalised within its group, and the
    outcome credit that normalisation takes from the groups every rollout of which solved
    its task.

    The tool-count features are `suite.tool_names` (per-alias counts where the suite counts
    aliases); the preference vector is the task's own when the suite gives one. In a group
    that is all right the outcome feature ties, so the paper's min-max normalisation counts
    it 0 for every rollout; in any other group the normalised outcome (0 or 1) is the
    outcome itself. Adding the credit back (the task's outcome weight, to each rollout of
    such a group) is therefore the reward with the outcome left unnormalised -- a constant
    within the group, which group-relative advantages never see, but which makes the mean
    reward rise with the share of tasks the policy always solves (`train/reward_raw_outcome`)."""
    n = len(trajectories)
    names = list(suite.tool_names)
    width = max(1, len(names))
    counts = np.zeros((n, width), np.float32)
    preference = np.zeros((n, width + 3), np.float32)
    for i, t in enumerate(trajectories):
        used = suite.count_calls(t) if suite.count_calls is not None else t.tool_counts()
        for j, name in enumerate(names):
            counts[i, j] = used.get(name, 0)
        task = tasks[t.group] if t.group is not None and t.group < len(tasks) else None
        preference[i] = _preference(config, suite, task, width)
    outcome = np.asarray([t.outcome for t in trajectories], np.float32)
    groups = np.asarray([t.group for t in trajectories], np.int32)
    reward = toolorchestra_reward(
        counts, outcome, np.asarray([t.cost_usd for t in trajectories], np.float32),
        np.asarray([t.latency_s for t in trajectories], np.float32),
        preference, groups, alias_min_over_users=bool(config.reward.alias_min_over_users))
    solved = outcome > 0.5
    all_solved = np.asarray([solved[groups == g].all() for g in groups], bool)
    credit = np.where(all_solved, preference[:, width], 0.0).astype(np.float32)
    return np.asarray(reward, np.float32), credit


def _advantages(config: ml_collections.ConfigDict, rewards: np.ndarray,
                groups: np.ndarray) -> np.ndarray:
    """Outcome-level estimators (grpo, drgrpo, rloo): one advantage per trajectory."""
    adv = config.advantage
    fn = ADVANTAGES.get(adv.estimator)
    accepted = inspect.signature(fn).parameters
    options = {k: v for k, v in (("std", adv.std), ("eps", adv.eps), ("clip", adv.clip),
                                 ("boost", adv.boost),
                                 ("boost_threshold", adv.boost_threshold)) if k in accepted}
    return np.asarray(compute_advantages(adv.estimator, rewards, group_ids=groups, **options),
                      np.float32)


@dataclasses.dataclass
class _Sequences:
    """Every training sequence of a step (a turn in qa mode, the dialogue otherwise), with
    the trajectory it came from and whether the filters keep it."""

    triples: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
    trajectory: np.ndarray  # int, per sequence
    keep: np.ndarray  # bool, per sequence
    dropped: dict[str, int]


def _sequences(config: ml_collections.ConfigDict, trajectories: Sequence[Trajectory],
               rewards: np.ndarray) -> _Sequences:
    flt = config.filter
    triples, groups, seq_rewards, traj_ids = [], [], [], []
    valid, well_formed, truncated = [], [], []
    for i, t in enumerate(trajectories):
        sequences = t.sequences(mask_malformed=bool(flt.drop_malformed_turns))
        per_turn = len(sequences) == len(t.samples)
        for k, seq in enumerate(sequences):
            triples.append((seq.token_ids, seq.loss_mask, seq.logprobs))
            groups.append(t.group)
            seq_rewards.append(rewards[i])
            traj_ids.append(i)
            valid.append(t.done)
            last = t.samples[k] if per_turn else t.samples[-1]
            well_formed.append(not last.malformed if per_turn else True)
            truncated.append(last.finish_reason == "length")
    if not triples:
        return _Sequences([], np.zeros(0, np.int64), np.zeros(0, bool), {})
    result = filter_samples(
        np.asarray(groups), np.asarray(seq_rewards), min_group_std=flt.min_group_std,
        valid_final_output=np.asarray(valid) if flt.drop_invalid_final_output else None,
        well_formed=np.asarray(well_formed) if flt.drop_malformed_turns else None,
        truncated=np.asarray(truncated) if flt.drop_truncated else None,
        trajectory_ids=np.asarray(traj_ids))
    has_loss = np.asarray([bool(np.any(t[1][1:] != 0)) for t in triples])
    keep = np.asarray(result.keep, bool) & has_loss
    dropped = dict(result.dropped)
    dropped["no_loss_tokens"] = int(result.n_kept - int(keep.sum()))
    return _Sequences(triples, np.asarray(traj_ids), keep, dropped)


@dataclasses.dataclass
class _Samples:
    """The turn-samples that enter the loss: (ids, mask, logprobs) triples, their advantages
    (a float each, or a per-token array for GAE) and, for the critic, returns and old values."""

    triples: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
    advantages: list[Any]
    dropped: dict[str, int]
    returns: list[np.ndarray] | None = None
    old_values: list[np.ndarray] | None = None
    extra_metrics: dict[str, float] = dataclasses.field(default_factory=dict)


def _token_rewards(mask: np.ndarray, reward: float, kl_penalty: np.ndarray | None) -> np.ndarray:
    """The reward on a sequence's last sampled token, minus the per-token KL penalty."""
    out = np.zeros(len(mask), np.float32) if kl_penalty is None else -kl_penalty.copy()
    sampled = np.flatnonzero(mask)
    if len(sampled):
        out[sampled[-1]] += reward
    return np.where(mask != 0, out, 0.0).astype(np.float32)


def _gae(config: ml_collections.ConfigDict, token_rewards: list[np.ndarray],
         values: list[np.ndarray], masks: list[np.ndarray]) -> tuple[list, list]:
    """GAE per sequence (gamma, lambda from the config), whitened over all sampled tokens."""
    from orchestra_jax.rl.advantages import gae_advantages_and_returns

    length = max(len(m) for m in masks)

    def pad(rows: list[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(rows), length), np.float32)
        for i, r in enumerate(rows):
            out[i, : len(r)] = r
        return out

    adv, ret = gae_advantages_and_returns(
        pad(token_rewards), pad(values), pad([m.astype(np.float32) for m in masks]),
        gamma=float(config.advantage.gamma), lam=float(config.advantage.lam),
        whiten=bool(config.advantage.whiten))
    adv, ret = np.asarray(adv), np.asarray(ret)
    return ([adv[i, : len(m)] for i, m in enumerate(masks)],
            [ret[i, : len(m)] for i, m in enumerate(masks)])


def _training_samples(run: _Run, trajectories: Sequence[Trajectory],
                      rewards: np.ndarray) -> _Samples:
    """Filter, score (reference log-probs / values, when the recipe needs them) and attach
    advantages: one per trajectory for the outcome estimators, per token for GAE."""
    config = run.config
    seqs = _sequences(config, trajectories, rewards)
    groups = np.asarray([t.group for t in trajectories], np.int32)
    extra: dict[str, float] = {}
    if not seqs.triples:
        return _Samples([], [], seqs.dropped)
    kl_reward, critic = _kl_in_reward(config), _uses_critic(config)
    kl_penalty: list[np.ndarray | None] = [None] * len(seqs.triples)
    values: list[np.ndarray] = []
    if kl_reward or critic:
        scores = run.score([t for t in seqs.triples])
        if kl_reward:
            coef = float(config.loss.kl_coef)
            totals = np.zeros(len(trajectories), np.float64)
            token_kl, tokens = 0.0, 0
            for i, ((_, mask, logp), ref) in enumerate(zip(seqs.triples,
                                                           scores["ref_logprobs"],
                                                           strict=True)):
                kl = np.asarray(kl_divergence(config.loss.kl_estimator, logp[None], ref[None])
                                )[0]
                kl = np.where(mask != 0, kl, 0.0).astype(np.float32)
                kl_penalty[i] = coef * kl
                totals[seqs.trajectory[i]] += coef * float(kl.sum())
                token_kl += float(kl.sum())
                tokens += int((mask != 0).sum())
            rewards = (rewards - totals).astype(np.float32)
            extra["train/ref_kl"] = token_kl / max(tokens, 1)
            extra["train/reward_kl_penalty"] = float(totals.mean())
        if critic:
            values = scores["values"]
    kept = np.flatnonzero(seqs.keep)
    triples = [seqs.triples[i] for i in kept]
    if not triples:
        return _Samples([], [], seqs.dropped, extra_metrics=extra)
    if critic:
        masks = [seqs.triples[i][1] for i in kept]
        token_rewards = [_token_rewards(seqs.triples[i][1],
                                        float(rewards[seqs.trajectory[i]]), kl_penalty[i])
                         for i in kept]
        adv, ret = _gae(config, token_rewards, [values[i] for i in kept], masks)
        return _Samples(triples, adv, seqs.dropped, returns=ret,
                        old_values=[values[i] for i in kept], extra_metrics=extra)
    per_trajectory = _advantages(config, rewards, groups)
    return _Samples(triples, [float(per_trajectory[seqs.trajectory[i]]) for i in kept],
                    seqs.dropped, extra_metrics=extra)


# ---------------------------------------------------------------------------------------------
# Checkpoint form of the train state (orbax stores key data, not typed PRNG keys)


def _to_checkpoint(state: TrainState) -> TrainState:
    return dataclasses.replace(state, rng=jax.random.key_data(state.rng))


def _from_checkpoint(stored: TrainState, like: TrainState) -> TrainState:
    rng = jax.random.wrap_key_data(stored.rng, impl=jax.random.key_impl(like.rng))
    return dataclasses.replace(stored, rng=jax.device_put(rng, like.rng.sharding))


def _json_number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


# ---------------------------------------------------------------------------------------------
# The run


class _Run:
    """The live components of one run; `train` drives it step by step."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: Path):
        self.config = config
        self.workdir = workdir
        chat_template = _chat_template(config)
        self.suite: EnvSuite = build_env_suite(config, workdir)
        self.strata, self.strata_weights = _strata(config, self.suite)
        self.mesh = _mesh(config)
        self.rules = dict(config.mesh.rules.to_dict()) if len(config.mesh.rules) else None
        seed = int(config.train.seed)
        loaded_model = None
        if config.model.path is not None:
            # A checkpoint brings its vocabulary: its tokenizer wins over the suite's.
            loaded_model, loaded_tokenizer = _load_model(config, self.mesh, self.rules, seed)
            self.tokenizer = loaded_tokenizer or self.suite.tokenizer
        else:
            self.tokenizer = self.suite.tokenizer
        if self.tokenizer is None:
            raise ConfigError(f"config key 'model.path' ({config.model.path!r}) brings no "
                              f"tokenizer and 'data.source' ({config.data.source!r}) none "
                              "either")
        if chat_template is not None:
            self.tokenizer.chat_template = chat_template
        shards = batch_shards(self.mesh, self.rules)
        self.shards = shards
        self.rows = _check_train(config, shards)
        self.buckets = _buckets(config)
        choice_ids = _choice_ids(config, self.suite, self.tokenizer)
        self.update_config = _update_config(
            config, choice_ids, _choice_groups(config, self.suite, choice_ids))
        self.optimizer = _make_optimizer(config)
        self.lr_schedule = _lr_schedule(config)  # also checks the schedule before any step
        if loaded_model is not None:
            model = loaded_model
        else:
            model_config = _model_config(config, self.tokenizer.vocab_size)
            model = sharded_init(model_config, self.mesh, seed=seed, rules=self.rules)
        graphdef, self.state = init_train_state(model, self.optimizer, self.mesh, self.rules,
                                                reference=config.loss.kl_coef > 0, seed=seed,
                                                ema=_ema_decay(config) > 0)
        self.graphdef = graphdef
        shardings = train_state_shardings(self.state)
        self.update = make_update_step(graphdef, self.update_config, self.mesh, self.rules,
                                       shardings, optimizer=self.optimizer)
        self.scorer = None
        if _kl_in_reward(config) or _uses_critic(config):
            self.scorer = make_scorer(graphdef, self.mesh, self.rules, shardings,
                                      reference=_kl_in_reward(config),
                                      values=_uses_critic(config),
                                      logits_chunk=self.update_config.logits_chunk)
        # One batch shape for every generation: how the batcher happens to split a step's
        # requests (timing, machine load) then cannot change a single bit of what is sampled,
        # which exact resume needs; filler rows cost only their matmul rows.
        rows = -(-int(config.rollout.max_batch_size) // shards) * shards
        self.sampler = Sampler(model, self.mesh, rules=self.rules,
                               pad_id=self.tokenizer.pad_token_id,
                               stop_token_ids=self.tokenizer.stop_token_ids, seed=seed,
                               buckets=SamplerBuckets(batch_sizes=(rows,)))
        self.batcher = Batcher(self.sampler, max_batch_size=rows)
        self.seed = seed

    # ---- rollouts -------------------------------------------------------------------------

    def episodes(self, tasks: Sequence[Any], group_size: int, sampling: SamplingParams,
                 ) -> list[Trajectory]:
        rollout = self.config.rollout
        specs = grouped_episodes(tasks, self.suite.make_env, group_size)
        specs = [dataclasses.replace(s, task_id=_task_id(s.task, s.group)) for s in specs]
        return run_coroutine(run_episodes(
            specs, generator=self.batcher, tokenizer=self.tokenizer,
            executor=self.suite.make_executor(), sampling=sampling,
            max_turns=int(rollout.max_turns), timeout_s=float(rollout.episode_timeout_s),
            max_prompt_tokens=int(rollout.max_prompt_tokens),
            max_concurrent_episodes=rollout.max_concurrent_episodes))

    def sampling(self, step: int, *, greedy: bool = False) -> SamplingParams:
        rollout = self.config.rollout
        return SamplingParams(max_new_tokens=int(rollout.max_new_tokens),
                              temperature=0.0 if greedy else float(rollout.temperature),
                              top_p=float(rollout.top_p), seed=_seed(self.seed, step, 0x5A))

    # ---- updates --------------------------------------------------------------------------

    def _seq_len(self, triples: Sequence[tuple[np.ndarray, ...]]) -> int:
        longest = max(len(t[0]) for t in triples)
        return next((b for b in self.buckets if b >= longest), longest)

    def score(self, triples: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
              ) -> dict[str, list[np.ndarray]]:
        """Reference log-probs and/or values of every sequence under the current (sampling)
        parameters, each trimmed to its sequence's length."""
        assert self.scorer is not None
        seq_len = self._seq_len(triples)
        size = int(self.config.train.mini_batch_size)
        out: dict[str, list[np.ndarray]] = {}
        for start in range(0, len(triples), size):
            chunk = list(triples[start:start + size])
            batch = pack_sequences(chunk, [0.0] * len(chunk), seq_len=seq_len,
                                   batch_multiple=self.rows,
                                   pad_id=self.tokenizer.pad_token_id)
            scored = jax.device_get(self.scorer(self.state, put_batch(batch, self.mesh,
                                                                      self.rules)))
            for name, array in scored.items():
                out.setdefault(name, []).extend(
                    np.asarray(array[i, : len(t[0])], np.float32) for i, t in enumerate(chunk))
        return out

    @property
    def policy_params(self) -> Any:
        """The params a trained policy is evaluated with: the moving average when the run
        keeps one (`train.ema_decay`), else the latest params."""
        ema = self.state.ema_params
        return self.state.params if ema is None else ema

    def learn(self, step: int, samples: _Samples) -> dict[str, float]:
        """`ppo_epochs` passes over mini-batches of the kept samples; mean update metrics."""
        n = len(samples.triples)
        if n == 0:
            return {}
        size = int(self.config.train.mini_batch_size)
        by_length = bool(self.config.train.group_by_length)
        lengths = [len(t[0]) for t in samples.triples]
        step_len = self._seq_len(samples.triples)
        lr = float(self.lr_schedule(step))
        if _lr_scheduled(self.config):
            base = float(self.config.optimizer.lr)
            self.state = dataclasses.replace(self.state, opt_state=set_lr_scale(
                self.state.opt_state, lr / base if base > 0 else 1.0))
        collected: list[dict[str, Any]] = []
        for epoch in range(int(self.config.train.ppo_epochs)):
            rng = np.random.default_rng([self.seed, step, epoch, 0xB7])
            for chosen in mini_batch_indices(lengths, size, rng, by_length):
                triples = [samples.triples[i] for i in chosen]
                seq_len = self._seq_len(triples) if by_length else step_len
                critic = samples.returns is not None
                batch = pack_sequences(
                    triples,
                    [samples.advantages[i] for i in chosen], seq_len=seq_len,
                    batch_multiple=self.rows, pad_id=self.tokenizer.pad_token_id,
                    returns=[samples.returns[i] for i in chosen] if critic else None,
                    old_values=[samples.old_values[i] for i in chosen] if critic else None)
                self.state, metrics = self.update(self.state, put_batch(batch, self.mesh,
                                                                        self.rules))
                collected.append(metrics)
        host = jax.device_get(collected)
        out = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
        out["tokens"] = float(np.sum([m["tokens"] for m in host]))
        out["lr"] = lr
        out["optimizer_steps"] = float(len(host))
        return out


def mini_batch_indices(lengths: Sequence[int], size: int, rng: np.random.Generator,
                       by_length: bool = False) -> list[np.ndarray]:
    """One RL batch's samples cut into mini-batches of `size` (the last may be smaller), in a
    random order. `by_length`: each mini-batch holds samples of similar length (sorted by
    length, ties broken at random, then the mini-batches shuffled), so it is padded to its own
    bucket rather than the step's longest -- a first turn's 110-token prompt no longer pays for
    a third turn's 300 (every padded token costs a full forward and backward)."""
    n = len(lengths)
    order = rng.permutation(n)
    if by_length:
        order = order[np.argsort(np.asarray(lengths)[order], kind="stable")]
    chunks = [order[start:start + size] for start in range(0, n, size)]
    return [chunks[i] for i in rng.permutation(len(chunks))] if by_length else chunks


def _task_id(task: Any, group: int | None) -> str:
    if isinstance(task, Mapping) and "id" in task:
        return str(task["id"])
    if getattr(task, "id", None) is not None:
        return str(task.id)
    return f"task-{group}"


def _step_metrics(run: _Run, trajectories: list[Trajectory], rewards: np.ndarray,
                  solved_credit: np.ndarray,
                  samples: _Samples, update: Mapping[str, float]) -> dict[str, float]:
    metrics = rollout_metrics(trajectories)
    metrics["train/reward"] = float(np.mean(rewards)) if len(rewards) else 0.0
    if len(rewards):
        metrics["train/reward_raw_outcome"] = float(np.mean(rewards + solved_credit))
    metrics.update(update_tags(update))
    metrics.update(samples.extra_metrics)
    metrics["update/kept_samples"] = float(len(samples.triples))
    for reason, count in sorted(samples.dropped.items()):
        metrics[f"update/dropped/{reason}"] = float(count)
    return metrics


def _evaluate(run: _Run, step: int) -> dict[str, float]:
    """Greedy episodes on the eval tasks (at most one step's worth), reward-free metrics."""
    tasks = list(run.suite.eval_tasks)[: int(run.config.rollout.prompts_per_step)]
    if not tasks:
        return {}
    start = time.perf_counter()
    trajectories = run.episodes(tasks, 1, run.sampling(step, greedy=True))
    stats = rollout_metrics(trajectories)
    out = {f"eval/{k.removeprefix('train/')}": v for k, v in stats.items()
           if k in ("train/accuracy", "train/cost_usd", "train/latency_s", "train/turns",
                    "train/answered_rate")}
    out["time/eval_s"] = time.perf_counter() - start
    return out


SFT_DIR = "sft"


def _warm_start(run: _Run, writer: MetricsWriter, progress: ProgressLine) -> Any:
    """`config.sft`: random valid calls played through the real episode loop, then token
    cross-entropy on their turns. The run's state restarts from the result (it is also the KL
    reference), which is saved to <workdir>/sft for `orchestra eval`. Returns the params."""
    from orchestra_jax.models import save_hf_checkpoint
    from orchestra_jax.rollout.scripted import scripted_episodes
    from orchestra_jax.train.sft import (
        SFTConfig,
        language_model_sequences,
        sequences_of,
        supervised_warm_start,
    )

    config, cfg = run.config, run.config.sft
    start = time.perf_counter()
    pool = list(run.suite.tasks)
    if not pool:
        raise ConfigError("config key 'sft.steps' > 0 but the environment has no tasks")
    tasks = [pool[i % len(pool)] for i in range(int(cfg.episodes))]
    rollout = config.rollout
    # The suite's own random policy when it has one (it knows each task's offered experts).
    spec = run.suite.evaluation
    random_for = spec.scripted.get("random") if spec is not None else None
    trajectories = run_coroutine(scripted_episodes(
        tasks, run.suite.make_env, tokenizer=run.tokenizer,
        executor=run.suite.make_executor(), choose_for=random_for,
        seed=_seed(run.seed, 0x5F7),
        max_turns=int(rollout.max_turns), timeout_s=float(rollout.episode_timeout_s),
        max_prompt_tokens=int(rollout.max_prompt_tokens)))
    sequences = sequences_of(trajectories)
    if not sequences:
        raise ConfigError("config key 'sft.episodes': no scripted episode played only "
                          "well-formed calls, so there is nothing to warm-start on")
    progress.write(f"sft: {len(sequences)} turns from {len(tasks)} random-route episodes")

    def on_step(step: int, record: dict[str, float]) -> None:
        writer.scalars(step, {f"sft/{k}": v for k, v in record.items()})
        if step % 10 == 0 or step == int(cfg.steps):
            progress.write(f"sft step {step}/{cfg.steps}: loss {record['loss']:.4f}")

    try:
        sft = SFTConfig(steps=int(cfg.steps), batch_size=int(cfg.batch_size), lr=float(cfg.lr),
                        warmup_steps=int(cfg.warmup_steps),
                        micro_batches=int(cfg.micro_batches), seed=run.seed)
        sft.validate()
        if int(cfg.lm_steps) < 0:
            raise ValueError(f"sft.lm_steps must be >= 0, got {cfg.lm_steps}")
    except ValueError as exc:
        raise ConfigError(f"config key 'sft': {exc}") from exc
    params = run.state.params
    if int(cfg.lm_steps) > 0:
        lm = dataclasses.replace(sft, steps=int(cfg.lm_steps))

        def on_lm_step(step: int, record: dict[str, float]) -> None:
            writer.scalars(step, {f"sft/lm_{k}": v for k, v in record.items()})
            if step % 10 == 0 or step == lm.steps:
                progress.write(f"sft text step {step}/{lm.steps}: loss {record['loss']:.4f}")

        text = language_model_sequences(sequences)
        params, _ = supervised_warm_start(
            run.graphdef, params, text, lm, mesh=run.mesh, rules=run.rules,
            seq_len=run._seq_len(text), batch_multiple=run.shards,
            pad_id=run.tokenizer.pad_token_id, on_step=on_lm_step)
    params, _ = supervised_warm_start(
        run.graphdef, params, sequences, sft, mesh=run.mesh, rules=run.rules,
        seq_len=run._seq_len(sequences), batch_multiple=run.shards,
        pad_id=run.tokenizer.pad_token_id, on_step=on_step)
    from flax import nnx

    # An own copy: the RL state starts from these buffers and its first update donates them.
    base = jax.tree.map(jax.numpy.copy, params)
    _, run.state = init_train_state(nnx.merge(run.graphdef, params), run.optimizer, run.mesh,
                                    run.rules, reference=config.loss.kl_coef > 0, seed=run.seed,
                                    ema=_ema_decay(config) > 0)
    # Saved aside and renamed, so a kill mid-write never leaves half a checkpoint.
    scratch = run.workdir / f".{SFT_DIR}.partial"
    import shutil

    shutil.rmtree(scratch, ignore_errors=True)
    save_hf_checkpoint(nnx.merge(run.graphdef, base), scratch)
    run.tokenizer.save(scratch)
    shutil.rmtree(run.workdir / SFT_DIR, ignore_errors=True)
    scratch.rename(run.workdir / SFT_DIR)
    progress.write(f"sft: done in {time.perf_counter() - start:.0f} s")
    return base


def _saved_warm_start(run: _Run) -> Any | None:
    """The params saved by the warm start of this workdir (None when there are none)."""
    directory = run.workdir / SFT_DIR
    if not (directory / "config.json").is_file():
        return None
    from flax import nnx

    from orchestra_jax.models.hf_checkpoint import load_hf_checkpoint

    model_cfg = run.config.model
    _, model = load_hf_checkpoint(directory, run.mesh, rules=run.rules,
                                  value_head=_uses_critic(run.config), dtype=model_cfg.dtype,
                                  param_dtype=model_cfg.param_dtype,
                                  scan_layers=model_cfg.scan_layers, remat=model_cfg.remat)
    return nnx.split(model)[1]


def _final_evaluation(run: _Run, step: int, base_params: Any | None,
                      progress: ProgressLine) -> dict[str, Any]:
    from orchestra_jax.train.evaluation import evaluate_policies

    spec = run.suite.evaluation
    limit = run.config.eval.max_tasks
    if limit is not None:
        spec = dataclasses.replace(
            spec, tasks=list(spec.tasks)[: int(limit)],
            preference_tasks={k: list(v)[: int(limit)]
                              for k, v in spec.preference_tasks.items()})
    start = time.perf_counter()
    out = evaluate_policies(run, spec, step=step, base_params=base_params,
                            workdir=run.workdir, log=progress.write)
    decay = _ema_decay(run.config)
    out["trained_params"] = f"moving average (decay {decay:g})" if decay > 0 else "last step"
    out["eval_s"] = time.perf_counter() - start
    return out


def train(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Run (or resume) the experiment `config` in `workdir`; a summary dict when it stops.

    The summary holds the step reached, the step the run started from, whether it stopped
    for a preemption signal, the last step's metrics, the latest checkpoint step and the wall
    time; it is also written to `workdir/summary.json`. Setup problems raise `ConfigError`
    naming the key before any step runs.
    """
    start_time = time.perf_counter()
    workdir = Path(workdir).expanduser().absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    dump_config(config, workdir)
    run = _Run(config, workdir)
    total = int(config.train.steps)
    every = int(config.train.checkpoint_every)
    manager = CheckpointManager(workdir / "checkpoints", keep=int(config.train.keep_checkpoints))
    writer = MetricsWriter(workdir / "tensorboard", enabled=bool(config.logging.tensorboard))
    progress = ProgressLine(total)
    history: list[dict[str, Any]] = []
    data_state: dict[str, Any] | None = None
    base_params: Any = None
    evaluation: dict[str, Any] = {}
    step = 0
    preempted = False
    checkpoint_step: int | None = None
    try:
        latest = manager.latest_step()
        if latest is not None:
            stored, data_state, extra = manager.restore(
                latest, abstract_state=abstract_like(_to_checkpoint(run.state)))
            run.state = _from_checkpoint(stored, run.state)
            history = list(extra.get("history", []))
            step = latest
            progress = ProgressLine(total, start_step=step)
            progress.write(f"resumed from step {step} in {workdir}")
        else:
            writer.text(0, "text/config", f"```json\n{config_to_json(config)}\n```")
            if int(config.sft.steps) > 0:
                base_params = _warm_start(run, writer, progress)
        if base_params is None and int(config.sft.steps) > 0:
            base_params = _saved_warm_start(run)
        run.sampler.update_params(run.state.params, version=step)
        pipeline = task_pipeline(run.suite.tasks, seed=int(config.train.seed),
                                 prompts_per_step=int(config.rollout.prompts_per_step),
                                 state=data_state, strata=run.strata,
                                 strata_weights=run.strata_weights)
        guard: Any = PreemptionGuard()
        on_main = threading.current_thread() is threading.main_thread()
        with guard if on_main else contextlib.nullcontext():
            while step < total:
                step_start = time.perf_counter()
                tasks = next(pipeline)
                trajectories = run.episodes(tasks, int(config.rollout.group_size),
                                            run.sampling(step))
                rollout_s = time.perf_counter() - step_start
                rewards, solved_credit = _rewards(config, trajectories, run.suite, tasks)
                samples = _training_samples(run, trajectories, rewards)
                update_start = time.perf_counter()
                update = run.learn(step, samples)
                if run.state.ema_params is not None:
                    run.state = ema_update(run.state, _ema_decay(config))
                update_s = time.perf_counter() - update_start
                step += 1
                run.sampler.update_params(run.state.params, version=step)
                metrics = _step_metrics(run, trajectories, rewards, solved_credit, samples,
                                        update)
                metrics["time/rollout_s"] = rollout_s
                metrics["time/update_s"] = update_s
                if config.train.eval_every and step % int(config.train.eval_every) == 0:
                    metrics.update(_evaluate(run, step))
                metrics["time/step_s"] = time.perf_counter() - step_start
                history.append({"step": step, **{k: _json_number(v)
                                                 for k, v in metrics.items()}})
                if step % max(1, int(config.logging.log_every)) == 0 or step == total:
                    writer.scalars(step, metrics)
                    for tag, values in tool_usage_histogram(trajectories).items():
                        writer.histogram(step, tag, values)
                    if trajectories:  # the first episode of the first task, and its best
                        best = max(trajectories[: int(config.rollout.group_size)],
                                   key=lambda t: t.outcome)
                        writer.text(step, "text/trajectory",
                                    trajectory_markdown(trajectories[0]) + "\n\n---\n\n"
                                    + trajectory_markdown(best))
                progress.update(step, metrics)
                preempted = guard.should_stop
                if (every and step % every == 0) or step == total or preempted:
                    writer.flush()
                    manager.save(step, _to_checkpoint(run.state), pipeline.get_state(),
                                 {"history": history}, force=True)
                if preempted:
                    progress.write(f"stop requested ({guard.received}); saved step {step}")
                    break
        manager.wait_until_finished()
        checkpoint_step = manager.latest_step()
        if (not preempted and step == total and bool(config.eval.final)
                and run.suite.evaluation is not None):
            evaluation = _final_evaluation(run, step, base_params, progress)
            writer.text(step, "text/summary", "```json\n" + json.dumps(
                {k: evaluation[k] for k in ("best_fixed_route", "preference_eval")},
                indent=1) + "\n```")
    finally:
        progress.close()
        writer.close()
        manager.close()
    summary = {
        "workdir": str(workdir),
        "step": step,
        "total_steps": total,
        "preempted": preempted,
        "checkpoint_step": checkpoint_step,
        "final_metrics": history[-1] if history else {},
        "wall_s": time.perf_counter() - start_time,
        **evaluation,
    }
    summary["wall_time_s"] = summary["wall_s"]
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def run_from_cli(config_path: str, workdir: str, overrides: Sequence[str]) -> int:
    """`orchestra train`: load, check, train; exit status 2 with the message for bad input."""
    from orchestra_jax.data.pipeline import PipelineError
    from orchestra_jax.train.checkpoint import CheckpointError
    from orchestra_jax.train.config import load_config

    try:
        config = load_config(config_path, overrides)
        summary = train(config, workdir)
    except (ConfigError, CheckpointError, PipelineError) as err:
        print(f"orchestra train: {err}", file=sys.stderr)
        return 2
    print(json.dumps({k: summary[k] for k in ("step", "total_steps", "preempted",
                                              "checkpoint_step", "wall_s")}))
    return 0


def evaluate(config: ml_collections.ConfigDict, checkpoint: str | Path,
             out: str | Path) -> dict[str, Any]:
    """`orchestra eval`: every policy of the environment's evaluation on its held-out tasks,
    with the policy of `checkpoint` as "trained"; the result is written to `out` (JSON) and
    the plot next to it.

    `checkpoint` is a run's workdir (its latest checkpoint, its vocabulary and its warm start
    as the "sft" policy) or a checkpoint directory in Hugging Face layout (e.g. <workdir>/sft,
    loaded as `model.path`)."""
    checkpoint = Path(checkpoint).expanduser().absolute()
    out = Path(out).expanduser().absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    if (checkpoint / "checkpoints").is_dir():
        workdir, hf_dir = checkpoint, None
    elif (checkpoint / "config.json").is_file():
        hf_dir = checkpoint
        parent = checkpoint.parent
        workdir = parent if (parent / "tokenizer").is_dir() else out.parent / ".eval_workdir"
    else:
        raise ConfigError(f"--checkpoint {checkpoint}: neither a run directory (with "
                          "checkpoints/) nor a checkpoint directory (with config.json)")
    if hf_dir is not None:
        config = ml_collections.ConfigDict(config.to_dict())
        config.model.path = str(hf_dir)
    workdir.mkdir(parents=True, exist_ok=True)
    run = _Run(config, workdir)
    if run.suite.evaluation is None:
        raise ConfigError(f"config key 'data.source' ({config.data.source!r}) offers no "
                          "evaluation")
    step = 0
    if hf_dir is None:
        manager = CheckpointManager(workdir / "checkpoints", keep=1)
        try:
            latest = manager.latest_step()
            if latest is None:
                raise ConfigError(f"--checkpoint {checkpoint}: no checkpoint saved yet")
            stored, _, _ = manager.restore(latest,
                                           abstract_state=abstract_like(_to_checkpoint(run.state)))
        finally:
            manager.close()
        run.state = _from_checkpoint(stored, run.state)
        step = latest
    base = _saved_warm_start(run) if hf_dir is None or hf_dir.name != SFT_DIR else None
    progress = ProgressLine(1)
    start = time.perf_counter()
    run.workdir = out.parent
    result = _final_evaluation(run, step, base, progress)
    progress.close()
    pareto = out.with_suffix(".png")
    Path(result["pareto_png"]).replace(pareto)
    result["pareto_png"] = str(pareto)
    result = {"checkpoint": str(checkpoint), "step": step,
              "wall_time_s": time.perf_counter() - start, **result}
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def evaluate_from_cli(config_path: str, checkpoint: str, out: str,
                      overrides: Sequence[str]) -> int:
    """`orchestra eval`: exit status 2 with the message for bad input."""
    from orchestra_jax.train.checkpoint import CheckpointError
    from orchestra_jax.train.config import load_config

    try:
        config = load_config(config_path, overrides)
        result = evaluate(config, checkpoint, out)
    except (ConfigError, CheckpointError) as err:
        print(f"orchestra eval: {err}", file=sys.stderr)
        return 2
    print(json.dumps({name: {k: entry[k] for k in ("accuracy", "cost_usd")}
                      for name, entry in result["policies"].items()}))
    return 0


__all__ = ["TIMING_TAGS", "evaluate", "evaluate_from_cli", "run_from_cli", "train"]
