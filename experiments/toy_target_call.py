"""orchestra train --config experiments/toy_target_call.py --workdir /tmp/toy_target_call

The toy recipe: GRPO teaches a randomly initialised 2-layer policy (64 wide, ~0.1M parameters,
its own 1000-piece vocabulary built in the workdir) to call the `target` tool among four
(`orchestra_jax.envs.toy`). Expected: train/accuracy (the fraction of episodes that call
`target`) starts at ~0.00 and passes 0.9 around step 11. Measured (seed 0, 2-core CPU shared
with other jobs, 6.5 min for 30 steps, ~10 s a step): 0.00 0.00 0.02 0.04 0.07 0.12 0.24 0.37
0.59 0.79 0.94 0.98 0.99 and 1.00 for every step from 14 to 30. Everything is the project's
own machinery -- the grain pipeline, the batcher and jitted sampler, the ToolOrchestra reward,
GRPO, the packed jitted update step, TensorBoard events under the workdir, Orbax checkpoints
and exact resume -- so this is also the quickest end-to-end check of `orchestra train`.

Why these numbers: one turn of at most 2 new tokens (a whole call is one piece of the toy
vocabulary, then the end of turn), 16 tasks x 16 episodes per step and one optimizer step over
all 256 samples at lr 1e-2 (the learning-sanity test's setting); no KL, no weight decay, and no
filters (a turn that calls nothing is the commonest sample and carries the signal that not
calling is bad). Smaller runs for tests: --config.rollout.prompts_per_step=4
--config.rollout.group_size=4 --config.train.steps=3.
"""

from __future__ import annotations

import ml_collections
from base import base_config


def get_config() -> ml_collections.ConfigDict:
    config = base_config()
    config.model.preset = "tiny"
    # Sizes of the toy policy; read by the loop on top of the preset (vocab from the tokenizer).
    config.model.overrides = ml_collections.ConfigDict(dict(
        num_layers=2, hidden_size=64, intermediate_size=128, num_heads=4, num_kv_heads=2,
        head_dim=16))
    config.mesh.shape = (1, 1, 1)

    config.rollout.prompts_per_step = 16
    config.rollout.group_size = 16
    config.rollout.max_turns = 1
    config.rollout.max_prompt_tokens = 270
    config.rollout.max_new_tokens = 2
    config.rollout.temperature = 1.0
    config.rollout.episode_timeout_s = 60.0
    config.rollout.max_batch_size = 256

    config.reward.preference.tools = 0.0
    config.reward.preference.outcome = 1.0

    config.filter.min_group_std = None
    config.filter.drop_invalid_final_output = False
    config.filter.drop_malformed_turns = False

    config.loss.kl_coef = 0.0
    config.optimizer.lr = 1e-2
    config.optimizer.weight_decay = 0.0

    config.train.steps = 30
    config.train.mini_batch_size = 256
    config.train.ppo_epochs = 1
    config.train.checkpoint_every = 5
    config.train.keep_checkpoints = 2

    config.data.source = "toy_target_call"
    config.data.max_tasks = 16
    return config
