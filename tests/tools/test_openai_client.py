"""OpenAIChatClient and ExpertPool against a real local chat-completions server.

The server (aiohttp.web on 127.0.0.1, a free port) speaks the OpenAI protocol and scripts its
behaviour by the requested model name: a normal reply with usage, HTTP 500, 429 with
Retry-After, a 400 echoing the request's Authorization header, a garbage body, a reply without
usage or choices, a slow reply, and a reset connection.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp import web

from orchestra_jax.tools.experts import ExpertPool
from orchestra_jax.tools.http_errors import MissingApiKeyError, parse_retry_after
from orchestra_jax.tools.openai_client import OpenAIChatClient
from orchestra_jax.tools.pricing import PricingCatalog
from orchestra_jax.tools.results import ToolError, ToolErrorKind

KEY_VAR = "ORCHESTRA_TEST_EXPERT_KEY"
SECRET = "sk-test-very-secret-4242"
MESSAGES = [{"role": "user", "content": "What is 2 + 2?"}]
PROMPT_TOKENS, COMPLETION_TOKENS = 1234, 567


class ChatServer:
    """A scripted OpenAI-compatible server; `requests` keeps what each call sent."""

    def __init__(self) -> None:
        self.requests: list[dict] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.text()
        body = json.loads(raw)
        self.requests.append(
            {
                "raw": raw,
                "body": body,
                "authorization": request.headers.get("Authorization"),
                "peer": request.transport.get_extra_info("peername") if request.transport else None,
            }
        )
        model = body["model"]
        if model == "server-error":
            return web.json_response({"error": {"message": "engine crashed"}}, status=500)
        if model == "rate-limited":
            return web.json_response(
                {"error": {"message": "slow down"}}, status=429, headers={"Retry-After": "7"}
            )
        if model == "echo-auth-400":  # a careless server that echoes the request's header
            return web.json_response(
                {"error": {"message": f"bad request from {request.headers.get('Authorization')}"}},
                status=400,
            )
        if model == "garbage":
            return web.Response(text="<html>502 proxy hiccup</html>", content_type="text/html")
        if model == "slow":
            await asyncio.sleep(3)
        if model == "reset":
            assert request.transport is not None
            request.transport.abort()  # drop the TCP connection without a reply
            await asyncio.sleep(0.1)
        reply = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "The answer is 4."},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": PROMPT_TOKENS,
                "completion_tokens": COMPLETION_TOKENS,
                "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
            },
        }
        if model == "no-usage":
            del reply["usage"]
        if model == "no-choices":
            reply["choices"] = []
        return web.json_response(reply)


@contextlib.asynccontextmanager
async def serve_chat() -> AsyncIterator[tuple[str, ChatServer]]:
    server = ChatServer()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", server.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)  # do not wait out the slow handler
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/v1", server
    finally:
        await runner.cleanup()


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def api_key(monkeypatch) -> str:
    monkeypatch.setenv(KEY_VAR, SECRET)
    return SECRET


async def _fail(model: str, *, timeout_s: float = 10.0, base_url: str | None = None) -> ToolError:
    """The ToolError of one call; its `elapsed_s` attribute is how long the call took."""
    async with serve_chat() as (url, _):
        client = OpenAIChatClient(base_url or url, model, api_key_env=KEY_VAR, timeout_s=timeout_s)
        started = time.perf_counter()
        try:
            with pytest.raises(ToolError) as info:
                await client.complete(MESSAGES)
        finally:
            await client.aclose()
    error = info.value
    error.elapsed_s = time.perf_counter() - started
    assert SECRET not in str(error) and SECRET not in error.message
    return error


def test_normal_reply_reports_the_servers_usage_and_sends_key_as_bearer(api_key):
    async def run():
        async with serve_chat() as (url, server):
            client = OpenAIChatClient(url, "qwen3-32b", api_key_env=KEY_VAR)
            completion = await client.complete(
                MESSAGES, max_tokens=64, temperature=0.5, hints={"gold": "SECRET-GOLD-4"}
            )
            await client.aclose()
            return completion, server.requests

    completion, requests = asyncio.run(run())
    assert completion.text == "The answer is 4."
    assert (completion.tokens_in, completion.tokens_out) == (PROMPT_TOKENS, COMPLETION_TOKENS)
    assert completion.finish_reason == "stop"
    assert completion.model == "qwen3-32b"
    assert 0 < completion.latency_s < 5
    (sent,) = requests
    assert sent["authorization"] == f"Bearer {SECRET}"
    assert sent["body"]["messages"] == MESSAGES
    assert (sent["body"]["max_tokens"], sent["body"]["temperature"]) == (64, 0.5)
    assert "SECRET-GOLD-4" not in sent["raw"] and "hints" not in sent["body"]  # never on the wire


def test_expert_cost_is_usage_times_catalog_price(api_key):
    catalog = PricingCatalog.load()

    async def run():
        async with serve_chat() as (url, _):
            pool = ExpertPool.from_config(
                {
                    "expert-1": {"endpoint": url, "model": "gpt-5", "api_key_env": KEY_VAR},
                    "cheap": {"endpoint": url, "model": "qwen3-8b"},
                },
                catalog,
            )
            results = [await pool[a].complete(MESSAGES) for a in ("expert-1", "cheap")]
            await pool.aclose()
            return results

    (gpt5, gpt5_cost), (_, cheap_cost) = asyncio.run(run())
    assert gpt5.model == "gpt-5"
    assert gpt5_cost == (PROMPT_TOKENS * 1.25 + COMPLETION_TOKENS * 10.0) / 1e6
    assert gpt5_cost == pytest.approx(0.0072125, rel=1e-12)
    assert cheap_cost == pytest.approx((PROMPT_TOKENS + COMPLETION_TOKENS) * 0.2 / 1e6, rel=1e-12)


def test_one_session_reuses_one_connection(api_key):
    async def run():
        async with serve_chat() as (url, server):
            client = OpenAIChatClient(url, "m")
            for _ in range(3):
                await client.complete(MESSAGES)
            await client.aclose()
            return server.requests

    peers = {r["peer"] for r in asyncio.run(run())}
    assert len(peers) == 1  # keep-alive: the same client socket served every call


@contextlib.contextmanager
def chat_server_in_thread() -> Iterator[str]:
    """The scripted server on its own loop in a thread, outliving the test's event loops."""
    loop = asyncio.new_event_loop()
    started: concurrent.futures.Future[str] = concurrent.futures.Future()
    stop = asyncio.Event()

    async def main():
        async with serve_chat() as (url, _):
            started.set_result(url)
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    try:
        yield started.result(timeout=10)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
        loop.close()


def test_client_survives_a_new_event_loop():
    with chat_server_in_thread() as url:
        client = OpenAIChatClient(url, "m")
        first = asyncio.run(client.complete(MESSAGES))
        # The first session belonged to a loop that is now closed: a new one must be made.
        second = asyncio.run(client.complete(MESSAGES))
        asyncio.run(client.aclose())
    assert first.text == second.text == "The answer is 4."


def test_http_500_is_a_retryable_server_error(api_key):
    error = asyncio.run(_fail("server-error"))
    assert error.kind == ToolErrorKind.SERVER_ERROR and error.retryable
    assert "HTTP 500" in error.message and "engine crashed" in error.message


def test_http_429_is_rate_limited_with_retry_after(api_key):
    error = asyncio.run(_fail("rate-limited"))
    assert error.kind == ToolErrorKind.RATE_LIMITED and error.retryable
    assert error.retry_after_s == 7.0


def test_other_4xx_is_a_client_error_and_the_echoed_key_is_redacted(api_key):
    error = asyncio.run(_fail("echo-auth-400"))
    assert error.kind == ToolErrorKind.CLIENT_ERROR and not error.retryable
    assert "Bearer ***" in error.message


@pytest.mark.parametrize("model", ["garbage", "no-usage", "no-choices"])
def test_malformed_replies_are_bad_responses(api_key, model):
    error = asyncio.run(_fail(model))
    assert error.kind == ToolErrorKind.BAD_RESPONSE and not error.retryable
    assert "chat endpoint http://127.0.0.1" in error.message  # names the endpoint


def test_slow_reply_is_a_timeout_not_a_hang(api_key):
    error = asyncio.run(_fail("slow", timeout_s=0.3))
    assert error.kind == ToolErrorKind.TIMEOUT and "0.3 s" in error.message
    assert error.elapsed_s < 2.0  # the server would have taken 3 s


def test_connection_refused_is_a_connection_error(api_key):
    error = asyncio.run(_fail("m", base_url=f"http://127.0.0.1:{closed_port()}/v1"))
    assert error.kind == ToolErrorKind.CONNECTION and error.retryable


def test_connection_reset_is_a_connection_error(api_key):
    error = asyncio.run(_fail("reset"))
    assert error.kind == ToolErrorKind.CONNECTION and error.retryable


def test_key_never_appears_in_repr(api_key):
    client = OpenAIChatClient("http://127.0.0.1:9/v1", "m", api_key_env=KEY_VAR)
    assert SECRET not in repr(client) and KEY_VAR in repr(client)


def test_missing_key_fails_at_construction_naming_the_variable(monkeypatch):
    monkeypatch.delenv(KEY_VAR, raising=False)
    with pytest.raises(MissingApiKeyError, match=KEY_VAR):
        OpenAIChatClient("http://127.0.0.1:9/v1", "m", api_key_env=KEY_VAR)
    with pytest.raises(MissingApiKeyError, match=KEY_VAR):
        ExpertPool.from_config(
            {"x": {"endpoint": "http://127.0.0.1:9/v1", "model": "gpt-5", "api_key_env": KEY_VAR}},
            PricingCatalog.load(),
        )


def test_bad_messages_are_rejected_before_any_request():
    async def run():
        async with serve_chat() as (url, server):
            client = OpenAIChatClient(url, "m")
            errors = []
            for messages in ([], "hi", [{"content": "no role"}], [{"role": "user", "content": 3}]):
                with pytest.raises(ToolError) as info:
                    await client.complete(messages)
                errors.append(info.value.kind)
            with pytest.raises(ToolError) as info:
                await client.complete(MESSAGES, max_tokens=0)
            errors.append(info.value.kind)
            await client.aclose()
            return errors, server.requests

    kinds, requests = asyncio.run(run())
    assert set(kinds) == {ToolErrorKind.INVALID_ARGUMENTS}
    assert requests == []


def test_bad_base_url_is_rejected_at_construction():
    with pytest.raises(ValueError, match="ftp://host"):
        OpenAIChatClient("ftp://host/v1", "m")


def test_extra_body_adds_fields_and_none_removes_them():
    async def run():
        async with serve_chat() as (url, server):
            client = OpenAIChatClient(
                url,
                "m",
                max_tokens_field="max_completion_tokens",
                extra_body={
                    "temperature": None,
                    "chat_template_kwargs": {"enable_thinking": False},
                },
            )
            await client.complete(MESSAGES, max_tokens=32)
            await client.aclose()
            return server.requests[0]["body"]

    body = asyncio.run(run())
    assert body["max_completion_tokens"] == 32 and "max_tokens" not in body
    assert "temperature" not in body
    assert body["chat_template_kwargs"] == {"enable_thinking": False}


def test_parse_retry_after_reads_seconds_and_http_dates():
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: go now


def test_pool_lookup_errors_name_the_alias_and_known_ones():
    catalog = PricingCatalog.load()
    pool = ExpertPool.from_config(
        {
            "b": {"endpoint": "http://127.0.0.1:9/v1", "model": "gpt-5"},
            "a": {
                "endpoint": "http://127.0.0.1:9/v1",
                "model": "qwen3-8b",
                "price": {"input_usd_per_mtok": 1.0, "output_usd_per_mtok": 2.0},
            },
        },
        catalog,
    )
    assert pool.aliases() == ["b", "a"]
    assert pool["a"].price.output_usd_per_mtok == 2.0  # the override beats the catalog
    with pytest.raises(KeyError, match=r"'c'.*known aliases: b, a"):
        pool["c"]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"endpoint": "http://127.0.0.1:9/v1", "model": "gtp-5"}, "'x'.*gtp-5.*gpt-5"),
        ({"endpoint": "http://127.0.0.1:9/v1", "model": "gpt-5", "modle": 1}, "'x'.*modle"),
        ({"endpoint": "somewhere", "model": "gpt-5"}, "'x'.*endpoint"),
        ({"endpoint": "simulated", "model": "gpt-5"}, "'x'.*profile"),
        ({"endpoint": "http://127.0.0.1:9/v1"}, "'x'.*'model'"),
    ],
)
def test_pool_config_errors_name_the_alias(spec, expected):
    with pytest.raises(ValueError, match=expected):
        ExpertPool.from_config({"x": spec}, PricingCatalog.load())
