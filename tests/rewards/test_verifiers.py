"""Outcome verifiers: cheap host checks and an LLM judge behind a real local OpenAI server."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator

from aiohttp import web

from orchestra_jax.rewards.verifiers import (
    UNPARSEABLE_VERDICT,
    Label,
    LLMJudge,
    exact_match,
    math_equivalent,
    numeric_match,
    parse_verdict,
    token_f1,
    verify_answer,
    verify_cheap,
)
from orchestra_jax.tools.experts import Expert
from orchestra_jax.tools.openai_client import OpenAIChatClient
from orchestra_jax.tools.pricing import Price


def test_exact_match_ignores_form_not_content():
    assert exact_match("The Eiffel Tower.", "eiffel tower")
    assert exact_match("  $\\text{Paris}$ ", ["London", "Paris"])  # any accepted alias
    assert not exact_match("Eiffel", "eiffel tower")
    assert not exact_match("", "")  # empty never matches, not even an empty gold
    assert not exact_match(None, "x")
    assert not exact_match("x", 3)  # a non-string gold is no gold, not a crash


def test_numeric_match_compares_values_within_tolerance():
    assert numeric_match("1,000", "1000.0")
    assert numeric_match("$5", "5")
    assert numeric_match("3/4", "0.75")
    assert numeric_match("12.5%", "12.5")
    assert numeric_match("0.3333334", "0.3333333", rel_tol=1e-5)
    assert not numeric_match("0.34", "0.3333333")
    assert not numeric_match("five", "5")  # words are not this check's business


def test_token_f1_is_the_bag_of_tokens_f1():
    # Normalised: "big cat sat" vs "cat sat down": overlap 2, P = 2/3, R = 2/3.
    assert abs(token_f1("The big cat sat", "cat sat down") - 2 / 3) < 1e-9
    assert token_f1("cat cat", "cat") == 2 * 0.5 * 1 / 1.5  # duplicates count once per match
    assert token_f1("Paris", ["Berlin", "paris"]) == 1.0  # best alias
    assert token_f1("", "x") == 0.0
    assert token_f1("dog", "cat") == 0.0


def test_math_equivalence_is_symbolic():
    assert math_equivalent("\\frac{1}{2}", "0.5")
    assert math_equivalent("(x-1)(x+1)", "x^2-1")
    assert math_equivalent("\\boxed{\\sqrt{4}}", "2")
    assert not math_equivalent("x^2+1", "x^2-1")
    assert not math_equivalent("", "1")
    assert not math_equivalent("}}}{{\\frac", "1")  # garbage is not equivalence, not a crash


def test_math_equivalence_works_off_the_main_thread():
    # math-verify's own timeout needs SIGALRM (main thread only); a worker must still get True.
    results = []
    worker = threading.Thread(target=lambda: results.append(math_equivalent("2/4", "1/2")))
    worker.start()
    worker.join(30)
    assert results == [True]


def test_cheap_verification_names_the_deciding_check():
    assert verify_cheap("Paris", "paris").method == "exact"
    assert verify_cheap("1,000", "1000").method == "numeric"
    assert verify_cheap("x^2-1", "(x-1)(x+1)").method == "math"
    missed = verify_cheap("Lyon", "Paris")
    assert missed.label is Label.INCORRECT and missed.outcome == 0
    assert verify_cheap(None, "Paris").label is Label.INCORRECT


def test_parse_verdict_reads_tags_answers_and_refuses_to_guess():
    assert parse_verdict("reasons...\n<verdict>Correct</verdict>") is Label.CORRECT
    assert parse_verdict("<verdict>correct</verdict> then <verdict>INCORRECT</verdict>") is (
        Label.INCORRECT
    )  # the last verdict stands
    assert parse_verdict("<answer>incorrect</answer>") is Label.INCORRECT
    assert parse_verdict("Verdict: not correct") is Label.INCORRECT
    assert parse_verdict("Final verdict: correct") is Label.UNKNOWN  # no guessing past prefixes
    assert parse_verdict("Not correct.") is Label.INCORRECT
    assert parse_verdict("<think>it is correct</think>") is Label.UNKNOWN  # only thinking
    assert parse_verdict("I am not sure") is Label.UNKNOWN
    assert parse_verdict("") is Label.UNKNOWN


class JudgeServer:
    """An OpenAI chat-completions endpoint whose behaviour each test sets."""

    def __init__(self):
        self.mode = "reply"
        self.reply = "<verdict>correct</verdict>"
        self.requests: list[dict] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        if self.mode == "500":
            return web.json_response({"error": {"message": "engine crashed"}}, status=500)
        if self.mode == "not_json":
            return web.Response(text="<html>oops</html>", content_type="text/html")
        if self.mode == "slow":
            await asyncio.sleep(5)
        return web.json_response(
            {
                "choices": [
                    {
                        "message": {"role": "assistant", "content": self.reply},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1000, "completion_tokens": 100},
            }
        )


@contextlib.asynccontextmanager
async def judge_server() -> AsyncIterator[tuple[str, JudgeServer]]:
    server = JudgeServer()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", server.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1", server
    finally:
        await runner.cleanup()


def test_judge_verdicts_and_cost_from_a_real_endpoint():
    async def run():
        async with judge_server() as (url, server):
            client = OpenAIChatClient(url, "judge-model", timeout_s=5)
            expert = Expert("judge", "judge-model", client, Price(1.0, 10.0))
            judge = LLMJudge(expert)
            verdict = await judge("Capital of France?", "It's Paris, France", "Paris")
            assert verdict.label is Label.CORRECT and verdict.outcome == 1
            assert abs(verdict.cost_usd - (1000 * 1.0 + 100 * 10.0) / 1e6) < 1e-12
            sent = server.requests[-1]["messages"][-1]["content"]
            assert "Capital of France?" in sent and "Paris" in sent and "It's Paris" in sent
            server.reply = "They differ.\n<verdict>incorrect</verdict>"
            assert (await judge("q", "Lyon", "Paris")).label is Label.INCORRECT
            # A bare ChatClient works too; it has no price, so the cost is 0.
            plain = await LLMJudge(client)("q", "Lyon", "Paris")
            assert plain.label is Label.INCORRECT and plain.cost_usd == 0.0
            await client.aclose()

    asyncio.run(run())


def test_failed_judges_are_unknown_with_the_error_kind_never_raised():
    async def run():
        async with judge_server() as (url, server):
            client = OpenAIChatClient(url, "judge-model", timeout_s=5)
            judge = LLMJudge(client, timeout_s=1.0)
            outcomes = {}
            for mode, reply in [
                ("reply", "Hard to say without more context."),
                ("500", ""),
                ("not_json", ""),
                ("slow", ""),
            ]:
                server.mode, server.reply = mode, reply
                verdict = await judge("q", "Lyon", "Paris")
                assert verdict.label is Label.UNKNOWN and verdict.correct is None
                assert verdict.outcome == 0
                outcomes[mode] = verdict.error_kind
            await client.aclose()
            return outcomes

    outcomes = asyncio.run(run())
    assert outcomes == {
        "reply": UNPARSEABLE_VERDICT,
        "500": "server_error",
        "not_json": "bad_response",
        "slow": "timeout",
    }


def test_unreachable_judge_is_a_connection_failure():
    async def run():
        async with judge_server() as (url, _):
            pass  # the server is gone once the block ends: the port refuses connections
        client = OpenAIChatClient(url, "judge-model", timeout_s=2)
        verdict = await LLMJudge(client)("q", "Lyon", "Paris")
        await client.aclose()
        return verdict

    verdict = asyncio.run(run())
    assert verdict.label is Label.UNKNOWN and verdict.error_kind == "connection"


def test_a_client_that_raises_anything_is_recorded_not_propagated():
    class Broken:
        async def complete(self, messages, *, max_tokens=1024, temperature=0.0, hints=None):
            raise RuntimeError("client bug")

    verdict = asyncio.run(LLMJudge(Broken())("q", "a", "b"))
    assert verdict.label is Label.UNKNOWN and verdict.error_kind == "tool_exception"
    assert "client bug" in verdict.error_message


def test_verify_answer_asks_the_judge_only_when_cheap_checks_miss():
    async def run():
        async with judge_server() as (url, server):
            client = OpenAIChatClient(url, "judge-model", timeout_s=5)
            judge = LLMJudge(client)
            first = await verify_answer("1,000", "1000", question="q", judge=judge)
            assert first.method == "numeric" and not server.requests  # no judge call
            second = await verify_answer("the French capital", "Paris", question="q", judge=judge)
            assert second.method == "judge" and second.label is Label.CORRECT
            assert len(server.requests) == 1
            empty = await verify_answer("", "Paris", question="q", judge=judge)
            assert empty.label is Label.INCORRECT and len(server.requests) == 1
            without = await verify_answer("the French capital", "Paris")
            assert without.label is Label.INCORRECT
            await client.aclose()

    asyncio.run(run())
