"""`experiments/base.py`'s `base_config()` as it was before the schema (commit 3c29536),
verbatim: the reference that `orchestra_jax.train.schema.default_config()` must reproduce
key by key, value by value and type by type (None-able fields as `placeholder`s), and that
every recipe in experiments/ is rebuilt over in tests/train/test_config_schema.py.

Not a recipe; do not change it -- it pins what the defaults were.
"""

from __future__ import annotations

import ml_collections
from ml_collections.config_dict import placeholder


def _with(value: object, kind: type) -> object:
    """A None-able field that starts at ``value``: overrides keep its type and accept None."""
    ref = placeholder(kind)
    ref.set(value)
    return ref


def base_config() -> ml_collections.ConfigDict:
    """A fresh, unlocked config holding every field the training loop reads."""
    config = ml_collections.ConfigDict()

    config.model = ml_collections.ConfigDict()
    config.model.preset = "tiny"
    config.model.path = placeholder(str)
    config.model.chat_template = placeholder(str)
    config.model.dtype = "float32"
    config.model.param_dtype = "float32"
    config.model.remat = False
    config.model.scan_layers = False

    config.mesh = ml_collections.ConfigDict()
    config.mesh.shape = (1, -1, 1)
    config.mesh.rules = ml_collections.ConfigDict()

    config.rollout = ml_collections.ConfigDict()
    config.rollout.prompts_per_step = 8
    config.rollout.group_size = 8
    config.rollout.max_turns = 8
    config.rollout.max_prompt_tokens = 2048
    config.rollout.max_new_tokens = 256
    config.rollout.temperature = 1.0
    config.rollout.top_p = 1.0
    config.rollout.episode_timeout_s = 300.0
    config.rollout.max_batch_size = 64
    config.rollout.max_concurrent_episodes = placeholder(int)

    config.reward = ml_collections.ConfigDict()
    config.reward.preference = ml_collections.ConfigDict()
    config.reward.preference.tools = 0.0
    config.reward.preference.outcome = 1.0
    config.reward.preference.cost = 0.0
    config.reward.preference.latency = 0.0
    config.reward.alias_min_over_users = False

    config.filter = ml_collections.ConfigDict()
    config.filter.min_group_std = _with(0.1, float)
    config.filter.drop_invalid_final_output = True
    config.filter.drop_malformed_turns = True
    config.filter.drop_truncated = False

    config.advantage = ml_collections.ConfigDict()
    config.advantage.estimator = "grpo"
    config.advantage.std = "sample"
    config.advantage.eps = 1e-6
    config.advantage.clip = placeholder(float)
    config.advantage.boost = placeholder(float)
    config.advantage.boost_threshold = 1.0
    config.advantage.gamma = 1.0
    config.advantage.lam = 1.0
    config.advantage.whiten = True

    config.loss = ml_collections.ConfigDict()
    config.loss.policy_loss = "ppo_clip"
    config.loss.clip_low = 0.2
    config.loss.clip_high = _with(0.2, float)
    config.loss.dual_clip = placeholder(float)
    config.loss.agg_mode = "token-mean"
    config.loss.kl_coef = 0.0
    config.loss.kl_estimator = "k2"
    config.loss.kl_in = "loss"
    config.loss.entropy_coef = 0.0
    # Bonus on the entropy of the batch-marginal distribution over the world's choice tokens
    # (its call pieces); 0 is off. See UpdateConfig.choice_entropy_coef.
    config.loss.choice_entropy_coef = 0.0
    # "choice": the marginal over the choices themselves; "group": over the groups the world
    # gives them (toolworld: the call's tool, so spreading the expert earns no bonus).
    config.loss.choice_entropy_over = "choice"
    # Loss -log P(a choice token) at each turn's decision position (keeps turns well formed
    # without preferring a choice); 0 is off. See UpdateConfig.choice_format_coef.
    config.loss.choice_format_coef = 0.0
    config.loss.value_coef = 0.5
    config.loss.value_clip = _with(0.2, float)

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "adamw"
    # With name "muon": orthogonalise the embedding / LM head's updates too (else AdamW's).
    config.optimizer.muon_embeddings = False
    config.optimizer.lr = 1e-5
    config.optimizer.schedule = "constant"
    config.optimizer.warmup_steps = 0
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.999
    config.optimizer.eps = 1e-8
    config.optimizer.weight_decay = 0.01
    config.optimizer.grad_clip = _with(1.0, float)

    config.train = ml_collections.ConfigDict()
    config.train.steps = 100
    config.train.mini_batch_size = 16
    config.train.ppo_epochs = 1
    config.train.micro_batches = 1
    config.train.seed = 0
    config.train.eval_every = 0
    config.train.checkpoint_every = 10
    config.train.keep_checkpoints = 3
    config.train.seq_buckets = placeholder(tuple)
    config.train.group_by_length = False
    config.train.ema_decay = 0.0

    config.sft = ml_collections.ConfigDict()
    config.sft.steps = 0
    config.sft.lm_steps = 0
    config.sft.episodes = 512
    config.sft.batch_size = 32
    config.sft.lr = 1e-3
    config.sft.warmup_steps = 10
    config.sft.micro_batches = 1

    config.eval = ml_collections.ConfigDict()
    config.eval.final = True
    config.eval.max_tasks = placeholder(int)

    config.data = ml_collections.ConfigDict()
    config.data.source = "toolworld"
    config.data.path = placeholder(str)
    config.data.eval_path = placeholder(str)
    config.data.max_tasks = placeholder(int)
    config.data.balanced = False
    config.data.kind_weights = ml_collections.ConfigDict()

    config.world = ml_collections.ConfigDict()
    config.world.seed = 0
    config.world.train_tasks = 2000
    config.world.test_tasks = 400
    config.world.train_preference = "mix"
    config.world.preference_mix = ml_collections.ConfigDict()  # empty: the world's default
    config.world.tool_subsets = False
    config.world.price_schedules = False
    config.world.search_k = 3
    config.world.vocab_size = 2000
    config.world.vocabulary_tasks = 200
    config.world.prompt_template = "chatml_tools"
    config.world.call_pieces = "call"
    config.world.last_turn_note = False  # True: the last turn's prompt says so; random answers
    config.world.efficiency_weight = 0.5  # cost and latency weight of the neutral user

    config.logging = ml_collections.ConfigDict()
    config.logging.tensorboard = True
    config.logging.log_every = 1

    return config
