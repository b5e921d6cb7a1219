"""The qa tools: each asks the chosen expert for one thing and acts on it, with honest cost and
latency, unusable replies reported as the expert's failure, and endpoint failures propagated.

Experts are SimulatedExperts (deterministic profiles) or the real OpenAIChatClient against a
scripted chat-completions server on 127.0.0.1; retrieval is real LocalSearch or the real
WebSearch client against a Tavily-style server on 127.0.0.1; code runs in the real sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from orchestra_jax.tokenization.tool_calls import ToolCallErrorKind, parse_tool_calls
from orchestra_jax.tools.experts import Expert, ExpertPool
from orchestra_jax.tools.local_search import LocalSearch
from orchestra_jax.tools.openai_client import OpenAIChatClient
from orchestra_jax.tools.pricing import SANDBOX_USD_PER_SECOND, WEB_SEARCH_USD_PER_QUERY, Price
from orchestra_jax.tools.qa_tools import (
    TOOL_NAMES,
    QAState,
    QATools,
    extract_code,
    extract_query,
    fit_from_front,
)
from orchestra_jax.tools.results import ToolError, ToolErrorKind, ToolResult
from orchestra_jax.tools.search_types import SearchHit
from orchestra_jax.tools.simulated_expert import ExpertProfile, FamilySkill, SimulatedExpert
from orchestra_jax.tools.web_search import WebSearch

CORPUS = [
    {"id": "berlin", "title": "Berlin", "text": "Berlin is the capital of Germany."},
    {"id": "paris", "title": "Paris", "text": "Paris is the capital of France."},
    {"id": "nile", "title": "Nile", "text": "The Nile flows north through Egypt."},
]
# Deterministic simulated experts: no spread in tokens or latency, so expected numbers are exact.
STEADY = dict(
    tokens_out_median=100,
    tokens_out_sigma=0.0,
    latency_first_token_s=2.0,
    latency_per_token_s=0.01,
    latency_sigma=0.0,
)
SHARP = ExpertProfile("sharp-model", default_skill=FamilySkill(1.0, 1.0, 1.0), **STEADY)
DULL = ExpertProfile("dull-model", default_skill=FamilySkill(0.0, 0.0, 0.0), **STEADY)
MATHY = ExpertProfile(
    "math-model", default_skill=FamilySkill(1.0, 1.0, 1.0), answer_format="boxed", **STEADY
)
EXPECTED_EXPERT_LATENCY = 2.0 + 0.01 * 100
PRICES = {"sharp": Price(2.0, 8.0), "dull": Price(0.1, 0.2), "mathy": Price(0.9, 0.9)}
HINTS = {
    "family": "geo",
    "gold": "Berlin",
    "query_terms": ["capital", "Germany"],
    "code": "print(6 * 7)",
    "broken_code": "print(1 / 0)",
}


def simulated_pool() -> ExpertPool:
    return ExpertPool(
        [
            Expert("sharp", "sharp-model", SimulatedExpert(SHARP), PRICES["sharp"]),
            Expert("dull", "dull-model", SimulatedExpert(DULL), PRICES["dull"]),
            Expert("mathy", "math-model", SimulatedExpert(MATHY), PRICES["mathy"]),
        ]
    )


@pytest.fixture
def local_search(tmp_path: Path) -> LocalSearch:
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in CORPUS) + "\n")
    return LocalSearch(path, cache_dir=tmp_path / "cache")


def fresh_state(**hints) -> QAState:
    return QAState(question="Which city is the capital of Germany?", hints={**HINTS, **hints})


def expert_cost(alias: str, result: ToolResult) -> float:
    return PRICES[alias].cost_usd(result.tokens_in, result.tokens_out)


# ---- real local servers --------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serve(routes: dict[str, web.RequestHandler]) -> AsyncIterator[str]:
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_post(path, handler)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def scripted_chat(replies: dict[str, str], usage: tuple[int, int] = (100, 20)):
    """A chat-completions handler that replies `replies[model]` with fixed usage."""

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response(
            {
                "id": "c1",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": replies[body["model"]]},
                    }
                ],
                "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1]},
            }
        )

    return handle


async def tavily(request: web.Request) -> web.Response:
    body = await request.json()
    if body["query"] == "explode":
        return web.json_response({"error": "overloaded"}, status=503)
    return web.json_response(
        {
            "results": [
                {
                    "url": "https://example.org/berlin",
                    "title": "Berlin",
                    "score": 0.9,
                    "content": f"Result for {body['query']}: Berlin is the capital of Germany.",
                },
            ][: body["max_results"]]
        }
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---- search --------------------------------------------------------------------------------


def test_search_sends_the_experts_query_to_the_retriever_and_prices_the_expert(local_search):
    tools = QATools(simulated_pool(), local_search, search_k=2)
    result = asyncio.run(tools.search("sharp", fresh_state()))
    assert result.ok and result.model == "sharp-model"
    assert result.info["query"] == "capital Germany"  # the hints reached the expert (role query)
    assert result.info["documents"][0].doc_id == "berlin"
    assert len(result.info["documents"]) <= 2
    assert "Berlin is the capital of Germany." in result.observation
    # Local search is free: cost is the expert's real token usage at its price.
    assert result.tokens_out == 100 and result.tokens_in > 0
    assert result.cost_usd == pytest.approx(expert_cost("sharp", result))
    # Latency: the expert's reported latency plus the measured retrieval wall-clock.
    assert EXPECTED_EXPERT_LATENCY <= result.latency_s < EXPECTED_EXPERT_LATENCY + 1.0


def test_search_reports_documents_already_in_the_notes_without_repeating_them(local_search):
    tools = QATools(simulated_pool(), local_search, search_k=1)
    state = fresh_state()
    first = asyncio.run(tools.search("sharp", state))
    state.record("search", first, turn=1)
    again = asyncio.run(tools.search("sharp", state))
    state.record("search", again, turn=2)
    assert [d.doc_id for d in state.documents] == ["berlin"]  # no duplicate
    assert "already in the notes" in again.observation
    assert "Berlin is the capital" not in again.observation


def test_web_search_adds_its_query_fee(monkeypatch):
    monkeypatch.setenv("QA_TOOLS_TEST_TAVILY_KEY", "tvly-test-secret-123")

    async def run() -> ToolResult:
        async with serve({"/search": tavily}) as url:
            web_search = WebSearch(url, api_key_env="QA_TOOLS_TEST_TAVILY_KEY")
            try:
                return await QATools(simulated_pool(), web_search).search("sharp", fresh_state())
            finally:
                await web_search.aclose()

    result = asyncio.run(run())
    assert result.info["documents"][0].doc_id == "https://example.org/berlin"
    assert result.info["search_fee_usd"] == WEB_SEARCH_USD_PER_QUERY
    assert result.cost_usd == pytest.approx(expert_cost("sharp", result) + WEB_SEARCH_USD_PER_QUERY)


def test_retriever_failure_propagates_and_carries_the_expert_money_spent(monkeypatch):
    monkeypatch.setenv("QA_TOOLS_TEST_TAVILY_KEY", "tvly-test-secret-123")

    async def run() -> ToolError:
        async with serve({"/search": tavily}) as url:
            web_search = WebSearch(url, api_key_env="QA_TOOLS_TEST_TAVILY_KEY")
            tools = QATools(simulated_pool(), web_search)
            try:
                with pytest.raises(ToolError) as caught:
                    await tools.search("sharp", fresh_state(query_terms="explode"))
            finally:
                await web_search.aclose()
        return caught.value

    error = asyncio.run(run())
    assert error.kind == ToolErrorKind.SERVER_ERROR and error.retryable
    assert error.cost_usd > 0  # the expert's tokens were billed before the retriever failed


def test_an_empty_query_is_the_experts_failure_and_nothing_is_retrieved(local_search):
    async def run() -> ToolResult:
        async with serve({"/v1/chat/completions": scripted_chat({"blank": "   "})}) as url:
            client = OpenAIChatClient(f"{url}/v1", "blank")
            pool = ExpertPool([Expert("blank", "blank", client, Price(1.0, 1.0))])
            try:
                return await QATools(pool, local_search).search("blank", fresh_state())
            finally:
                await client.aclose()

    result = asyncio.run(run())
    assert result.ok and "no usable query" in result.observation
    assert result.info["query"] is None and result.info["documents"] == []
    assert local_search.retrieve_calls == 0
    assert result.cost_usd == pytest.approx(Price(1.0, 1.0).cost_usd(100, 20))


# ---- enhance_reasoning ---------------------------------------------------------------------


def test_enhance_reasoning_runs_the_experts_program_in_the_sandbox(local_search):
    tools = QATools(simulated_pool(), local_search)
    result = asyncio.run(tools.enhance_reasoning("sharp", fresh_state()))
    assert result.ok and result.info["exit_kind"] is None
    assert result.info["code"].strip() == "print(6 * 7)"
    assert result.info["output"].strip() == "42" and "42" in result.observation
    sandbox_s = result.info["sandbox_s"]
    assert 0 < sandbox_s < 10
    # Cost: expert tokens at its price + sandbox seconds at the sandbox rate.
    assert result.cost_usd == pytest.approx(
        expert_cost("sharp", result) + sandbox_s * SANDBOX_USD_PER_SECOND
    )
    assert result.latency_s == pytest.approx(EXPECTED_EXPERT_LATENCY + sandbox_s)


def test_a_failing_program_is_an_observation_not_a_tool_failure(local_search):
    tools = QATools(simulated_pool(), local_search)
    result = asyncio.run(tools.enhance_reasoning("dull", fresh_state()))  # writes broken_code
    assert result.ok
    assert result.info["exit_kind"] == "nonzero_exit"
    assert "[program failed: nonzero_exit]" in result.info["output"]
    assert "ZeroDivisionError" in result.observation


def test_a_reply_without_a_code_block_is_the_experts_failure(local_search):
    async def run() -> ToolResult:
        chat = scripted_chat({"talker": "I would simply reason about it instead."})
        async with serve({"/v1/chat/completions": chat}) as url:
            client = OpenAIChatClient(f"{url}/v1", "talker")
            pool = ExpertPool([Expert("talker", "talker", client, Price(3.0, 6.0))])
            try:
                return await QATools(pool, local_search).enhance_reasoning("talker", fresh_state())
            finally:
                await client.aclose()

    result = asyncio.run(run())
    assert result.ok and "no Python code block" in result.observation
    assert "code" not in result.info
    assert result.cost_usd == pytest.approx(Price(3.0, 6.0).cost_usd(100, 20))


# ---- answer --------------------------------------------------------------------------------


@pytest.mark.parametrize("alias", ["sharp", "mathy"])  # <answer> tags and \boxed{}
def test_answer_extracts_the_final_answer(local_search, alias):
    result = asyncio.run(QATools(simulated_pool(), local_search).answer(alias, fresh_state()))
    assert result.ok and result.info["answer"] == "Berlin"
    assert result.cost_usd == pytest.approx(expert_cost(alias, result))


def test_answer_with_nested_braces_from_a_real_endpoint(local_search):
    async def run() -> ToolResult:
        reply = r"<think>\boxed{wrong}</think>It simplifies to \boxed{\frac{1}{2}}."
        async with serve({"/v1/chat/completions": scripted_chat({"m": reply})}) as url:
            client = OpenAIChatClient(f"{url}/v1", "m")
            pool = ExpertPool([Expert("m", "m", client, Price(1.0, 1.0))])
            try:
                return await QATools(pool, local_search).answer("m", fresh_state())
            finally:
                await client.aclose()

    assert asyncio.run(run()).info["answer"] == r"\frac{1}{2}"


# ---- failures ------------------------------------------------------------------------------


@pytest.mark.parametrize("tool", TOOL_NAMES)
def test_an_unreachable_expert_raises_a_connection_error(local_search, tool):
    client = OpenAIChatClient(f"http://127.0.0.1:{closed_port()}/v1", "down", timeout_s=5)
    pool = ExpertPool([Expert("down", "down", client, Price(1.0, 1.0))])
    tools = QATools(pool, local_search)

    async def run() -> None:
        try:
            await tools.tool(tool)("down", fresh_state())
        finally:
            await client.aclose()

    with pytest.raises(ToolError) as caught:
        asyncio.run(run())
    assert caught.value.kind == ToolErrorKind.CONNECTION and caught.value.retryable


def test_an_unknown_alias_is_invalid_arguments(local_search):
    tools = QATools(simulated_pool(), local_search)
    with pytest.raises(ToolError) as caught:
        asyncio.run(tools.answer("nobody", fresh_state()))
    assert caught.value.kind == ToolErrorKind.INVALID_ARGUMENTS
    assert "nobody" in caught.value.message and "sharp" in caught.value.message


# ---- what the policy is told ---------------------------------------------------------------


def test_schemas_restrict_model_to_the_tasks_aliases_and_show_prices(local_search):
    tools = QATools(simulated_pool(), local_search, latencies={"dull": 0.4})
    schemas = tools.schemas(["sharp", "dull"])
    assert [s["function"]["name"] for s in schemas] == list(TOOL_NAMES)
    for schema in schemas:
        params = schema["function"]["parameters"]
        assert params["required"] == ["model"]
        assert params["properties"]["model"]["enum"] == ["sharp", "dull"]
        description = schema["function"]["description"]
        assert "sharp: $2 in / $8 out per million tokens, about 3 s per call" in description
        assert "dull: $0.1 in / $0.2 out per million tokens, about 0.4 s per call" in description
        assert "mathy" not in description and "sharp-model" not in description  # no model names
    # The schemas drive the parser: an alias outside the enum is refused before any call.
    _, errors = parse_tool_calls(
        '<tool_call>{"name": "search", "arguments": {"model": "mathy"}}</tool_call>', schemas
    )
    assert [e.kind for e in errors] == [ToolCallErrorKind.INVALID_VALUE]


# ---- parsing replies and fitting material --------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "query"),
    [
        ("<query>capital of Germany</query>", "capital of Germany"),
        ("thinking...\n<query>a</query> then <query> b  c </query>", "b c"),
        ('Let me think.\nQuery: "Nile length"', "Nile length"),
        ("<think>draft</think>\n`river Egypt`", "river Egypt"),
        ("", None),
        ("<think>never finished", None),
    ],
)
def test_extract_query(reply, query):
    assert extract_query(reply) == query


def test_extract_query_caps_the_length():
    assert len(extract_query("word " * 500)) <= 300


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        ("Here:\n```python\nprint(1)\n```", "print(1)\n"),
        ("```\nx = 2\nprint(x)\n```", "x = 2\nprint(x)\n"),
        ("```py\nprint('a')\n```\nthen\n```python3\nprint('b')\n```", "print('b')\n"),
        ("```bash\nls\n```", None),
        ("no code at all", None),
        ("```python\n\n```", None),
    ],
)
def test_extract_code(reply, code):
    assert extract_code(reply) == code


def test_fit_from_front_keeps_the_newest_blocks():
    blocks = ["old " * 30, "middle " * 10, "newest"]
    assert fit_from_front(blocks, 10_000) == blocks
    kept = fit_from_front(blocks, len(blocks[1]) + len("newest") + 80)
    assert kept[-2:] == [blocks[1], "newest"] and "1 earlier item" in kept[0]
    assert sum(len(b) + 1 for b in kept) <= len(blocks[1]) + len("newest") + 80


def test_fit_from_front_cuts_the_beginning_of_an_oversized_newest_block():
    blocks = ["first", "x" * 500 + "THE END"]
    kept = fit_from_front(blocks, 120)
    assert kept[-1].endswith("THE END") and sum(len(b) + 1 for b in kept) <= 120


def test_fit_from_front_counts_with_any_measure():
    words = lambda text: len(text.split())  # noqa: E731 - a tokenizer stand-in: word count
    blocks = ["one two three", "four five", "six"]
    kept = fit_from_front(blocks, 12, words)
    assert kept[-2:] == ["four five", "six"]


def test_state_records_failures_as_notes_and_answers_as_final():
    state = fresh_state()
    raw = "search failed: chat endpoint http://10.0.0.7/v1 (model secret-model): timed out"
    failed = ToolResult(observation=raw, error_kind=ToolErrorKind.TIMEOUT, attempts=2)
    shown = state.record("search", failed, turn=3, alias="sharp")
    # The policy learns which call failed and why, but not the endpoint or the hidden model.
    assert shown == "Turn 3: search by sharp failed (the call timed out after 2 attempts)."
    assert state.entries[-1].kind == "note" and state.entries[-1].text == shown
    state.record(
        "answer", ToolResult(observation="answer by x: no answer", info={"answer": None}), turn=4
    )
    assert not state.answered
    hit = SearchHit("d", "D", "text", 1.0)
    state.record("search", ToolResult(observation="found d", info={"documents": [hit]}), turn=5)
    assert state.documents == [hit] and state.entries[-1].kind == "documents"
    state.record(
        "answer", ToolResult(observation="answer by x: Berlin", info={"answer": "Berlin"}), turn=6
    )
    assert state.answered and state.final_answer == "Berlin"


# ---- one task's tools ----------------------------------------------------------------------


def test_for_task_swaps_the_pool_and_prices_and_keeps_everything_else(local_search):
    shared = QATools(simulated_pool(), local_search, search_k=2, code_timeout_s=3.0)
    view = shared.for_task(
        experts=simulated_pool().for_task({"expert-1": "sharp"}, {"sharp-model": Price(1.0, 1.0)}),
        sandbox_usd_per_second=0.5,
        search_usd_per_query=0.02,
        doc_ids=["paris"],
    )
    assert type(view) is QATools and view is not shared
    assert (view.retriever, view.run_code, view.search_k, view.code_timeout_s) == (
        local_search, shared.run_code, 2, 3.0)  # fmt: skip
    assert view.experts.aliases() == ["expert-1"] and view.doc_ids == frozenset({"paris"})
    assert shared.doc_ids is None and shared.search_usd_per_query is None  # untouched
    assert shared.sandbox_usd_per_second == SANDBOX_USD_PER_SECOND
    assert "expert-1: $1 in / $1 out per million tokens" in view.alias_line("expert-1")
    assert shared.for_task().experts is shared.experts  # nothing given: the same settings


def test_a_tasks_allow_list_reaches_the_retriever_and_its_search_price_is_charged(local_search):
    view = QATools(simulated_pool(), local_search, search_k=3).for_task(
        doc_ids=["paris", "nile"], search_usd_per_query=0.02
    )
    result = asyncio.run(view.search("sharp", fresh_state()))  # the query is "capital Germany"
    assert result.ok and [d.doc_id for d in result.info["documents"]] == ["paris"]  # not berlin
    assert result.info["search_fee_usd"] == 0.02
    assert result.cost_usd == pytest.approx(expert_cost("sharp", result) + 0.02)


def test_a_tasks_sandbox_price_is_charged_per_second(local_search):
    view = QATools(simulated_pool(), local_search).for_task(sandbox_usd_per_second=0.5)
    result = asyncio.run(view.enhance_reasoning("sharp", fresh_state()))
    sandbox_s = result.info["sandbox_s"]
    assert result.info["sandbox_usd"] == pytest.approx(0.5 * sandbox_s)
    assert result.cost_usd == pytest.approx(expert_cost("sharp", result) + 0.5 * sandbox_s)
    assert "(sandbox $0.5 per second)" in str(view.schemas(["sharp"]))


def test_for_task_refuses_bad_prices_and_an_allow_list_a_retriever_cannot_honour():
    class PlainRetriever:
        async def search(self, query: str, k: int = 5) -> list[SearchHit]:
            return []

    tools = QATools(simulated_pool(), PlainRetriever())
    with pytest.raises(ValueError, match="needs a retriever whose search takes doc_ids"):
        tools.for_task(doc_ids=["a"])
    with pytest.raises(ValueError, match="search_usd_per_query must be a number"):
        tools.for_task(search_usd_per_query="free")
    with pytest.raises(ValueError, match="sandbox_usd_per_second must be finite and >= 0"):
        tools.for_task(sandbox_usd_per_second=-1.0)


def test_schemas_offer_a_tasks_tool_subset_each_with_its_own_aliases(local_search):
    tools = QATools(simulated_pool(), local_search).for_task(search_usd_per_query=0.01)
    schemas = tools.schemas(["sharp", "dull", "mathy"], {"search": ("dull",), "answer": ()})
    assert [s["function"]["name"] for s in schemas] == ["search", "answer"]
    search, answer = (s["function"] for s in schemas)
    assert search["parameters"]["properties"]["model"]["enum"] == ["dull"]
    assert "sharp" not in search["description"] and "($0.01 per search)" in search["description"]
    assert answer["parameters"]["properties"]["model"]["enum"] == ["sharp", "dull", "mathy"]
    _, errors = parse_tool_calls(
        '<tool_call>{"name": "search", "arguments": {"model": "sharp"}}</tool_call>', schemas
    )
    assert [e.kind for e in errors] == [ToolCallErrorKind.INVALID_VALUE]
