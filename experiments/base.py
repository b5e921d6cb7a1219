"""The shared defaults every recipe starts from: `base_config()`; not a runnable recipe.

A recipe imports this (`from base import base_config`; the loader makes the experiments folder
importable), changes what differs, and returns the result from its `get_config()`. Keeping
every field here, with its meaning, is what lets the loader reject a mistyped
`--config.a.b=value` and lets the training loop read fields without guessing defaults.

The defaults are a small CPU-sized run on the embedded toolworld; the method's own numbers
live in `orchestrator_qwen3_8b.py`. Fields that may be None are declared with
`placeholder(type)`, so an override can still be type-checked while they are unset, and
`--config.x=None` turns them off again.

Sections and fields
-------------------
model       preset: a name from `orchestra_jax.models.PRESETS` (architecture; random init when
            no path). path: a Hugging Face checkpoint directory (config.json, safetensors,
            tokenizer), a .gguf file or a packaged model name ("smollm2-135m-instruct") whose
            weights initialise the policy and the frozen KL reference; when set, the
            architecture and the tokenizer come from it and `preset` is not used.
            chat_template: a template name ("chatml_tools", "compact") that replaces the
            tokenizer's own (None: keep it) -- for checkpoints whose template renders no
            tools, such as SmolLM2's.
            dtype: activation/compute dtype.
            param_dtype: master weights (keep float32 with small learning rates, since a
            bfloat16 weight cannot absorb a 1e-6 relative update). remat: recompute
            activations in the backward pass. scan_layers: one scanned layer (fast compiles).
mesh        shape: (data, fsdp, tensor) device counts, one entry may be -1 for "the rest".
            rules: logical axis -> mesh axes entries merged over
            `orchestra_jax.sharding.DEFAULT_RULES` (free-form: --config.mesh.rules.embed=fsdp).
rollout     prompts_per_step tasks per RL step, each played group_size times. max_turns per
            episode; max_prompt_tokens (the prompt is truncated to it) and max_new_tokens per
            turn; temperature, top_p; episode_timeout_s wall-clock per episode;
            max_batch_size generation requests per sampler call; max_concurrent_episodes
            (None: all at once).
reward      preference: the vector P used when a task carries none -- `tools` (the same weight
            on every tool-count coordinate), `outcome`, `cost`, `latency`, each in [0, 1].
            alias_min_over_users: reproduce the release's per-alias minima over users only (a
            bug; off). The release's group-constant cost/latency bonus has no switch.
filter      min_group_std: drop groups whose reward std is at or below it (None: keep all).
            drop_invalid_final_output / drop_malformed_turns / drop_truncated: the other
            filters of `orchestra_jax.rl.filters`.
advantage   estimator: a name in the advantage registry (grpo, drgrpo, rloo, gae). std:
            "sample" (n-1) or "population". eps added to the std. clip (None: off; the
            release uses 3.0), boost (None: off; the release adds 0.1) to advantages at or
            above boost_threshold. gamma, lam, whiten: GAE's discount, trace decay and
            whitening over the batch's sampled tokens (gae only; each training sequence ends
            with its episode's reward on its last sampled token).
loss        policy_loss: a name in the loss registry (ppo_clip, gspo, reinforce). clip_low,
            clip_high (None: symmetric), dual_clip (None: off). agg_mode: token-mean,
            seq-mean-token-sum, seq-mean-token-mean, seq-mean-token-sum-norm. kl_coef,
            kl_estimator (k1, k2, k3, abs, ...), kl_in: "loss" (a loss term) or "reward" (a
            per-token penalty kl_coef * KL(sampling || reference) on the sampled tokens,
            summed into the episode's reward before the advantages; per token for gae).
            entropy_coef. value_coef, value_clip: only for estimators with a value head (gae).
            choice_entropy_coef (a bonus on the entropy of the batch-marginal distribution
            over the world's one-token choices), choice_format_coef (-log P(a choice) at each
            turn's decision position): 0 is off; they need a world with choice pieces
            (toolworld). choice_entropy_over: "choice" (that marginal over the choices) or
            "group" (over the groups the world gives them; toolworld: the call's tool).
optimizer   name (adamw or muon; muon_embeddings: the head too), lr, schedule ("constant",
            "cosine" or "linear", both decaying to 0 at train.steps), warmup_steps, b1, b2,
            eps, weight_decay, grad_clip (global norm; None: off). The schedule and the
            warm-up count RL steps, not optimizer updates (a step's count of those varies).
train       steps (RL steps), mini_batch_size (turn-samples per optimizer step), ppo_epochs
            over each RL batch, micro_batches per mini-batch (gradient accumulation), seed,
            eval_every / checkpoint_every in RL steps (0: never), keep_checkpoints.
            seq_buckets: the lengths training sequences are padded to (None: powers of two
            from 128; the longest possible sequence is always the last bucket).
            group_by_length: mini-batches of samples of similar length, each padded to its
            own bucket (False: random mini-batches padded to the step's longest sample).
            ema_decay: 0 (off) or the per-RL-step decay of a moving average of the params
            that the final evaluation and `orchestra eval` play as the trained policy.
sft         the format-only warm start before RL (steps 0: off): `episodes` scripted
            episodes of uniformly random valid calls on training tasks, then `steps` AdamW
            steps (lr, warmup_steps) of token cross-entropy on `batch_size` of their turns,
            after `lm_steps` steps of next-token prediction on the whole text of those turns
            (prompts, notes, calls: features of the prompt for a from-scratch policy; 0: off);
            the result is saved to <workdir>/sft (a checkpoint `orchestra eval` reads) and is
            both the RL starting point and the KL reference.
eval        final: at the end of a run, evaluate every policy the environment offers
            (trained, sft, random, fixed routes, preference variants) on its held-out tasks
            into summary.json and pareto.png (environments without an evaluation skip it).
            max_tasks: evaluate on the first N held-out tasks only (None: all).
data        source: the environment family -- "toolworld" (embedded, generated), "qa" or
            "tau2" (tasks read from path). path: the task file (None for toolworld);
            eval_path (None: no eval set); max_tasks (None: all). balanced: every step's
            tasks hold the environment's task kinds (toolworld: families) in equal numbers,
            or in the proportions of kind_weights (kind -> positive int; unnamed kinds 1).
world       the embedded toolworld (data.source "toolworld"): seed of the world (entities,
            tasks, experts); train_tasks / test_tasks drawn from disjoint seeds;
            train_preference "neutral" or "mix" (training tasks carry preference
            instructions, e.g. avoid the frontier model); preference_mix: the mixture's
            weights (preference name -> weight >= 0; empty: half neutral, a fifth
            avoid_frontier, a tenth each of the other three); tool_subsets, price_schedules: the
            paper's augmentations; search_k documents per search; vocab_size of the
            SentencePiece vocabulary trained on the world's text from vocabulary_tasks
            random-policy episodes; prompt_template the chat template it is trained for and
            the episodes render: "chatml_tools" (JSON tool schemas and the Hermes
            instructions) or "compact" (the tools named on one line, ~90 fewer tokens a
            turn; for from-scratch policies, which learn the call format from the warm start).
logging     tensorboard: write event files under the workdir; log_every in RL steps.
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
