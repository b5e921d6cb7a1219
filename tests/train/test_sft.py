"""The format-only warm start: scripted random valid calls through the real episode loop, then
cross-entropy on them, give a policy that writes well-formed calls without preferring a tool.

The vocabulary here has no single-piece calls (unlike the learning-sanity toy), so a call is a
multi-token string that the random policy never writes and the warm-started one almost always
does. Everything runs for real: env, executor, parser, sampler, batcher, the jitted step.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections import Counter

import numpy as np

from orchestra_jax.envs.toy import TOOL_NAMES, TOOLS, TargetCallEnv
from orchestra_jax.models import get_preset, init_decoder
from orchestra_jax.rollout.batcher import Batcher
from orchestra_jax.rollout.engine import grouped_episodes, run_episodes
from orchestra_jax.rollout.requests import SamplingParams
from orchestra_jax.rollout.sampler import Sampler
from orchestra_jax.rollout.scripted import random_valid_call, scripted_episodes, tool_call_text
from orchestra_jax.rollout.trajectory import TokenSequence
from orchestra_jax.sharding import single_device_mesh
from orchestra_jax.tokenization import (
    CHATML_TOOLS_TEMPLATE,
    parse_tool_calls,
    render_chat_template,
    train_sentencepiece,
)
from orchestra_jax.tools.executor import ToolExecutor
from orchestra_jax.train.sft import (
    FORMAT_ENDINGS,
    SFTConfig,
    language_model_sequences,
    sequences_of,
    supervised_warm_start,
)


def _tokenizer(tmp_path):
    prompt = render_chat_template(CHATML_TOOLS_TEMPLATE, TargetCallEnv().messages(),
                                  tools=TOOLS, add_generation_prompt=True)
    calls = [tool_call_text(n, {}) for n in TOOL_NAMES]
    return train_sentencepiece([prompt] * 10 + calls * 10, tmp_path / "sp", vocab_size=600)


def test_random_valid_call_draws_offered_tools_and_enum_arguments():
    tools = [{"type": "function", "function": {
        "name": "answer", "parameters": {"type": "object", "required": ["model"],
                                         "properties": {"model": {"enum": ["a", "b"]}}}}},
             {"type": "function", "function": {"name": "noop", "parameters": {}}}]
    rng = random.Random(0)
    seen = Counter()
    for _ in range(400):
        text = random_valid_call(tools, rng)
        calls, errors = parse_tool_calls(text, tools=tools)
        assert not errors and len(calls) == 1
        seen[(calls[0].name, calls[0].arguments.get("model"))] += 1
    assert set(seen) == {("answer", "a"), ("answer", "b"), ("noop", None)}
    assert 150 < seen[("noop", None)] < 250  # tools uniform, then aliases uniform


def test_scripted_episodes_run_the_env_and_mask_only_the_scripted_tokens(tmp_path):
    tokenizer = _tokenizer(tmp_path)
    trajectories = asyncio.run(scripted_episodes(
        [{"id": i} for i in range(40)], TargetCallEnv, tokenizer=tokenizer,
        executor=ToolExecutor(), seed=3, max_turns=2))
    assert all(t.termination == "answered" and not t.malformed_turns for t in trajectories)
    named = Counter(t.samples[0].calls[0].name for t in trajectories)
    assert set(named) == set(TOOL_NAMES)
    # The env scored the scripted call: outcome 1 exactly when `target` was drawn.
    assert sum(t.outcome for t in trajectories) == named["target"]
    seq = trajectories[0].sequences()[0]
    completion = trajectories[0].samples[0].completion_ids
    assert int(seq.loss_mask.sum()) == len(completion)
    assert list(seq.token_ids[-len(completion):]) == completion
    # A whole turn, as the sampler returns one: the call, then the end-of-turn token.
    assert completion[-1] == tokenizer.eos_token_id and len(completion) > 1
    assert tokenizer.decode([tokenizer.eos_token_id]) not in trajectories[0].samples[0].text
    again = asyncio.run(scripted_episodes(
        [{"id": i} for i in range(40)], TargetCallEnv, tokenizer=tokenizer,
        executor=ToolExecutor(), seed=3, max_turns=2))
    assert [t.samples[0].text for t in again] == [t.samples[0].text for t in trajectories]


def test_format_data_keeps_episodes_that_ran_out_of_turns(tmp_path):
    """A format teacher shows every episode whose turns are all well-formed calls: dropping
    those that ran out of turns would keep only routes that happened to answer early, a
    routing bias the warm start must not teach. Timeouts and errors stay out."""
    tokenizer = _tokenizer(tmp_path)
    (played,) = asyncio.run(scripted_episodes(
        [{"id": 0}], TargetCallEnv, tokenizer=tokenizer, executor=ToolExecutor(), seed=0,
        max_turns=1))
    kept = {ending: len(sequences_of([dataclasses.replace(played, termination=ending)]))
            for ending in ("answered", "max_turns", "timeout", "error")}
    assert kept == {"answered": 1, "max_turns": 1, "timeout": 0, "error": 0}
    assert set(FORMAT_ENDINGS) == {"answered", "max_turns"}


def _sampled_turns(model, tokenizer, mesh, episodes: int, max_new_tokens: int = 40) -> list:
    sampler = Sampler(model, mesh, pad_id=tokenizer.pad_token_id,
                      stop_token_ids=tokenizer.stop_token_ids, seed=0)
    specs = grouped_episodes([{"id": 0}], TargetCallEnv, episodes)
    trajectories = asyncio.run(run_episodes(
        specs, generator=Batcher(sampler, max_batch_size=episodes), tokenizer=tokenizer,
        executor=ToolExecutor(), sampling=SamplingParams(max_new_tokens=max_new_tokens, seed=1),
        max_turns=1, timeout_s=120.0))
    return [t.samples[0] for t in trajectories]


def _sampled_calls(model, tokenizer, mesh, episodes: int) -> list[str | None]:
    return [turn.calls[0].name if turn.calls else None
            for turn in _sampled_turns(model, tokenizer, mesh, episodes)]


def test_warm_start_teaches_the_call_format_and_no_routing(tmp_path):
    tokenizer = _tokenizer(tmp_path)
    mesh = single_device_mesh()
    config = get_preset("tiny", vocab_size=tokenizer.vocab_size, num_layers=2, hidden_size=64,
                        intermediate_size=128, num_heads=4, num_kv_heads=2, head_dim=16)
    model = init_decoder(config, seed=0)
    before = _sampled_calls(model, tokenizer, mesh, 32)
    assert sum(c is not None for c in before) == 0  # a random policy never writes a call

    trajectories = asyncio.run(scripted_episodes(
        [{"id": i} for i in range(64)], TargetCallEnv, tokenizer=tokenizer,
        executor=ToolExecutor(), seed=0, max_turns=1))
    sequences = sequences_of(trajectories)
    assert len(sequences) == 64
    from flax import nnx

    graphdef, params = nnx.split(model)
    new_params, history = supervised_warm_start(
        graphdef, params, sequences, SFTConfig(steps=60, batch_size=16, lr=3e-3, seed=0),
        mesh=mesh, rules=None, seq_len=max(len(s) for s in sequences) + 8,
        batch_multiple=1, pad_id=tokenizer.pad_token_id)
    assert history[-1]["loss"] < 0.25 * history[0]["loss"]
    # The caller's params are untouched (the step trained its own copy).
    for (_, a), (_, b) in zip(nnx.to_flat_state(params), nnx.to_flat_state(nnx.split(model)[1]),
                              strict=True):
        np.testing.assert_array_equal(np.asarray(a.get_value()), np.asarray(b.get_value()))

    after = _sampled_calls(nnx.merge(graphdef, new_params), tokenizer, mesh, 64)
    valid = [c for c in after if c is not None]
    assert len(valid) >= 0.9 * len(after), after
    counts = Counter(valid)
    # No routing was taught: every tool is still drawn, none dominates.
    assert set(counts) == set(TOOL_NAMES) and max(counts.values()) <= 0.5 * len(valid), counts
    # It also learned to end its turn after the call: with room for the call and one more
    # token (what the toolworld recipe allows), the turns stay clean.
    tight = _sampled_turns(nnx.merge(graphdef, new_params), tokenizer, mesh, 64,
                           max_new_tokens=len(trajectories[0].samples[0].completion_ids))
    clean = [t for t in tight if t.calls and t.finish_reason == "stop" and not t.format_errors]
    assert len(clean) >= 0.9 * len(tight), [(t.text, t.finish_reason) for t in tight]


def test_language_model_sequences_put_every_token_but_the_first_in_the_loss():
    ids = np.arange(10, 16)
    mask = np.asarray([0, 0, 0, 0, 1, 1], np.int32)
    logprobs = np.zeros(6, np.float32)
    (new,) = language_model_sequences([TokenSequence(ids, mask, logprobs)])
    assert isinstance(new, TokenSequence)
    np.testing.assert_array_equal(new.token_ids, ids)
    np.testing.assert_array_equal(new.loss_mask, [0, 1, 1, 1, 1, 1])
    assert new.loss_mask.dtype == mask.dtype and new.logprobs is logprobs
    np.testing.assert_array_equal(mask, [0, 0, 0, 0, 1, 1])  # the input is not changed
