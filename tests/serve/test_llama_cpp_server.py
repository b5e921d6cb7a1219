"""Our OpenAI client against a second, independent real server: llama.cpp's, on the same GGUF.

`orchestra serve` and `OpenAIChatClient` were written together, so agreeing with each other
proves little; llama.cpp's server is the reference implementation many expert endpoints run.
Slow (model load, a subprocess) and skipped unless `llama-cpp-python[server]` is installed;
the `llama_server` fixture lives in tests/conftest.py.
"""

from __future__ import annotations

import asyncio

import pytest

pytestmark = pytest.mark.slow


def test_openai_chat_client_reads_real_usage_from_llama_cpp(llama_server):
    """The project's client gets a reply and the server's real token usage (what gets priced)."""
    from orchestra_jax.tools.openai_client import OpenAIChatClient

    async def ask():
        client = OpenAIChatClient(llama_server, "smollm2", timeout_s=120)
        try:
            return await client.complete(
                [{"role": "user", "content": "What is the capital of France?"}], max_tokens=24)
        finally:
            await client.aclose()

    reply = asyncio.run(ask())
    assert reply.text.strip()
    assert reply.tokens_in > 0
    assert reply.tokens_out > 0
    assert reply.latency_s > 0
