"""A test recipe for `--config FILE:ARG` (ml_collections.config_flags / big_vision): the loader
passes the text after the colon to `get_config(arg)`; plain `--config FILE` calls
`get_config()`, which takes the default.

ARG is the number of toy tasks (`data.max_tasks`, default 2). The run is the smallest the
toy world allows: a 2-layer, 64-wide policy (the toy recipe's), one task of two one-turn
episodes per step, one step, no final evaluation, no TensorBoard -- so the CLI tests that
train with it spend their time on compilation only.
"""

from __future__ import annotations

import ml_collections

from orchestra_jax.train.schema import default_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = default_config()
    config.model.overrides = ml_collections.ConfigDict(dict(
        num_layers=2, hidden_size=64, intermediate_size=128, num_heads=4, num_kv_heads=2,
        head_dim=16))
    config.mesh.shape = (1, 1, 1)
    config.rollout.prompts_per_step = 1
    config.rollout.group_size = 2
    config.rollout.max_turns = 1
    config.rollout.max_prompt_tokens = 270
    config.rollout.max_new_tokens = 2
    config.rollout.max_batch_size = 2
    config.filter.min_group_std = None
    config.filter.drop_invalid_final_output = False
    config.filter.drop_malformed_turns = False
    config.optimizer.lr = 1e-2
    config.optimizer.weight_decay = 0.0
    config.train.steps = 1
    config.train.mini_batch_size = 2
    config.train.checkpoint_every = 1
    config.eval.final = False
    config.data.source = "toy_target_call"
    config.data.max_tasks = int(arg) if arg else 2
    config.logging.tensorboard = False
    return config
