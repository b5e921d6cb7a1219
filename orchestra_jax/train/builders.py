"""Config -> the components of a run: mesh, model, optimizer, buckets, strata, env suite,
sampler. `build_run(config, workdir)` returns the `Run` the loop drives.

The config's values were checked once by `train.schema.validate_config` before anything is
built; what is checked here needs a built thing -- the devices a mesh shape asks for, the
world's vocabulary for one-token choices, the task kinds a weighting names, the checkpoint a
path points at -- and raises `ConfigError` naming the key.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from orchestra_jax.data.pipeline import strata_weight_problems
from orchestra_jax.models import get_preset, sharded_init
from orchestra_jax.models.pretrained import load_pretrained
from orchestra_jax.rewards.features import DefaultPreference
from orchestra_jax.rl.batch import DEFAULT_BUCKETS, batch_shards
from orchestra_jax.rl.losses import POLICY_LOSSES
from orchestra_jax.rl.optimizer import make_optimizer, make_schedule, with_lr_scale
from orchestra_jax.rl.samples import AdvantageSettings, KLInReward, SampleFilters
from orchestra_jax.rl.scoring import make_scorer
from orchestra_jax.rl.train_state import init_train_state, train_state_shardings
from orchestra_jax.rl.update_step import UpdateConfig, make_update_step
from orchestra_jax.rollout.batcher import Batcher
from orchestra_jax.rollout.sampler import Sampler, SamplerBuckets
from orchestra_jax.sharding import make_mesh
from orchestra_jax.sharding.multihost import local_mesh, primary_first
from orchestra_jax.tokenization import Tokenizer, named_chat_template
from orchestra_jax.train.envs import EnvSuite, build_env_suite
from orchestra_jax.train.errors import ConfigError
from orchestra_jax.train.paths import local_mirror
from orchestra_jax.train.run import RolloutSettings, Run, UpdateSettings

# ---------------------------------------------------------------------------------------------
# Devices and the model


def build_mesh(config: ml_collections.ConfigDict) -> jax.sharding.Mesh:
    """The mesh of `mesh.shape`; a shape with no -1 takes the first devices it needs, so a
    (1, 1, 1) recipe runs on one device of a multi-device host."""
    shape = tuple(int(d) for d in config.mesh.shape)
    devices = jax.devices()
    if -1 not in shape and jax.process_count() > 1 and int(np.prod(shape)) != len(devices):
        raise ConfigError(f"config key 'mesh.shape' is {shape}: a run of {jax.process_count()} "
                          f"processes trains on all {len(devices)} devices; use -1 for one "
                          "axis (e.g. --config.mesh.shape='(1,-1,1)')")
    if -1 not in shape:
        need = int(np.prod(shape))
        if need > len(devices):
            raise ConfigError(f"config key 'mesh.shape' is {shape}: needs {need} devices, "
                              f"{len(devices)} available")
        devices = devices[:need]
    try:
        return make_mesh(shape, devices=devices)
    except ValueError as exc:
        raise ConfigError(f"config key 'mesh.shape': {exc}") from exc


def uses_critic(config: ml_collections.ConfigDict) -> bool:
    """GAE needs a value head and per-token scores."""
    return config.advantage.estimator == "gae"


def mesh_rules(config: ml_collections.ConfigDict) -> dict[str, Any] | None:
    """`mesh.rules` merged over the default logical-axis rules (None: the defaults)."""
    return dict(config.mesh.rules.to_dict()) if len(config.mesh.rules) else None


def model_config(config: ml_collections.ConfigDict, vocab_size: int) -> Any:
    """The preset with dtypes, layer options and the recipe's `model.overrides` applied."""
    overrides = dict(config.model.get("overrides", None) or {})
    overrides.setdefault("vocab_size", vocab_size)
    overrides.setdefault("value_head", uses_critic(config))
    try:
        return get_preset(config.model.preset, dtype=config.model.dtype,
                          param_dtype=config.model.param_dtype, remat=config.model.remat,
                          scan_layers=config.model.scan_layers, **overrides)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config key 'model': {exc}") from exc


def load_model(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, rules: Any,
               seed: int) -> tuple[Any, Tokenizer | None]:
    """`model.path` loaded onto the mesh (HF directory, .gguf or a packaged model name):
    the model and the tokenizer it ships with (None when it has none)."""
    path = str(config.model.path)
    try:
        loaded = load_pretrained(path, dtype=config.model.dtype,
                                 param_dtype=config.model.param_dtype, mesh=mesh, rules=rules,
                                 value_head=uses_critic(config),
                                 scan_layers=config.model.scan_layers,
                                 remat=config.model.remat, seed=seed)
    except (FileNotFoundError, ValueError, KeyError, OSError) as exc:
        raise ConfigError(f"config key 'model.path' ({path!r}): {exc}") from exc
    return loaded.model, loaded.tokenizer


def run_tokenizer(config: ml_collections.ConfigDict, suite: EnvSuite,
                  checkpoint_tokenizer: Tokenizer | None) -> Tokenizer:
    """A checkpoint's tokenizer wins over the suite's; `model.chat_template` replaces its
    template, so a checkpoint whose own drops the tool schemas (SmolLM2's) is prompted with
    them, and the run's saved tokenizer carries it (evaluation and serving render alike)."""
    tokenizer = checkpoint_tokenizer or suite.tokenizer
    if tokenizer is None:
        raise ConfigError(f"config key 'model.path' ({config.model.path!r}) brings no "
                          f"tokenizer and 'data.source' ({config.data.source!r}) none either")
    name = config.model.get("chat_template")
    if name is not None:
        tokenizer.chat_template = named_chat_template(str(name))
    return tokenizer


# ---------------------------------------------------------------------------------------------
# The update


def choice_ids(config: ml_collections.ConfigDict, suite: EnvSuite,
               tokenizer: Tokenizer) -> tuple[int, ...]:
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


def choice_groups(config: ml_collections.ConfigDict, suite: EnvSuite,
                  ids: tuple[int, ...]) -> tuple[int, ...]:
    """The group index of each choice for `loss.choice_entropy_over` "group" (empty for
    "choice", or when no choice term is on); ConfigError when the world gives no groups."""
    if config.loss.choice_entropy_over == "choice" or not ids:
        return ()
    if len(suite.choice_groups) != len(ids):
        raise ConfigError("config key 'loss.choice_entropy_over' is 'group', but data.source "
                          f"{config.data.source!r} gives its choices no groups")
    labels = list(dict.fromkeys(suite.choice_groups))
    return tuple(labels.index(label) for label in suite.choice_groups)


def kl_in_reward(config: ml_collections.ConfigDict) -> KLInReward | None:
    """`loss.kl_in = "reward"` with a positive `loss.kl_coef` (else None)."""
    loss = config.loss
    if loss.kl_coef > 0 and loss.kl_in == "reward":
        return KLInReward(coef=float(loss.kl_coef), estimator=loss.kl_estimator)
    return None


def update_config(config: ml_collections.ConfigDict, ids: tuple[int, ...] = (),
                  groups: tuple[int, ...] = ()) -> UpdateConfig:
    """`config.loss` as the update step's settings (the KL goes into the loss only when it
    is not in the reward)."""
    loss = config.loss
    accepted = inspect.signature(POLICY_LOSSES.get(loss.policy_loss)).parameters
    options = {k: v for k, v in (("clip_low", loss.clip_low), ("clip_high", loss.clip_high),
                                 ("dual_clip", loss.dual_clip)) if k in accepted}
    return UpdateConfig(
        policy_loss=loss.policy_loss, policy_options=options, agg_mode=loss.agg_mode,
        kl_coef=0.0 if kl_in_reward(config) is not None else float(loss.kl_coef),
        kl_estimator=loss.kl_estimator, entropy_coef=float(loss.entropy_coef),
        value_coef=float(loss.value_coef) if uses_critic(config) else 0.0,
        value_clip=loss.value_clip, micro_batches=int(config.train.micro_batches),
        choice_ids=ids, choice_groups=groups,
        choice_entropy_coef=float(loss.choice_entropy_coef),
        choice_format_coef=float(loss.choice_format_coef),
        skip_nonfinite=bool(config.train.skip_nonfinite_updates))


def lr_scheduled(config: ml_collections.ConfigDict) -> bool:
    return config.optimizer.schedule != "constant" or int(config.optimizer.warmup_steps) > 0


def build_optimizer(config: ml_collections.ConfigDict) -> Any:
    """The RL optimizer at the constant `optimizer.lr`; with a schedule, behind `with_lr_scale`,
    whose multiplier `Run.learn` sets at every RL step (an RL step's count of optimizer
    updates varies with what its filters keep, so optax's own count cannot place the step)."""
    opt = config.optimizer
    optimizer = make_optimizer(float(opt.lr), name=opt.name, b1=opt.b1, b2=opt.b2, eps=opt.eps,
                               muon_embeddings=bool(opt.muon_embeddings),
                               weight_decay=opt.weight_decay, grad_clip=opt.grad_clip,
                               decay_biases_and_norms=bool(opt.decay_biases_and_norms))
    return with_lr_scale(optimizer) if lr_scheduled(config) else optimizer


def update_settings(config: ml_collections.ConfigDict) -> UpdateSettings:
    """`config.train` and the learning-rate schedule by RL step (0-based): the schedule and
    the warm-up count RL steps, `train.steps` of them in all."""
    opt, train = config.optimizer, config.train
    return UpdateSettings(
        mini_batch_size=int(train.mini_batch_size), ppo_epochs=int(train.ppo_epochs),
        group_by_length=bool(train.group_by_length), base_lr=float(opt.lr),
        lr_schedule=make_schedule(float(opt.lr), schedule=opt.schedule,
                                  warmup_steps=int(opt.warmup_steps),
                                  total_steps=max(1, int(train.steps))),
        lr_scheduled=lr_scheduled(config), ema_decay=float(train.ema_decay),
        max_nonfinite_updates=int(train.max_nonfinite_updates))


def mini_batch_rows(config: ml_collections.ConfigDict, shards: int) -> int:
    """Rows of one packed mini-batch: `train.mini_batch_size` rounded up to a multiple of
    the batch shards times the micro-batches."""
    unit = shards * int(config.train.micro_batches)
    return -(-int(config.train.mini_batch_size) // unit) * unit


def sequence_buckets(config: ml_collections.ConfigDict) -> tuple[int, ...]:
    """Packing lengths: `train.seq_buckets` (None: powers of two from 128) below the longest
    possible sequence, and that.

    A sequence is at most one prompt (`max_prompt_tokens`, longer prompts end the episode)
    plus one turn, so the last bucket is exact and a toy run compiles one update program.
    Finer buckets pad less (every padded token costs a full forward and backward) at the price
    of one more compiled update program per bucket that a step's longest sequence reaches."""
    longest = int(config.rollout.max_prompt_tokens) + int(config.rollout.max_new_tokens)
    longest = -(-longest // 8) * 8
    given = config.train.seq_buckets
    buckets = DEFAULT_BUCKETS if given is None else tuple(given)
    return (*sorted(b for b in set(buckets) if b < longest), longest)


def strata_of(config: ml_collections.ConfigDict, suite: EnvSuite,
              ) -> tuple[list[Any] | None, dict[Any, int] | None]:
    """Each training task's kind when `data.balanced` asks for balanced steps, and the kinds'
    shares of a step (`data.kind_weights`, None: equal). Checked when the run is built, so a
    misspelt kind fails before the warm start rather than after it."""
    if not bool(config.data.balanced):
        return None, None
    weights = config.data.get("kind_weights")
    weights = weights.to_dict() if weights else {}
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


# ---------------------------------------------------------------------------------------------
# Host-side settings


def rollout_settings(config: ml_collections.ConfigDict) -> RolloutSettings:
    r = config.rollout
    return RolloutSettings(
        max_turns=int(r.max_turns), max_new_tokens=int(r.max_new_tokens),
        max_prompt_tokens=int(r.max_prompt_tokens), temperature=float(r.temperature),
        top_p=float(r.top_p), episode_timeout_s=float(r.episode_timeout_s),
        max_concurrent_episodes=r.max_concurrent_episodes)


def sample_filters(config: ml_collections.ConfigDict) -> SampleFilters:
    f = config.filter
    return SampleFilters(min_group_std=f.min_group_std,
                         drop_invalid_final_output=bool(f.drop_invalid_final_output),
                         drop_malformed_turns=bool(f.drop_malformed_turns),
                         drop_truncated=bool(f.drop_truncated))


def advantage_settings(config: ml_collections.ConfigDict) -> AdvantageSettings:
    adv = config.advantage
    return AdvantageSettings(
        estimator=adv.estimator,
        options={"std": adv.std, "eps": adv.eps, "clip": adv.clip, "boost": adv.boost,
                 "boost_threshold": adv.boost_threshold},
        gamma=float(adv.gamma), lam=float(adv.lam), whiten=bool(adv.whiten))


def default_preference(config: ml_collections.ConfigDict) -> DefaultPreference:
    pref = config.reward.preference
    return DefaultPreference(tools=pref.tools, outcome=pref.outcome, cost=pref.cost,
                             latency=pref.latency)


# ---------------------------------------------------------------------------------------------
# The run


def _policy(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, rules: Any, seed: int,
            suite: EnvSuite) -> tuple[Any, Tokenizer]:
    """The policy model on the mesh (loaded from `model.path`, else initialised from the
    preset at the run tokenizer's vocabulary size) and the run tokenizer."""
    if config.model.path is None:
        tokenizer = run_tokenizer(config, suite, None)
        model = sharded_init(model_config(config, tokenizer.vocab_size), mesh, seed=seed,
                             rules=rules)
        return model, tokenizer
    model, own_tokenizer = load_model(config, mesh, rules, seed)
    return model, run_tokenizer(config, suite, own_tokenizer)


def build_run(config: ml_collections.ConfigDict, workdir: str | os.PathLike[str]) -> Run:
    """Every component of the run `config` describes, in `workdir` (environments that build
    files, such as a trained vocabulary, build them once in its local mirror: the workdir
    itself unless it is a URL; process 0 first, the others then read what it built)."""
    local = local_mirror(workdir)
    local.mkdir(parents=True, exist_ok=True)
    suite = primary_first("build_env_suite", lambda: build_env_suite(config, local))
    strata, strata_weights = strata_of(config, suite)
    mesh, rules, seed = build_mesh(config), mesh_rules(config), int(config.train.seed)
    model, tokenizer = _policy(config, mesh, rules, seed, suite)
    ids = choice_ids(config, suite, tokenizer)
    update_cfg = update_config(config, ids, choice_groups(config, suite, ids))
    updates = update_settings(config)
    optimizer = build_optimizer(config)
    kl = kl_in_reward(config)
    graphdef, state = init_train_state(model, optimizer, mesh, rules,
                                       reference=config.loss.kl_coef > 0, seed=seed,
                                       ema=updates.ema_decay > 0)
    shardings = train_state_shardings(state)
    scorer = None
    if kl is not None or uses_critic(config):
        scorer = make_scorer(graphdef, mesh, rules, shardings, reference=kl is not None,
                             values=uses_critic(config), logits_chunk=update_cfg.logits_chunk)
    shards = batch_shards(mesh, rules)
    # One batch shape for every generation: how the batcher happens to split a step's
    # requests (timing, machine load) then cannot change a single bit of what is sampled,
    # which exact resume needs; filler rows cost only their matmul rows.
    rows = -(-int(config.rollout.max_batch_size) // shards) * shards
    # With several processes, each host samples its own episodes on its own devices.
    sampler = Sampler(model, local_mesh(mesh), rules=rules, pad_id=tokenizer.pad_token_id,
                      stop_token_ids=tokenizer.stop_token_ids, seed=seed,
                      buckets=SamplerBuckets(batch_sizes=(rows,)))
    return Run(
        config=config, workdir=local, seed=seed, suite=suite, tokenizer=tokenizer,
        mesh=mesh, rules=rules, shards=shards, rows=mini_batch_rows(config, shards),
        buckets=sequence_buckets(config), strata=strata, strata_weights=strata_weights,
        rollout=rollout_settings(config), updates=updates, filters=sample_filters(config),
        advantage=advantage_settings(config), kl_in_reward=kl,
        default_preference=default_preference(config), update_config=update_cfg,
        optimizer=optimizer, graphdef=graphdef, state=state,
        update=make_update_step(graphdef, update_cfg, mesh, rules, shardings,
                                optimizer=optimizer),
        scorer=scorer, sampler=sampler, batcher=Batcher(sampler, max_batch_size=rows))


__all__ = ["build_mesh", "build_optimizer", "build_run", "choice_groups", "choice_ids",
           "kl_in_reward", "mini_batch_rows", "model_config", "sequence_buckets",
           "update_config", "update_settings", "uses_critic"]
