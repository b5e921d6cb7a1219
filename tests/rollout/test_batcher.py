"""The batcher: concurrent requests become few sampler batches; one bad request fails alone."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from flax import nnx

from orchestra_jax.models import get_preset, init_decoder
from orchestra_jax.rollout.batcher import Batcher
from orchestra_jax.rollout.requests import GenerationRequest, SamplingParams
from orchestra_jax.rollout.sampler import Sampler
from orchestra_jax.sharding import single_device_mesh

CONFIG = get_preset("tiny", vocab_size=512, num_layers=2, hidden_size=64, intermediate_size=128,
                    num_heads=4, num_kv_heads=2, head_dim=16, max_position_embeddings=256)
GREEDY = SamplingParams(max_new_tokens=8, temperature=0.0)


@pytest.fixture(scope="module")
def sampler():
    sampler = Sampler(init_decoder(CONFIG, seed=1), single_device_mesh())
    sampler.sample([[1]], GREEDY)  # compile outside the timed tests
    sampler.sample([[1]] * 9, GREEDY)
    return sampler


def _prompts(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(1, CONFIG.vocab_size, int(rng.integers(2, 40))).tolist()
            for _ in range(n)]


def test_concurrent_requests_share_batches_and_match_direct_sampling(sampler):
    prompts = _prompts(12)

    async def main():
        batcher = Batcher(sampler, max_batch_size=8)
        results = await asyncio.gather(
            *(batcher.generate(GenerationRequest(p, GREEDY)) for p in prompts))
        await batcher.aclose()
        return results, batcher.stats()

    results, stats = asyncio.run(main())
    direct = sampler.sample(prompts, GREEDY)
    assert [r.token_ids for r in results] == [d.token_ids for d in direct]
    assert stats["rows"] == 12 and stats["flushes"] == 2 and stats["max_rows"] == 8


def test_a_stream_of_arrivals_is_gathered_into_one_batch(sampler):
    """Requests 2 ms apart keep the batch open (quiet gap 5 ms) until the 50 ms cap."""

    async def main():
        batcher = Batcher(sampler, max_batch_size=32, max_wait_s=0.005, max_gather_s=0.05)

        async def arrive(i, prompt):
            await asyncio.sleep(0.002 * i)
            return await batcher.generate(GenerationRequest(prompt, GREEDY))

        await asyncio.gather(*(arrive(i, p) for i, p in enumerate(_prompts(10, seed=1))))
        await batcher.aclose()
        return batcher.stats()

    stats = asyncio.run(main())
    assert stats["flushes"] == 1 and stats["rows"] == 10


def test_a_request_longer_than_the_context_fails_alone(sampler):
    async def main():
        batcher = Batcher(sampler)
        too_long = GenerationRequest([1] * 250, SamplingParams(max_new_tokens=10))
        outcomes = await asyncio.gather(
            batcher.generate(GenerationRequest([5, 6], GREEDY)),
            batcher.generate(too_long),
            return_exceptions=True,
        )
        await batcher.aclose()
        return outcomes

    ok, error = asyncio.run(main())
    assert len(ok.token_ids) == 8
    assert isinstance(error, ValueError) and "context of 256 tokens" in str(error)


def test_a_failed_batch_reaches_its_requests_and_the_batcher_keeps_serving(sampler):
    too_many_stops = SamplingParams(max_new_tokens=8,
                                    stop_sequences=tuple((i,) for i in range(1, 12)))

    async def main():
        batcher = Batcher(sampler)
        failed = await asyncio.gather(
            batcher.generate(GenerationRequest([3], too_many_stops)), return_exceptions=True)
        after = await batcher.generate(GenerationRequest([3, 4], GREEDY))
        await batcher.aclose()
        return failed[0], after, batcher.stats()

    error, after, stats = asyncio.run(main())
    assert isinstance(error, ValueError) and "stop sequences" in str(error)
    assert len(after.token_ids) == 8 and stats["failed_batches"] == 1


def test_a_cancelled_caller_leaves_the_others_alone(sampler):
    async def main():
        batcher = Batcher(sampler, max_wait_s=0.02, max_gather_s=0.05)
        leaving = asyncio.ensure_future(batcher.generate(GenerationRequest([7, 8], GREEDY)))
        staying = asyncio.ensure_future(batcher.generate(GenerationRequest([9, 10], GREEDY)))
        await asyncio.sleep(0)
        leaving.cancel()
        result = await staying
        await batcher.aclose()
        return leaving, result, batcher.stats()

    leaving, result, stats = asyncio.run(main())
    assert leaving.cancelled() and len(result.token_ids) == 8
    assert stats["rows"] == 1  # the cancelled request was not generated


def test_results_carry_the_params_version_that_produced_them(sampler):
    original = nnx.split(init_decoder(CONFIG, seed=1))[1]

    async def main():
        batcher = Batcher(sampler)
        before = await batcher.generate(GenerationRequest([1, 2], GREEDY))
        batcher.update_params(original, version=3)
        after = await batcher.generate(GenerationRequest([1, 2], GREEDY))
        await batcher.aclose()
        return before, after

    try:
        before, after = asyncio.run(main())
    finally:
        sampler.update_params(original, version=0)
    assert (before.params_version, after.params_version) == (0, 3)
    assert after.token_ids == before.token_ids  # the same weights under a new version


def test_closing_fails_waiting_requests_with_a_clear_error(sampler):
    async def main():
        batcher = Batcher(sampler, max_wait_s=0.5, max_gather_s=0.5)
        waiting = asyncio.ensure_future(batcher.generate(GenerationRequest([1], GREEDY)))
        await asyncio.sleep(0.01)
        await batcher.aclose()
        outcome = await asyncio.gather(waiting, return_exceptions=True)
        with pytest.raises(RuntimeError, match="closed"):
            await batcher.generate(GenerationRequest([1], GREEDY))
        return outcome[0]

    error = asyncio.run(main())
    assert isinstance(error, RuntimeError) and "closed" in str(error)
