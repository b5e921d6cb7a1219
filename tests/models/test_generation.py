"""`generate_tokens` / `LanguageModel.generate` on the one decode engine (models.sampling)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from orchestra_jax.models import generate_tokens, get_preset, init_decoder
from orchestra_jax.models import generation as generation_module
from orchestra_jax.models.sharded import sharded_init
from orchestra_jax.sharding import make_mesh, single_device_mesh

CONFIG = get_preset("tiny", vocab_size=384, num_layers=2, hidden_size=64, intermediate_size=128,
                    num_heads=4, num_kv_heads=2, head_dim=16, dtype="float32",
                    param_dtype="float32")


@pytest.fixture(scope="module")
def model():
    return init_decoder(CONFIG, seed=5)


def _prompts(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(1, CONFIG.vocab_size, n).tolist() for n in lengths]


def _greedy_by_full_forward(model, prompt, n):
    """Greedy continuation by re-running the full forward (no cache) for every token."""
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda ids: nnx.merge(graphdef, state)(ids).logits)
    tokens = list(prompt)
    for _ in range(n):
        tokens.append(int(jnp.argmax(forward(jnp.asarray([tokens]))[0, -1])))
    return tokens[len(prompt):]


def test_greedy_rows_of_a_padded_batch_equal_the_full_forward_argmax(model):
    prompts = _prompts([2, 11, 5], seed=1)
    rows = generate_tokens(model, single_device_mesh(), prompts, max_new_tokens=8)
    assert rows == [_greedy_by_full_forward(model, p, 8) for p in prompts]


def test_rows_stop_at_their_first_stop_token_and_keep_it(model):
    mesh = single_device_mesh()
    prompts = _prompts([4, 9], seed=2)
    free = generate_tokens(model, mesh, prompts, max_new_tokens=12)
    stop = free[0][3]
    stopped = generate_tokens(model, mesh, prompts, max_new_tokens=12, stop_token_ids=[stop])
    for row, full in zip(stopped, free, strict=True):
        end = full.index(stop) + 1 if stop in full else len(full)
        assert row == full[:end]


def test_sampling_is_reproducible_by_seed_and_rows_draw_apart(model):
    mesh = single_device_mesh()
    prompt = _prompts([6], seed=3)[0]
    same = [prompt] * 4
    first = generate_tokens(model, mesh, same, 16, temperature=1.0, seed=11)
    again = generate_tokens(model, mesh, same, 16, temperature=1.0, seed=11)
    other = generate_tokens(model, mesh, same, 16, temperature=1.0, seed=12)
    assert first == again
    assert first != other
    assert len({tuple(r) for r in first}) > 1  # identical prompts, different draws


def test_repeated_calls_reuse_one_compiled_program_and_follow_new_parameters(model):
    mesh = single_device_mesh()
    fresh = init_decoder(CONFIG, seed=21)
    prompts = _prompts([3, 7], seed=4)
    before = generation_module.decode_prompts(fresh, mesh, prompts, 6)
    engine, _ = generation_module._engine_for(fresh, mesh, {}, 0, ())
    compiled = engine.compile_count()  # the engine is shared by models of this structure
    assert generate_tokens(fresh, mesh, prompts, 6) == [before.row_tokens(i) for i in range(2)]
    assert engine.compile_count() == compiled
    # The parameters are read from the module at every call, not kept by the cached engine.
    nnx.update(fresh, nnx.state(init_decoder(CONFIG, seed=22)))
    after = generation_module.decode_prompts(fresh, mesh, prompts, 6)
    assert engine.compile_count() == compiled
    assert [after.row_tokens(i) for i in range(2)] == [
        _greedy_by_full_forward(fresh, p, 6) for p in prompts]
    assert not np.allclose(after.logprobs, before.logprobs, atol=1e-3)


def test_sharded_model_generates_what_one_device_generates():
    assert len(jax.devices()) >= 8, "tests/conftest.py sets up 8 fake CPU devices"
    config = CONFIG.replace(num_kv_heads=4)
    mesh = make_mesh((2, 2, 2))
    prompts = _prompts([4, 13, 7], seed=5)
    sharded = generate_tokens(sharded_init(config, mesh, seed=3), mesh, prompts, 8)
    single = generate_tokens(init_decoder(config, seed=3), single_device_mesh(), prompts, 8)
    assert sharded == single


def test_bad_arguments_are_clear_errors(model):
    mesh = single_device_mesh()
    with pytest.raises(ValueError, match="empty prompt"):
        generate_tokens(model, mesh, [[1], []], 4)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_tokens(model, mesh, [[1]], 0)
    with pytest.raises(ValueError, match="context"):
        generate_tokens(model, mesh, [[1] * 10], CONFIG.max_position_embeddings)
