"""The qa environment, driven turn by turn with hand-written assistant texts (no policy model):
real SimulatedExperts, real LocalSearch on a test corpus, the real sandbox and the real
executor; failing experts are real clients pointed at a closed port, and scripted experts a
chat-completions server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from aiohttp import web

from orchestra_jax.envs.base import Environment, StepOutput
from orchestra_jax.envs.qa import QAEnvironment, QATask, TaskFileError, load_qa_tasks
from orchestra_jax.tokenization.tool_calls import parse_tool_calls
from orchestra_jax.tools.executor import RetryPolicy, ToolExecutor
from orchestra_jax.tools.experts import Expert, ExpertPool
from orchestra_jax.tools.local_search import LocalSearch
from orchestra_jax.tools.openai_client import OpenAIChatClient
from orchestra_jax.tools.pricing import SANDBOX_USD_PER_SECOND, Price
from orchestra_jax.tools.qa_tools import QATools
from orchestra_jax.tools.results import ToolErrorKind
from orchestra_jax.tools.simulated_expert import ExpertProfile, FamilySkill, SimulatedExpert

CORPUS = [
    {"id": "berlin", "title": "Berlin", "text": "Berlin is the capital of Germany."},
    {"id": "spree", "title": "Spree", "text": "The Spree river flows through Berlin."},
    {"id": "nile", "title": "Nile", "text": "The Nile flows north through Egypt."},
]
STEADY = dict(
    tokens_out_median=100,
    tokens_out_sigma=0.0,
    latency_first_token_s=2.0,
    latency_per_token_s=0.01,
    latency_sigma=0.0,
)
EXPERT_LATENCY = 2.0 + 0.01 * 100
PRICES = {"sharp": Price(2.0, 8.0), "dull": Price(0.1, 0.2), "down": Price(5.0, 5.0)}
TASK = QATask(
    id="t1",
    question="What is the capital of Germany, and what is 6 times 7?",
    answer="Berlin",
    family="geo",
    hints={"query_terms": ["capital", "Germany"], "code": "print(6 * 7)", "wrong": ["Munich"]},
)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_pool() -> tuple[ExpertPool, dict[str, SimulatedExpert]]:
    sims = {
        "sharp": SimulatedExpert(
            ExpertProfile("sharp-model", default_skill=FamilySkill(1, 1, 1), **STEADY)
        ),
        "dull": SimulatedExpert(
            ExpertProfile("dull-model", default_skill=FamilySkill(0, 0, 0), **STEADY)
        ),
    }
    down = OpenAIChatClient(f"http://127.0.0.1:{closed_port()}/v1", "down-model", timeout_s=5)
    pool = ExpertPool(
        [
            Expert("sharp", "sharp-model", sims["sharp"], PRICES["sharp"]),
            Expert("dull", "dull-model", sims["dull"], PRICES["dull"]),
            Expert("down", "down-model", down, PRICES["down"]),
        ]
    )
    return pool, sims


@pytest.fixture
def search(tmp_path: Path) -> LocalSearch:
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in CORPUS) + "\n")
    return LocalSearch(path, cache_dir=tmp_path / "cache")


def make_executor() -> ToolExecutor:
    return ToolExecutor(
        retry=RetryPolicy(max_attempts=2, base_delay_s=0.01, max_delay_s=0.02), seed=0, timeout_s=20
    )


def call(tool: str, model: str) -> str:
    return f'<tool_call>{{"name": "{tool}", "arguments": {{"model": "{model}"}}}}</tool_call>'


async def take_turn(
    env: QAEnvironment, executor: ToolExecutor, turn: int, text: str, *, validate: bool = True
) -> StepOutput:
    """Parse the assistant's text as the episode loop would, then step the environment."""
    calls, errors = parse_tool_calls(text, env.tools() if validate else None)
    assert not errors, errors
    return await env.step(text, calls, executor, turn)


def user_text(env: QAEnvironment) -> str:
    messages = env.messages()
    assert [m["role"] for m in messages] == ["system", "user"]
    return messages[1]["content"]


def test_it_is_an_environment_in_qa_mode(search):
    env = QAEnvironment(QATools(make_pool()[0], search))
    assert isinstance(env, Environment) and env.mode == "qa"


def test_search_then_code_then_answer_solves_the_task_and_costs_add_up(search):
    pool, sims = make_pool()
    env = QAEnvironment(QATools(pool, search, search_k=2))
    env.reset(TASK)
    first = env.messages()
    system, user = first[0]["content"], first[1]["content"]
    assert "sharp: $2 in / $8 out per million tokens" in system and "down:" in system
    assert TASK.question in user and "Berlin" not in user  # the gold answer is not leaked
    assert "query_terms" not in system + user and "print(6 * 7)" not in system + user

    async def episode() -> list[StepOutput]:
        executor = make_executor()
        first_text = "I need facts first.\n" + call("search", "sharp")
        steps = [await take_turn(env, executor, 1, first_text)]
        assert "Berlin is the capital of Germany." in user_text(env)
        steps.append(await take_turn(env, executor, 2, call("enhance_reasoning", "sharp")))
        assert "print(6 * 7)" in user_text(env) and "42" in user_text(env)
        assert not env.done
        steps.append(await take_turn(env, executor, 3, call("answer", "sharp")))
        return steps

    steps = asyncio.run(episode())
    assert env.done and env.final_answer == "Berlin" and env.outcome() == 1.0
    records = [r for s in steps for r in s.records]
    assert [(r.turn, r.tool, r.alias, r.model) for r in records] == [
        (1, "search", "sharp", "sharp-model"),
        (2, "enhance_reasoning", "sharp", "sharp-model"),
        (3, "answer", "sharp", "sharp-model"),
    ]
    assert all(r.error_kind is None and r.arguments == {"model": "sharp"} for r in records)
    search_rec, code_rec, answer_rec = records
    price = PRICES["sharp"]
    # Search and answer: the expert's tokens at its price (local search is free).
    for rec in (search_rec, answer_rec):
        assert rec.cost_usd == pytest.approx(price.cost_usd(rec.tokens_in, rec.tokens_out))
    # Code: expert tokens + sandbox seconds x rate; the sandbox seconds are also in latency.
    sandbox_s = code_rec.latency_s - EXPERT_LATENCY
    assert 0 < sandbox_s < 10
    code_expert_usd = price.cost_usd(code_rec.tokens_in, code_rec.tokens_out)
    assert code_rec.cost_usd == pytest.approx(code_expert_usd + sandbox_s * SANDBOX_USD_PER_SECOND)
    assert answer_rec.latency_s == pytest.approx(EXPERT_LATENCY)
    assert sims["sharp"].calls == 3 and sims["dull"].calls == 0


def test_a_wrong_answer_ends_the_episode_with_outcome_zero(search):
    env = QAEnvironment(QATools(make_pool()[0], search))
    env.reset(TASK)
    out = asyncio.run(take_turn(env, make_executor(), 1, call("answer", "dull")))
    assert env.done and env.final_answer == "Munich" and env.outcome() == 0.0
    assert out.records[0].error_kind is None


def test_an_unknown_alias_is_refused_without_calling_any_expert(search):
    pool, sims = make_pool()
    env = QAEnvironment(QATools(pool, search))
    env.reset(TASK)
    # Parsed without schemas, as a lenient episode loop might: the environment must still refuse.
    out = asyncio.run(take_turn(env, make_executor(), 1, call("search", "ghost"), validate=False))
    [record] = out.records
    assert record.error_kind == ToolErrorKind.INVALID_ARGUMENTS
    assert record.alias == "ghost" and record.model is None and record.cost_usd == 0.0
    assert "ghost" in record.error_message and "sharp" in record.error_message
    assert sims["sharp"].calls == sims["dull"].calls == 0
    assert not env.done and "search failed" in user_text(env)


def test_an_alias_outside_the_tasks_subset_is_refused(search):
    pool, sims = make_pool()
    env = QAEnvironment(QATools(pool, search))
    env.reset(QATask("t2", "q?", "a", aliases=("dull",)))
    assert env.tools()[0]["function"]["parameters"]["properties"]["model"]["enum"] == ["dull"]
    assert "sharp" not in env.messages()[0]["content"]
    out = asyncio.run(take_turn(env, make_executor(), 1, call("answer", "sharp"), validate=False))
    assert out.records[0].error_kind == ToolErrorKind.INVALID_ARGUMENTS
    assert sims["sharp"].calls == 0


def test_a_down_expert_is_a_recorded_failure_and_the_episode_continues(search):
    pool = make_pool()[0]
    env = QAEnvironment(QATools(pool, search))
    env.reset(TASK)

    async def episode() -> tuple[StepOutput, StepOutput]:
        executor = make_executor()
        try:
            failed = await take_turn(env, executor, 1, call("answer", "down"))
            assert not env.done
            notes = user_text(env)  # the policy sees that it failed, not where or which model
            assert "Turn 1: answer by down failed (the expert could not be reached" in notes
            assert "down-model" not in notes and "127.0.0.1" not in notes
            assert failed.observations == [env.state.entries[-1].text]
            return failed, await take_turn(env, executor, 2, call("answer", "sharp"))
        finally:
            await pool.aclose()

    failed, recovered = asyncio.run(episode())
    [record] = failed.records
    assert record.error_kind == ToolErrorKind.CONNECTION and record.alias == "down"
    assert record.attempts == 2 and record.cost_usd == 0.0  # retried once, nothing billed
    assert env.done and env.outcome() == 1.0 and recovered.records[0].error_kind is None


def test_one_call_per_tool_name_per_turn_and_different_tools_run_together(search):
    pool, sims = make_pool()
    env = QAEnvironment(QATools(pool, search))
    env.reset(TASK)
    text = call("search", "sharp") + call("search", "dull") + call("enhance_reasoning", "sharp")
    out = asyncio.run(take_turn(env, make_executor(), 1, text))
    assert [(r.tool, r.alias) for r in out.records] == [
        ("search", "sharp"),
        ("enhance_reasoning", "sharp"),
    ]
    assert sims["dull"].calls == 0
    assert any("a later one was skipped" in o for o in out.observations)
    notes = user_text(env)
    assert notes.index("search by sharp") < notes.index("enhance_reasoning by sharp")


def test_a_turn_without_calls_runs_nothing_and_leaves_a_note(search):
    env = QAEnvironment(QATools(make_pool()[0], search))
    env.reset(TASK)
    out = asyncio.run(take_turn(env, make_executor(), 1, "Hmm, let me think."))
    assert out.records == [] and "no tool was called" in user_text(env)


def test_after_the_answer_nothing_more_runs(search):
    pool, sims = make_pool()
    env = QAEnvironment(QATools(pool, search))
    env.reset(TASK)

    async def episode() -> StepOutput:
        executor = make_executor()
        await take_turn(env, executor, 1, call("answer", "sharp"))
        return await take_turn(env, executor, 2, call("search", "sharp"))

    assert asyncio.run(episode()).records == [] and sims["sharp"].calls == 1


def test_the_episode_deadline_stops_calls_before_any_expert_runs(search):
    pool, sims = make_pool()
    env = QAEnvironment(QATools(pool, search), episode_timeout_s=0.0)
    env.reset(TASK)
    out = asyncio.run(take_turn(env, make_executor(), 1, call("search", "sharp")))
    assert out.records[0].error_kind == ToolErrorKind.DEADLINE and sims["sharp"].calls == 0


# ---- front truncation ----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def query_writer(queries: Sequence[str]) -> AsyncIterator[str]:
    """A chat endpoint whose n-th reply is the n-th query: each search finds another document."""
    replies = iter(queries)

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response(
            {
                "id": "c",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {
                            "role": "assistant",
                            "content": f"<query>{next(replies)}</query>",
                        },
                    }
                ],
                "usage": {"prompt_tokens": 50, "completion_tokens": 5},
            }
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    finally:
        await runner.cleanup()


def test_front_truncation_keeps_the_newest_document(tmp_path):
    topics = ["amber", "basalt", "cobalt", "dolomite", "emerald"]
    rows = [
        {"id": t, "title": t.title(), "text": f"{t.title()} facts: " + f"{t} " * 60} for t in topics
    ]
    path = tmp_path / "minerals.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    search = LocalSearch(path, cache_dir=tmp_path / "cache")
    budget = 1_200

    async def episode() -> list[str]:
        async with query_writer(topics) as url:
            client = OpenAIChatClient(url, "writer")
            pool = ExpertPool([Expert("writer", "writer", client, Price(1.0, 1.0))])
            env = QAEnvironment(QATools(pool, search, search_k=1), context_budget=budget)
            env.reset(QATask("m", "Which mineral is green?", "emerald"))
            executor = make_executor()
            try:
                for turn in range(1, len(topics) + 1):
                    await take_turn(env, executor, turn, call("search", "writer"))
            finally:
                await client.aclose()
            return [m["content"] for m in env.messages()]

    _system, user = asyncio.run(episode())
    assert len(user) <= budget
    assert user.startswith("Problem:\nWhich mineral is green?")  # the problem always stays
    assert "Emerald facts:" in user  # the newest document survives in full...
    assert "emerald " * 60 in user
    assert "Amber facts:" not in user  # ...the oldest was dropped from the front
    assert "left out to fit the context" in user


# ---- task files ----------------------------------------------------------------------------


def test_load_qa_tasks_reads_frames_style_rows(tmp_path):
    path = tmp_path / "frames.jsonl"
    path.write_text(
        '{"id": "f1", "question": "Who wrote Hamlet?", "answer": "Shakespeare"}\n\n'
        '{"id": 2, "question": "6*7?", "answer": 42, "family": "math", '
        '"hints": {"code": "print(42)"}, "aliases": ["dull"]}\n'
    )
    first, second = load_qa_tasks(path)
    assert first == QATask("f1", "Who wrote Hamlet?", "Shakespeare")
    assert (second.id, second.answer, second.family, second.aliases) == (
        "2",
        "42",
        "math",
        ("dull",),
    )
    assert second.hints == {"code": "print(42)"}


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ('{"id": "x", "question": "q"', "not valid JSON"),
        ('"just a string"', "must be a JSON object"),
        ('{"id": "x", "question": "q"}', "missing field 'answer'"),
        ('{"id": "x", "question": ["q"], "answer": "a"}', "field 'question' must be a string"),
        ('{"id": "x", "question": "  ", "answer": "a"}', "field 'question' is empty"),
        ('{"id": "a1", "question": "q", "answer": "a"}', "duplicate id 'a1'"),
        ('{"id": "x", "question": "q", "answer": "a", "aliases": []}', "'aliases'"),
    ],
)
def test_bad_task_rows_name_file_and_line(tmp_path, bad_line, message):
    path = tmp_path / "tasks.jsonl"
    path.write_text('{"id": "a1", "question": "q", "answer": "a"}\n' + bad_line + "\n")
    with pytest.raises(TaskFileError, match=message) as caught:
        load_qa_tasks(path)
    assert f"{path}:2" in str(caught.value)


def test_a_task_naming_an_alias_the_pool_lacks_fails_at_reset(search):
    env = QAEnvironment(QATools(make_pool()[0], search))
    with pytest.raises(ValueError, match="'ghost'"):
        env.reset(QATask("t", "q", "a", aliases=("sharp", "ghost")))


# ---- per-task aliases, prices, tools, preferences and grading -------------------------------

MAPPED = QATask(
    id="m1",
    question=TASK.question,
    answer="Berlin",
    family="geo",
    hints={**TASK.hints, "query_terms": ["river", "Berlin"]},  # unrestricted: berlin, spree
    model_mapping={"search-1": "sharp", "answer-1": "sharp", "answer-2": "dull"},
    prices={"sharp-model": Price(1.25, 10.0)},
    tool_aliases={"search": ("search-1",), "answer": ("answer-1", "answer-2")},
    preference={"answer-1": 0.0, "accuracy": 1.0, "cost": 1.0, "latency": 0.0},
    instruction="Keep the cost low.",
    doc_ids=("spree", "nile"),
    search_usd_per_query=0.01,
)


def test_a_mapped_task_sees_its_aliases_tools_and_prices_and_pays_them(search):
    pool, sims = make_pool()
    env = QAEnvironment(QATools(pool, search, search_k=3))
    env.reset(MAPPED)
    assert env.aliases == ("search-1", "answer-1", "answer-2")
    assert env.offered_tools == ("search", "answer")
    schemas = {s["function"]["name"]: s["function"] for s in env.tools()}
    assert list(schemas) == ["search", "answer"]
    assert schemas["search"]["parameters"]["properties"]["model"]["enum"] == ["search-1"]
    assert schemas["answer"]["parameters"]["properties"]["model"]["enum"] == [
        "answer-1", "answer-2"]  # fmt: skip
    system, user = (m["content"] for m in env.messages())
    # The roster: the task's aliases at the task's prices, which tools take each, no model names.
    assert "- answer-1: $1.25 in / $10 out per million tokens" in system
    assert "- answer-2: $0.1 in / $0.2 out per million tokens" in system
    assert "(for search)" in system and "(for answer)" in system
    assert "enhance_reasoning" not in system and "sharp" not in system and "dull" not in system
    assert user.startswith(f"Problem:\n{MAPPED.question}\n\nKeep the cost low.\n\n")

    async def episode() -> list[StepOutput]:
        executor = make_executor()
        found = await take_turn(env, executor, 1, call("search", "search-1"))
        return [found, await take_turn(env, executor, 2, call("answer", "answer-1"))]

    found, answered = asyncio.run(episode())
    [search_rec] = found.records
    assert [d.doc_id for d in env.state.documents] == ["spree"]  # the allow-list held
    assert search_rec.model == "sharp-model" and search_rec.alias == "search-1"
    expected = Price(1.25, 10.0).cost_usd(search_rec.tokens_in, search_rec.tokens_out) + 0.01
    assert search_rec.cost_usd == pytest.approx(expected)  # expert tokens + the task's fee
    [answer_rec] = answered.records
    assert answer_rec.model == "sharp-model"
    assert answer_rec.cost_usd == pytest.approx(
        Price(1.25, 10.0).cost_usd(answer_rec.tokens_in, answer_rec.tokens_out))  # fmt: skip
    assert env.outcome() == 1.0 and sims["sharp"].calls == 2 and sims["dull"].calls == 0
    assert env.episode_info() == {}  # no grader: the environment's own check, nothing to add


def test_a_tool_or_alias_the_task_does_not_offer_is_refused_without_an_expert(search):
    pool, sims = make_pool()
    env = QAEnvironment(QATools(pool, search))
    env.reset(MAPPED)
    text = call("enhance_reasoning", "answer-1") + call("search", "answer-1")
    out = asyncio.run(take_turn(env, make_executor(), 1, text, validate=False))
    code, wrong_alias = out.records
    assert code.error_kind == ToolErrorKind.UNKNOWN_TOOL
    assert "not offered in this task; tools: search, answer" in code.error_message
    assert wrong_alias.error_kind == ToolErrorKind.INVALID_ARGUMENTS
    assert "not an expert of search (search-1)" in wrong_alias.error_message
    assert sims["sharp"].calls == sims["dull"].calls == 0
    none = asyncio.run(take_turn(env, make_executor(), 2, "thinking"))
    assert "call search or answer with one of the listed experts" in none.observations[0]


def test_the_next_task_gets_the_shared_tools_back(search):
    pool = make_pool()[0]
    shared = QATools(pool, search)
    env = QAEnvironment(shared)
    env.reset(MAPPED)
    assert env.qa_tools is not shared and env.qa_tools.doc_ids == {"spree", "nile"}
    env.reset(TASK)
    assert env.qa_tools is shared and env.aliases == ("sharp", "dull", "down")
    assert env.offered_tools == ("search", "enhance_reasoning", "answer")
    assert "for search" not in env.messages()[0]["content"]
    priced = QATask("p", "q?", "a", prices={"sharp": Price(0.0, 0.0)})  # by expert name
    env.reset(priced)
    assert "- sharp: $0 in / $0 out" in env.messages()[0]["content"]
    assert env.aliases == ("sharp", "dull", "down")


@pytest.mark.parametrize(
    ("task", "message"),
    [
        (QATask("x", "q", "a", model_mapping={"e-1": "ghost"}), "'e-1'.*'ghost'.*sharp, dull"),
        (QATask("x", "q", "a", tool_aliases={"browse": ()}), "offers tool 'browse'"),
        (QATask("x", "q", "a", aliases=("dull",), tool_aliases={"answer": ("sharp",)}),
         r"accepts aliases \['sharp'\] the task does not show"),
        (QATask("x", "q", "a", tool_aliases={}), "offers no tools"),
    ],
)
def test_a_task_the_pool_or_tools_cannot_play_fails_at_reset_naming_it(search, task, message):
    env = QAEnvironment(QATools(make_pool()[0], search))
    with pytest.raises(ValueError, match=message) as caught:
        env.reset(task)
    assert "task 'x'" in str(caught.value)


def test_the_grader_is_awaited_in_step_and_its_verdict_is_the_outcome(search):
    from orchestra_jax.rewards.verifiers import Label, Verdict

    graded: list[tuple[str, str]] = []

    async def grader(task: QATask, predicted: str) -> Verdict:
        graded.append((task.id, predicted))
        await asyncio.sleep(0)
        return Verdict(Label.CORRECT, "judge", cost_usd=0.003)

    env = QAEnvironment(QATools(make_pool()[0], search), grader=grader)
    env.reset(TASK)
    assert env.episode_info()["verdict_method"] == "none"
    asyncio.run(take_turn(env, make_executor(), 1, call("search", "dull")))
    assert graded == []  # no answer yet, no grading
    asyncio.run(take_turn(env, make_executor(), 2, call("answer", "dull")))  # "Munich"
    assert graded == [("t1", "Munich")] and env.outcome() == 1.0  # the grader decides
    assert env.verdict.method == "judge"
    assert env.episode_info() == {"verdict_method": "judge", "judge_error": None,
                                  "judge_cost_usd": 0.003}  # fmt: skip
    env.reset(TASK)
    assert env.verdict is None and env.episode_info()["verdict_method"] == "none"


def test_a_failed_or_raising_grader_is_a_judge_error_never_a_lost_step(search):
    from orchestra_jax.rewards.verifiers import Label, Verdict

    async def unknown(task: QATask, predicted: str) -> Verdict:
        return Verdict(Label.UNKNOWN, "judge", error_kind="unparseable_verdict", cost_usd=0.001)

    async def broken(task: QATask, predicted: str) -> Verdict:
        raise RuntimeError("judge client bug")

    env = QAEnvironment(QATools(make_pool()[0], search), grader=unknown)
    env.reset(TASK)
    asyncio.run(take_turn(env, make_executor(), 1, call("answer", "sharp")))
    assert env.done and env.outcome() == 0.0
    assert env.episode_info() == {"verdict_method": "judge", "judge_error": "unparseable_verdict",
                                  "judge_cost_usd": 0.001}  # fmt: skip
    env = QAEnvironment(QATools(make_pool()[0], search), grader=broken)
    env.reset(TASK)
    out = asyncio.run(take_turn(env, make_executor(), 1, call("answer", "sharp")))
    assert env.done and out.records[0].error_kind is None and env.outcome() == 0.0
    assert env.episode_info()["verdict_method"] == "error"
    assert env.episode_info()["judge_error"] == "tool_exception"
    assert "judge client bug" in env.grader_error


def test_an_instruction_already_in_the_question_is_not_repeated(search):
    env = QAEnvironment(QATools(make_pool()[0], search))
    env.reset(QATask("i", "Name the river. Keep the cost low.", "Spree",
                     instruction="Keep the cost low."))  # fmt: skip
    assert env.messages()[1]["content"].count("Keep the cost low.") == 1


def test_a_released_record_runs_end_to_end_from_the_task_file(search, tmp_path):
    from orchestra_jax.envs.qa_tasks import load_task_file

    row = {
        "index": "wiki____1", "category": "qa", "problem": TASK.question, "answer": "Berlin",
        "hints": TASK.hints,
        "tools": [{"type": "function", "function": {"name": "answer", "parameters": {
            "type": "object", "properties": {"model": {"type": "string",
                                                       "enum": ["expert-1"]}}}}}],
        "model_mapping": {"expert-1": "sharp"},
        "tool_pricing": {"sharp-model": {"input_tokens_per_million": 3e-06,
                                         "output_tokens_per_million": 1.5e-05}},
        "pref_vec": {"expert-1": 1.0, "accuracy": 1.0, "cost": 0.0, "latency": 0.0},
    }  # fmt: skip
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(row) + "\n")
    pool = make_pool()[0]
    (task,) = load_task_file(path, experts=pool).tasks
    env = QAEnvironment(QATools(pool, search))
    env.reset(task)
    assert "- expert-1: $3 in / $15 out per million tokens" in env.messages()[0]["content"]
    out = asyncio.run(take_turn(env, make_executor(), 1, call("answer", "expert-1")))
    [rec] = out.records
    assert env.outcome() == 1.0
    assert rec.cost_usd == pytest.approx((rec.tokens_in * 3 + rec.tokens_out * 15) / 1e6)


def test_the_qa_environment_and_its_tools_do_not_import_jax():
    code = (
        "import sys\n"
        "import orchestra_jax.envs.qa, orchestra_jax.tools.qa_tools\n"
        "import orchestra_jax.tools.local_search, orchestra_jax.tools.answers\n"
        "print(sorted(m for m in ('jax', 'flax', 'bm25s') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"  # bm25s too: it is imported lazily, with jax hidden
