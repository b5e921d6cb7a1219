"""GRPO learns: a random tiny policy is taught to call the target tool, from reward alone.

The toy world: the prompt offers four tools and the reward is 1 when the policy's turn calls
`target`. Every part is the project's own and real -- episodes through the batcher and the
jitted sampler, the Hermes parser, the ToolOrchestra reward, GRPO advantages, the packed batch,
the jitted update step, the sampler reading the new parameters (collocated). Only the
vocabulary is made for the toy: each tool's whole call text is one SentencePiece piece, so a
randomly initialised policy can emit a well-formed call at all (with probability ~1/V).
The run prints its per-step rewards and its time (about a minute on two CPU cores; the time
is reported, not asserted: speed is for benchmarks).
"""

from __future__ import annotations

import asyncio
import time

import jax.numpy as jnp
import numpy as np

from orchestra_jax.envs.toy import TOOL_NAMES, TOOLS, TargetCallEnv, call_text
from orchestra_jax.models import get_preset, init_decoder
from orchestra_jax.rewards import toolorchestra_reward
from orchestra_jax.rl import compute_advantages
from orchestra_jax.rl.batch import pack_sequences, put_batch
from orchestra_jax.rl.optimizer import make_optimizer
from orchestra_jax.rl.train_state import init_train_state, train_state_shardings
from orchestra_jax.rl.update_step import UpdateConfig, make_update_step
from orchestra_jax.rollout.batcher import Batcher
from orchestra_jax.rollout.engine import run_episodes
from orchestra_jax.rollout.requests import SamplingParams
from orchestra_jax.rollout.sampler import Sampler
from orchestra_jax.sharding import single_device_mesh
from orchestra_jax.tokenization import (
    CHATML_TOOLS_TEMPLATE,
    render_chat_template,
    train_sentencepiece,
)
from orchestra_jax.tools.executor import ToolExecutor

PROMPTS, GROUP = 16, 16


def test_grpo_lifts_the_reward_for_calling_the_target_tool(tmp_path, capsys):
    start = time.perf_counter()
    # The vocabulary is trained on the prompt itself, so that the prompt is short.
    prompt = render_chat_template(CHATML_TOOLS_TEMPLATE, TargetCallEnv().messages(),
                                  tools=TOOLS, add_generation_prompt=True)
    corpus = [prompt] * 20
    tokenizer = train_sentencepiece(corpus, tmp_path / "sp", vocab_size=1000,
                                    extra_special_tokens=[call_text(n) for n in TOOL_NAMES])
    assert len(tokenizer.encode(call_text("target"))) == 1
    assert len(tokenizer.encode(prompt)) <= 270  # the four tool schemas take most of it
    config = get_preset("tiny", vocab_size=tokenizer.vocab_size, num_layers=2, hidden_size=64,
                        intermediate_size=128, num_heads=4, num_kv_heads=2, head_dim=16,
                        dtype="float32", param_dtype="float32")
    mesh = single_device_mesh()
    model = init_decoder(config, seed=0)
    optimizer = make_optimizer(1e-2, weight_decay=0.0, grad_clip=1.0)
    graphdef, state = init_train_state(model, optimizer, mesh, reference=False)
    update = make_update_step(graphdef, UpdateConfig(kl_coef=0.0), mesh, None,
                              train_state_shardings(state), optimizer=optimizer)
    sampler = Sampler(model, mesh, pad_id=tokenizer.pad_token_id,
                      stop_token_ids=tokenizer.stop_token_ids)
    sampler.update_params(state.params, version=0)
    batcher = Batcher(sampler, max_batch_size=PROMPTS * GROUP)
    group_ids = np.repeat(np.arange(PROMPTS), GROUP)
    preference = jnp.asarray([0.0, 1.0, 0.0, 0.0])  # [tool, outcome, cost, latency]

    mean_rewards = []
    for step in range(50):
        trajectories = asyncio.run(run_episodes(
            [(TargetCallEnv(), {"id": f"p{i // GROUP}"}) for i in range(PROMPTS * GROUP)],
            generator=batcher, tokenizer=tokenizer, executor=ToolExecutor(),
            sampling=SamplingParams(max_new_tokens=2, temperature=1.0, seed=step),
            max_turns=1, timeout_s=60))
        assert {t.termination for t in trajectories} == {"answered"}
        outcome = jnp.asarray([t.outcome for t in trajectories], jnp.float32)
        n = outcome.shape[0]
        rewards = toolorchestra_reward(jnp.zeros((n, 1)), outcome, jnp.zeros(n), jnp.zeros(n),
                                       preference, jnp.asarray(group_ids))
        mean_rewards.append(float(outcome.mean()))
        if mean_rewards[-1] >= 0.9 and len(mean_rewards) >= 3 and min(mean_rewards[-3:]) >= 0.9:
            break
        advantages = compute_advantages("grpo", rewards, group_size=GROUP)
        sequences = [t.sequences()[0] for t in trajectories]
        batch = pack_sequences(sequences,
                               np.asarray(advantages), pad_id=tokenizer.pad_token_id,
                               buckets=(272,))
        state, _ = update(state, put_batch(batch, mesh))
        sampler.update_params(state.params, version=step + 1)
    elapsed = time.perf_counter() - start
    with capsys.disabled():
        print(f"\nmean reward per step: {' '.join(f'{r:.2f}' for r in mean_rewards)} "
              f"({len(mean_rewards)} steps, {elapsed:.0f} s)")
    assert mean_rewards[0] <= 0.1
    assert min(mean_rewards[-3:]) >= 0.9, mean_rewards
