"""WebSearch against a real local server speaking Tavily's search protocol."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from orchestra_jax.tools.http_errors import MissingApiKeyError
from orchestra_jax.tools.pricing import WEB_EXTRACT_USD_PER_PAGE, WEB_SEARCH_USD_PER_QUERY
from orchestra_jax.tools.results import ToolError, ToolErrorKind
from orchestra_jax.tools.search_types import SearchHit
from orchestra_jax.tools.web_search import WebSearch

KEY_VAR = "ORCHESTRA_TEST_TAVILY_KEY"
SECRET = "tvly-test-secret-9876"

RESULTS = [
    {
        "title": "Second",
        "url": "https://b.example/2",
        "content": "snippet b",
        "score": 0.4,
        "raw_content": "full page b",
    },
    {
        "title": "First",
        "url": "https://a.example/1",
        "content": "snippet a",
        "score": 0.9,
        "raw_content": "full page a",
    },
    {
        "title": "Third",
        "url": "https://c.example/3",
        "content": "snippet c",
        "score": 0.1,
        "raw_content": None,
    },
]


class TavilyServer:
    """Scripted by the query text; `requests` keeps each request's body and auth header."""

    def __init__(self) -> None:
        self.requests: list[dict] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append({"body": body, "authorization": request.headers.get("Authorization")})
        if request.headers.get("Authorization") != f"Bearer {SECRET}":
            return web.json_response({"detail": {"error": "Unauthorized"}}, status=401)
        query = body["query"]
        if query == "overloaded":
            return web.json_response({"detail": "try later"}, status=503)
        if query == "too many":
            return web.json_response({"detail": "rate"}, status=429, headers={"Retry-After": "2"})
        if query == "echo":  # a careless server echoing the key it received in the body
            return web.json_response({"detail": f"bad key {body['api_key']}"}, status=400)
        if query == "garbage":
            return web.Response(text="not json at all")
        if query == "no results":
            return web.json_response({"query": query, "answer": None})
        if query == "bad score":
            return web.json_response({"results": [{"url": "u", "content": "c", "score": "hi"}]})
        return web.json_response(
            {
                "query": query,
                "answer": None,
                "images": [],
                "response_time": 0.01,
                "results": RESULTS[: body["max_results"]],
            }
        )


@contextlib.asynccontextmanager
async def serve_tavily() -> AsyncIterator[tuple[str, TavilyServer]]:
    server = TavilyServer()
    app = web.Application()
    app.router.add_post("/search", server.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", server
    finally:
        await runner.cleanup()


@pytest.fixture
def api_key(monkeypatch) -> str:
    monkeypatch.setenv(KEY_VAR, SECRET)
    return SECRET


def search(query: str, k: int = 5, **kwargs) -> tuple[list[SearchHit] | ToolError, list[dict]]:
    """Run one search against a fresh server: the hits (or the ToolError) and the requests."""

    async def run():
        async with serve_tavily() as (url, server):
            client = WebSearch.from_env(KEY_VAR, url, **kwargs)
            try:
                return await client.search(query, k), server.requests
            except ToolError as error:
                return error, server.requests
            finally:
                await client.aclose()

    return asyncio.run(run())


def test_search_returns_hits_best_first_and_sends_the_key_as_tavily_does(api_key):
    hits, requests = search("who founded Zorblat", k=3)
    assert [h.doc_id for h in hits] == [
        "https://a.example/1",
        "https://b.example/2",
        "https://c.example/3",
    ]
    assert hits[0] == SearchHit(
        doc_id="https://a.example/1", title="First", text="snippet a", score=0.9
    )
    (sent,) = requests
    assert sent["authorization"] == f"Bearer {SECRET}"
    assert sent["body"]["api_key"] == SECRET
    assert sent["body"]["query"] == "who founded Zorblat"
    assert sent["body"]["max_results"] == 3


def test_k_limits_the_hits(api_key):
    hits, requests = search("q", k=1)
    assert len(hits) == 1 and requests[0]["body"]["max_results"] == 1


def test_raw_content_mode_returns_page_text_and_bills_pages(api_key):
    hits, _ = search("q", k=3, include_raw_content=True)
    assert [h.text for h in hits] == ["full page a", "full page b", "snippet c"]
    client = WebSearch.from_env(KEY_VAR, "http://127.0.0.1:1", include_raw_content=True)
    assert client.cost_usd(hits) == WEB_SEARCH_USD_PER_QUERY + 3 * WEB_EXTRACT_USD_PER_PAGE


def test_a_plain_search_costs_one_query_fee(api_key):
    client = WebSearch.from_env(KEY_VAR, "http://127.0.0.1:1")
    assert client.cost_usd([SearchHit("u", "t", "x", 1.0)] * 5) == 0.01


def test_missing_key_fails_at_construction_naming_the_variable(monkeypatch):
    monkeypatch.delenv(KEY_VAR, raising=False)
    with pytest.raises(MissingApiKeyError, match=KEY_VAR):
        WebSearch.from_env(KEY_VAR)


@pytest.mark.parametrize(
    ("query", "kind"),
    [
        ("overloaded", ToolErrorKind.SERVER_ERROR),
        ("too many", ToolErrorKind.RATE_LIMITED),
        ("echo", ToolErrorKind.CLIENT_ERROR),
        ("garbage", ToolErrorKind.BAD_RESPONSE),
        ("no results", ToolErrorKind.BAD_RESPONSE),
        ("bad score", ToolErrorKind.BAD_RESPONSE),
    ],
)
def test_server_failures_are_classified_and_never_show_the_key(api_key, query, kind):
    error, _ = search(query)
    assert isinstance(error, ToolError) and error.kind == kind
    assert SECRET not in str(error) and SECRET not in error.message
    assert "web search http://127.0.0.1" in error.message
    if query == "too many":
        assert error.retry_after_s == 2.0
    if query == "echo":
        assert "bad key ***" in error.message


@pytest.mark.parametrize(("query", "k"), [("", 5), ("   ", 5), ("q", 0), ("q", 21), ("q", 2.5)])
def test_bad_arguments_are_rejected_before_any_request(api_key, query, k):
    error, requests = search(query, k)
    assert isinstance(error, ToolError) and error.kind == ToolErrorKind.INVALID_ARGUMENTS
    assert requests == []


def test_unreachable_server_is_a_connection_error(api_key):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def run():
        client = WebSearch.from_env(KEY_VAR, f"http://127.0.0.1:{port}")
        try:
            with pytest.raises(ToolError) as info:
                await client.search("q")
        finally:
            await client.aclose()
        return info.value

    error = asyncio.run(run())
    assert error.kind == ToolErrorKind.CONNECTION and error.retryable
    assert SECRET not in str(error)


def test_repr_names_the_variable_not_the_key(api_key):
    client = WebSearch.from_env(KEY_VAR, "http://127.0.0.1:1")
    assert KEY_VAR in repr(client) and SECRET not in repr(client)


def test_search_depth_and_raw_content_options_go_into_the_request(api_key):
    _, requests = search("q", k=2, search_depth="advanced", include_raw_content=True)
    body = requests[0]["body"]
    assert body["search_depth"] == "advanced" and body["include_raw_content"] is True
    with pytest.raises(ValueError, match="search_depth"):
        WebSearch.from_env(KEY_VAR, "http://127.0.0.1:1", search_depth="deep")
