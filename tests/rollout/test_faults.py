"""Fault injection: a rollout where 30% of tool calls fail still ends, and accounts for all of it.

64 episodes x 3 turns run concurrently through the real engine and the real `ToolExecutor`.
Every turn calls a `probe` tool that talks to a real aiohttp server on 127.0.0.1. A seeded fault
plan decides, per call, whether the call goes well or fails in one of four ways:

- `raise`: the tool raises a plain exception             -> `tool_exception`
- `timeout`: the server answers after the attempt timeout -> `timeout`
- `http500`: the server answers HTTP 500 (retried, again 500) -> `server_error`
- `garbage`: the server answers 200 with a body that is not JSON -> `bad_response`

The test pins the acceptance: every episode ends, every injected failure appears in its
episode's trajectory with its kind (injected and recorded counts are equal, kind by kind and
episode by episode), no exception escapes, and nothing hangs (the whole run sits under
`asyncio.wait_for`).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from typing import Any

import aiohttp
from aiohttp import web

from orchestra_jax.envs.base import CallRecord, StepOutput
from orchestra_jax.rollout.engine import run_episodes
from orchestra_jax.rollout.requests import SamplingParams
from orchestra_jax.tools.executor import RetryPolicy, ToolExecutor
from orchestra_jax.tools.http_errors import post_json
from orchestra_jax.tools.results import ToolErrorKind, ToolResult
from tests.rollout.test_episode import ScriptedPolicy, _tool, call_text, make_tokenizer, turn_of

EPISODES = 64
TURNS = 3
FAULT_RATE = 0.3
ATTEMPT_TIMEOUT_S = 0.3
SLOW_REPLY_S = 1.0  # the `timeout` endpoint's delay: well past the attempt timeout

#: What each injected fault must be recorded as.
EXPECTED_KIND = {
    "ok": None,
    "raise": ToolErrorKind.TOOL_EXCEPTION,
    "timeout": ToolErrorKind.TIMEOUT,
    "http500": ToolErrorKind.SERVER_ERROR,
    "garbage": ToolErrorKind.BAD_RESPONSE,
}


class FaultPlan:
    """Decides each call's fate once (retries of a call meet the same fault) and counts them."""

    def __init__(self, seed: int, rate: float):
        self.rng = random.Random(seed)
        self.rate = rate
        self.injected: Counter[str] = Counter()
        self.by_episode: dict[str, Counter[str]] = {}

    def draw(self, episode: str) -> str:
        fault = "ok"
        if self.rng.random() < self.rate:
            fault = self.rng.choice(["raise", "timeout", "http500", "garbage"])
        self.injected[fault] += 1
        self.by_episode.setdefault(episode, Counter())[fault] += 1
        return fault


async def start_server() -> tuple[web.AppRunner, str, Counter[str]]:
    """A real HTTP endpoint on a free 127.0.0.1 port; `hits` counts requests per path."""
    hits: Counter[str] = Counter()

    async def ok(request: web.Request) -> web.Response:
        hits["ok"] += 1
        payload = await request.json()
        return web.json_response({"value": f"probe {payload['key']} fine"})

    async def slow(request: web.Request) -> web.Response:
        hits["timeout"] += 1
        await asyncio.sleep(SLOW_REPLY_S)
        return web.json_response({"value": "too late"})

    async def fail(request: web.Request) -> web.Response:
        hits["http500"] += 1
        return web.Response(status=500, text='{"error": {"message": "overloaded"}}')

    async def garbage(request: web.Request) -> web.Response:
        hits["garbage"] += 1
        return web.Response(status=200, text="<html>\x00\x01 not json {{{")

    app = web.Application()
    app.add_routes([web.post("/ok", ok), web.post("/timeout", slow),
                    web.post("/http500", fail), web.post("/garbage", garbage)])
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}", hits


class ProbeEnv:
    """Dialogue world whose only tools are `probe` (faults injected) and `answer`."""

    mode = "dialogue"

    def __init__(self, plan: FaultPlan, base_url: str, session: aiohttp.ClientSession):
        self.plan, self.base_url, self.session = plan, base_url, session

    def reset(self, task: dict[str, Any]) -> None:
        self.task = task
        self.answered = False
        self.chat = [{"role": "user", "content": f"Task {task['id']}: probe three times."}]

    def tools(self) -> list[dict[str, Any]]:
        return [_tool("probe", key="string"), _tool("answer", text="string")]

    def messages(self) -> list[dict[str, Any]]:
        return list(self.chat)

    def probe(self, key: str, fault: str):
        async def attempt() -> ToolResult:
            if fault == "raise":
                raise RuntimeError(f"probe {key} crashed")
            data, latency = await post_json(self.session, f"{self.base_url}/{fault}",
                                            {"key": key}, what="probe", timeout_s=30.0)
            return ToolResult(str(data["value"]), latency_s=latency)
        return attempt

    async def step(self, text: str, calls, executor, turn: int) -> StepOutput:
        out = StepOutput()
        self.chat.append({"role": "assistant", "content": text})
        for call in calls:
            if call.name == "probe":
                fault = self.plan.draw(self.task["id"])
                result = await executor.run("probe", self.probe(call.arguments["key"], fault))
            else:
                self.answered = True
                result = ToolResult("answer recorded")
            out.records.append(CallRecord.from_result(turn, call, result))
            self.chat.append({"role": "tool", "content": result.observation})
        return out

    @property
    def done(self) -> bool:
        return self.answered

    def outcome(self) -> float:
        return float(self.answered)


def script(prompt: str) -> str:
    """Probe every turn; the last turn also answers."""
    task = prompt.split("Task ", 1)[1].split(":", 1)[0]
    turn = turn_of(prompt)
    reply = call_text("probe", key=f"{task}-{turn}")
    if turn == TURNS - 1:
        reply += "\n" + call_text("answer", text="done")
    return reply


def test_thirty_percent_tool_faults_are_all_recorded_and_nothing_escapes_or_hangs(tmp_path):
    tokenizer = make_tokenizer(tmp_path / "sp")
    plan = FaultPlan(seed=1234, rate=FAULT_RATE)

    leaked: list[dict[str, Any]] = []  # whatever reached the event loop's exception handler

    async def main():
        asyncio.get_running_loop().set_exception_handler(lambda _, context: leaked.append(context))
        runner, base_url, hits = await start_server()
        try:
            async with aiohttp.ClientSession() as session:
                executor = ToolExecutor(
                    max_concurrency=32, timeout_s=ATTEMPT_TIMEOUT_S, seed=0,
                    retry=RetryPolicy(max_attempts=2, base_delay_s=0.01, max_delay_s=0.05))
                episodes = [(ProbeEnv(plan, base_url, session), {"id": f"e{i}"})
                            for i in range(EPISODES)]
                trajs = await run_episodes(
                    episodes, generator=ScriptedPolicy(tokenizer, script, latency_s=0.001),
                    tokenizer=tokenizer, executor=executor, sampling=SamplingParams(),
                    max_turns=TURNS, timeout_s=30.0)
                return trajs, executor.stats(), hits
        finally:
            await runner.cleanup()

    t0 = time.monotonic()
    trajs, stats, hits = asyncio.run(asyncio.wait_for(main(), timeout=60))
    elapsed = time.monotonic() - t0

    assert leaked == []
    assert len(trajs) == EPISODES
    assert all(t.termination == "answered" and t.turns == TURNS for t in trajs)
    assert all(t.error is None for t in trajs)
    faults = sum(n for kind, n in plan.injected.items() if kind != "ok")
    assert plan.injected.total() == EPISODES * TURNS
    assert 0.2 < faults / plan.injected.total() < 0.4  # the plan really injected ~30%
    assert all(plan.injected[k] > 0 for k in EXPECTED_KIND)  # every kind was exercised

    def recorded(records) -> Counter:
        return Counter(r.error_kind for r in records if r.tool == "probe")

    expected = Counter({EXPECTED_KIND[k]: n for k, n in plan.injected.items()})
    assert recorded(r for t in trajs for r in t.records) == expected
    for traj in trajs:  # ... and each failure sits in the trajectory of the episode it hit
        mine = plan.by_episode[traj.task_id]
        assert recorded(traj.records) == Counter({EXPECTED_KIND[k]: n for k, n in mine.items()})
        assert [r.turn for r in traj.records if r.tool == "probe"] == list(range(TURNS))

    # The failures really went through the server and the executor's retry path.
    assert hits["http500"] == 2 * plan.injected["http500"]  # each 500 was retried once
    assert hits["garbage"] == plan.injected["garbage"]
    assert hits["timeout"] == plan.injected["timeout"]
    server_errors = [r for t in trajs for r in t.records
                     if r.error_kind == ToolErrorKind.SERVER_ERROR]
    assert all(r.attempts == 2 for r in server_errors)
    assert stats["calls"] == EPISODES * TURNS
    assert elapsed < 30
