"""qa episodes whose expert is a real `orchestra serve` on 127.0.0.1, priced from its usage.

The expert behind the alias is the real SmolLM2-135M-Instruct answering over HTTP through the
project's own server; the tools, the executor, the retriever and the episode loop are the real
ones. Only the orchestrating policy is scripted (it is not what is under test here): turn 0
calls `search`, turn 1 calls `answer`, both with the served alias. A slow-marked twin runs
the same episodes against llama-cpp-python's server on the same GGUF when it is installed.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from orchestra_jax.envs.qa import QAEnvironment, QATask
from orchestra_jax.rollout.engine import run_episodes
from orchestra_jax.rollout.requests import GenerationRequest, GenerationResult, SamplingParams
from orchestra_jax.serve.server import ServerThread, load_chat_server
from orchestra_jax.tools.executor import ToolExecutor
from orchestra_jax.tools.experts import ExpertPool
from orchestra_jax.tools.local_search import LocalSearch
from orchestra_jax.tools.pricing import PricingCatalog
from orchestra_jax.tools.qa_tools import QATools

PRICE_IN, PRICE_OUT = 0.8, 2.0  # USD per million tokens, for the served alias
SERVED_MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    from orchestra_jax.assets import smollm2_gguf_path
    from orchestra_jax.tokenization import HFTokenizer
    from orchestra_jax.tokenization.gguf_vocab import read_gguf_vocab

    return HFTokenizer.from_gguf_vocab(read_gguf_vocab(smollm2_gguf_path()))


@pytest.fixture(scope="module")
def served():
    server = load_chat_server(SERVED_MODEL, scan_layers=True, default_max_tokens=48)
    with ServerThread(server) as url:
        yield server, url


class TwoTurnPolicy:
    """Search with `alias` while the qa prompt has no notes yet, then answer with `alias`."""

    def __init__(self, tokenizer, alias: str):
        self.tokenizer = tokenizer
        self.alias = alias

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        prompt = self.tokenizer.decode(list(request.prompt_ids))
        tool = "search" if "Notes so far: none." in prompt else "answer"
        body = json.dumps({"name": tool, "arguments": {"model": self.alias}})
        ids = [*self.tokenizer.encode(f"<tool_call>\n{body}\n</tool_call>"),
               self.tokenizer.eos_token_id]
        return GenerationResult(ids, [-0.5] * len(ids), "stop",
                                prompt_tokens=len(request.prompt_ids))


def _play_priced_episodes(url: str, model: str, tokenizer, tmp_path, episodes: int = 4):
    """qa episodes (search, then answer) whose alias is the endpoint at `url`; its records."""
    corpus = tmp_path / "corpus.jsonl"
    docs = [("d1", "France", "Paris is the capital and largest city of France."),
            ("d2", "Germany", "Berlin is the capital of Germany."),
            ("d3", "Italy", "Rome is the capital of Italy.")]
    corpus.write_text("".join(json.dumps({"id": i, "title": t, "text": x}) + "\n"
                              for i, t, x in docs))
    pool = ExpertPool.from_config(
        {"local": {"endpoint": url, "model": model,
                   "price": {"input_usd_per_mtok": PRICE_IN, "output_usd_per_mtok": PRICE_OUT}}},
        PricingCatalog.load(),
    )
    tools = QATools(pool, LocalSearch(corpus, cache_dir=tmp_path / "index"),
                    expert_max_tokens=48)
    task = QATask(id="capital", question="What is the capital of France?", answer="Paris")

    async def play():
        try:
            return await run_episodes(
                [(QAEnvironment(tools), task) for _ in range(episodes)],
                generator=TwoTurnPolicy(tokenizer, "local"), tokenizer=tokenizer,
                executor=ToolExecutor(max_concurrency=8, timeout_s=120),
                sampling=SamplingParams(max_new_tokens=64), max_turns=4, timeout_s=300,
            )
        finally:
            await pool.aclose()

    trajectories = asyncio.run(play())
    assert [t.termination for t in trajectories] == ["answered"] * episodes, [
        t.error for t in trajectories]
    records = [r for t in trajectories for r in t.records]
    assert sorted(r.tool for r in records) == ["answer"] * episodes + ["search"] * episodes
    assert all(r.error_kind is None and r.alias == "local" and r.model == model
               for r in records)
    assert all(r.tokens_in > 0 and r.tokens_out > 0 and r.latency_s > 0 for r in records)
    for record in records:  # each call priced from the usage the server reported
        expected = (record.tokens_in * PRICE_IN + record.tokens_out * PRICE_OUT) / 1e6
        assert record.cost_usd == pytest.approx(expected, rel=1e-9)
    assert all(t.cost_usd == pytest.approx(sum(r.cost_usd for r in t.records))
               for t in trajectories)
    return records


def test_qa_episodes_with_our_served_expert_are_priced_from_its_real_usage(served, tmp_path):
    server, url = served
    before = dict(server.counters)
    records = _play_priced_episodes(url, SERVED_MODEL, server.tokenizer, tmp_path)
    # Every token the trajectories were billed for is a token the server counted, no more.
    assert sum(r.tokens_in for r in records) == (
        server.counters["prompt_tokens"] - before.get("prompt_tokens", 0))
    assert sum(r.tokens_out for r in records) == (
        server.counters["completion_tokens"] - before.get("completion_tokens", 0))


@pytest.mark.slow
def test_qa_episodes_with_a_llama_cpp_expert_are_priced_from_its_real_usage(
        llama_server, smollm2_tokenizer, tmp_path):
    _play_priced_episodes(llama_server, "smollm2", smollm2_tokenizer, tmp_path)
