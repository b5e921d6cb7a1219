"""The rollout sampler against the model's own full forward: tokens, log-probs, stops, buckets."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from orchestra_jax.models import get_preset, init_decoder
from orchestra_jax.models.sharded import sharded_init
from orchestra_jax.rollout.requests import SamplingParams
from orchestra_jax.rollout.sampler import Sampler, SamplerBuckets
from orchestra_jax.sharding import make_mesh, single_device_mesh

CONFIG = get_preset("tiny", vocab_size=512, num_layers=2, hidden_size=64, intermediate_size=128,
                    num_heads=4, num_kv_heads=2, head_dim=16, dtype="float32",
                    param_dtype="float32")
PAD = 0


@pytest.fixture(scope="module")
def model():
    return init_decoder(CONFIG, seed=7)


@pytest.fixture(scope="module")
def sampler(model):
    return Sampler(model, single_device_mesh(), pad_id=PAD)


def _prompts(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(1, CONFIG.vocab_size, n).tolist() for n in lengths]


@functools.cache
def _jitted_forward(model):
    graphdef, state = nnx.split(model)
    return jax.jit(lambda ids: nnx.merge(graphdef, state)(ids).logits)


def _full_log_probs(model, tokens, temperature=1.0):
    """log softmax(logits / T) of the full forward (no cache) over one unpadded sequence."""
    logits = np.asarray(_jitted_forward(model)(jnp.asarray([tokens]))[0], np.float64)
    logits = logits / temperature
    return logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)


def test_greedy_equals_stepwise_argmax_of_the_full_forward(model, sampler):
    prompts = _prompts([3, 9, 20, 1])
    results = sampler.sample(prompts, SamplingParams(max_new_tokens=10, temperature=0.0))
    for prompt, result in zip(prompts, results, strict=True):
        assert len(result.token_ids) == 10 and result.finish_reason == "length"
        # The causal forward of the final sequence holds the logits of every prefix: the
        # argmax after prompt + first i tokens must be token i.
        logits = _full_log_probs(model, prompt + result.token_ids)
        positions = len(prompt) - 1 + np.arange(10)
        assert result.token_ids == np.argmax(logits[positions], axis=-1).tolist()


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(max_new_tokens=12, temperature=1.0, seed=1),
        SamplingParams(max_new_tokens=12, temperature=0.7, top_k=20, seed=2),
        SamplingParams(max_new_tokens=12, temperature=1.3, top_p=0.8, seed=3),
        SamplingParams(max_new_tokens=12, temperature=0.0),
    ],
    ids=["t1", "t0.7-topk", "t1.3-topp", "greedy"],
)
def test_log_probs_equal_the_models_recomputed_log_probs(model, sampler, params):
    prompts = _prompts([5, 17, 2], seed=4)
    results = sampler.sample(prompts, params)
    temperature = params.temperature or 1.0  # greedy rows report log-probs at T = 1
    for prompt, result in zip(prompts, results, strict=True):
        log_probs = _full_log_probs(model, prompt + result.token_ids, temperature)
        positions = len(prompt) - 1 + np.arange(len(result.token_ids))
        recomputed = log_probs[positions, result.token_ids]
        np.testing.assert_allclose(result.logprobs, recomputed, atol=1e-4)


def test_top_k_and_top_p_restrict_the_sampled_tokens(model, sampler):
    prompt = _prompts([6], seed=5)[0]
    many = [prompt] * 8
    for params, allowed in [(SamplingParams(max_new_tokens=1, top_k=3), 3),
                            (SamplingParams(max_new_tokens=1, top_p=1e-6), 1)]:
        seen = set()
        for seed in range(6):
            rows = [SamplingParams(**{**params.__dict__, "seed": seed * 8 + i}) for i in range(8)]
            seen.update(r.token_ids[0] for r in sampler.sample(many, rows))
        logits = _full_log_probs(model, prompt)[-1]
        top = set(np.argsort(-logits)[:allowed].tolist())
        assert seen <= top and len(seen) >= 1
    # Top-k of 1 and a vanishing top-p are greedy whatever the temperature.
    greedy = sampler.sample([prompt], SamplingParams(max_new_tokens=8, temperature=0.0))[0]
    for params in (SamplingParams(max_new_tokens=8, temperature=2.0, top_k=1, seed=9),
                   SamplingParams(max_new_tokens=8, temperature=2.0, top_p=1e-9, seed=9)):
        assert sampler.sample([prompt], params)[0].token_ids == greedy.token_ids


def test_rows_stop_on_their_own_stop_tokens_sequences_and_lengths(sampler):
    prompts = _prompts([4, 7, 11, 3], seed=6)
    free = sampler.sample(prompts, SamplingParams(max_new_tokens=16, temperature=0.0))
    row_params = [
        SamplingParams(max_new_tokens=16, temperature=0.0,
                       stop_token_ids=(free[0].token_ids[3],)),
        SamplingParams(max_new_tokens=16, temperature=0.0,
                       stop_sequences=(tuple(free[1].token_ids[4:6]),)),
        SamplingParams(max_new_tokens=5, temperature=0.0),
        SamplingParams(max_new_tokens=16, temperature=0.0),
    ]
    stopped = sampler.sample(prompts, row_params)
    first_at = free[0].token_ids.index(free[0].token_ids[3])
    assert stopped[0].token_ids == free[0].token_ids[: first_at + 1]
    assert stopped[0].finish_reason == "stop"
    seq = free[1].token_ids
    end = next(i + 2 for i in range(len(seq) - 1) if seq[i:i + 2] == seq[4:6])
    assert stopped[1].token_ids == seq[:end] and stopped[1].finish_reason == "stop"
    assert stopped[2].token_ids == free[2].token_ids[:5] and stopped[2].finish_reason == "length"
    assert stopped[3].token_ids == free[3].token_ids and stopped[3].finish_reason == "length"


def test_the_decode_loop_ends_when_every_row_is_done(sampler):
    prompts = _prompts([5, 8], seed=8)
    free = sampler.sample(prompts, SamplingParams(max_new_tokens=60, temperature=0.0))
    stops = [SamplingParams(max_new_tokens=60, temperature=0.0,
                            stop_token_ids=(r.token_ids[2],)) for r in free]
    results = sampler.sample(prompts, stops)
    longest = max(len(r.token_ids) for r in results)
    assert longest <= 3
    assert sampler.last_steps == longest  # not the 60 asked for, nor the 64 of the bucket


def test_a_seeded_request_samples_the_same_tokens_in_any_batch(sampler):
    prompt = _prompts([9], seed=10)[0]
    params = SamplingParams(max_new_tokens=12, temperature=1.0, seed=1234)
    alone = sampler.sample([prompt], params)[0]
    others = _prompts([3, 30, 14], seed=11)
    in_batch = sampler.sample([*others, prompt], [SamplingParams(max_new_tokens=20)] * 3
                              + [params])[3]
    assert alone.token_ids == in_batch.token_ids
    np.testing.assert_allclose(alone.logprobs, in_batch.logprobs, atol=1e-5)
    # Seeds past 32 bits stay distinct (jax keys hold 32 bits; the rest is folded in).
    draws = {tuple(sampler.sample([prompt], SamplingParams(max_new_tokens=12, seed=s))[0]
                   .token_ids) for s in (1234, 1234 + 2**32, 1234 + 2**40)}
    assert len(draws) == 3


def test_a_hundred_calls_of_mixed_lengths_compile_a_handful_of_programs(model):
    sampler = Sampler(model, single_device_mesh(), pad_id=PAD)
    rng = np.random.default_rng(12)
    for _ in range(100):
        batch = int(rng.integers(1, 9))
        prompts = _prompts(rng.integers(1, 121, batch).tolist(), seed=int(rng.integers(1e6)))
        sampler.sample(prompts, SamplingParams(max_new_tokens=int(rng.integers(1, 61)),
                                               temperature=1.0))
    # batch {1, 8} x prompt {64, 128} x new tokens {64}
    assert sampler.compile_count() <= 4


def test_bad_requests_are_clear_errors(sampler):
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        sampler.sample([[1, 2], []], SamplingParams())
    with pytest.raises(ValueError, match="context"):
        sampler.sample([[1] * 10], SamplingParams(max_new_tokens=CONFIG.max_position_embeddings))
    with pytest.raises(ValueError, match="2 SamplingParams for 1 prompts"):
        sampler.sample([[1]], [SamplingParams(), SamplingParams()])
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0.0)
    small = Sampler(init_decoder(CONFIG), single_device_mesh(),
                    buckets=SamplerBuckets(batch_sizes=(1, 2)))
    with pytest.raises(ValueError, match="batch size 3 exceeds the largest bucket 2"):
        small.sample([[1], [2], [3]], SamplingParams(max_new_tokens=1))


def test_update_params_takes_effect_and_stamps_the_version(model, sampler):
    prompt = _prompts([6], seed=13)[0]
    params = SamplingParams(max_new_tokens=6, temperature=0.0)
    before = sampler.sample([prompt], params)[0]
    other = Sampler(init_decoder(CONFIG, seed=99), single_device_mesh())
    sampler.update_params(other._state, version=5)
    try:
        after = sampler.sample([prompt], params)[0]
        assert after.params_version == 5
        reference = other.sample([prompt], params)[0]
        assert after.token_ids == reference.token_ids
        np.testing.assert_allclose(after.logprobs, reference.logprobs, atol=1e-6)
        assert not np.allclose(after.logprobs, before.logprobs, atol=1e-3)
    finally:
        sampler.update_params(nnx.split(model)[1], version=0)


def test_sharded_sampler_matches_one_device():
    assert len(jax.devices()) >= 8, "tests/conftest.py sets up 8 fake CPU devices"
    config = CONFIG.replace(num_kv_heads=4)
    mesh = make_mesh((2, 2, 2))
    sharded = Sampler(sharded_init(config, mesh, seed=3), mesh, pad_id=PAD)
    single = Sampler(init_decoder(config, seed=3), single_device_mesh(), pad_id=PAD)
    prompts = _prompts([4, 13, 7], seed=14)
    params = [SamplingParams(max_new_tokens=10, temperature=0.0),
              SamplingParams(max_new_tokens=10, temperature=1.0, seed=5),
              SamplingParams(max_new_tokens=10, temperature=0.9, top_k=8, seed=6)]
    for a, b in zip(sharded.sample(prompts, params), single.sample(prompts, params), strict=True):
        assert a.token_ids == b.token_ids
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)
    q_proj = sharded._state["layers"][0]["attention"]["q_proj"].get_value()
    assert q_proj.sharding.spec == jax.P("fsdp", "tensor", None)


def test_the_sampler_and_generate_tokens_run_one_engine(model, sampler):
    """`LanguageModel.generate`'s path (models.generation) and the rollout sampler decode alike."""
    from orchestra_jax.models import generate_tokens
    from orchestra_jax.models.sampling import DecodeEngine

    assert isinstance(sampler.engine, DecodeEngine)
    prompts = _prompts([3, 12, 40], seed=15)
    results = sampler.sample(prompts, SamplingParams(max_new_tokens=9, temperature=0.0))
    rows = generate_tokens(model, single_device_mesh(), prompts, 9, pad_id=PAD)
    assert rows == [r.token_ids for r in results]
