"""Scripted policies that drive the real environment without a model: routes, random, oracle.

Why: the world's calibration is a claim about *routes* ("search with mini, then answer with
mini is the cheapest good way to do a look-up"), and the learned policy is judged against fixed
routes and random routing on the same test tasks. A scripted policy chooses `(tool, alias)`
pairs per turn; `play` writes them as the policy would (`<tool_call>` text), parses them with the
real parser against the task's tool schemas, and steps the real environment -- experts,
BM25 search, sandbox and executor included. So a route's numbers are exactly what a policy that
always made those calls would get.

- `Route`: a fixed sequence of calls, one per turn (`route:search>answer[mini]`,
  `route:search[mini]>enhance_reasoning[coder]>answer[math-small]`, `route:frontier-all`).
- `RandomPolicy`: one uniformly random valid call per turn (tool and alias drawn from the
  task's offer), seeded per (seed, task, turn) so it does not depend on the order episodes run
  in. It is the SFT data source: it teaches the call format and nothing about routing.
- `OracleRouter`: the best route per family (the cheapest within a tolerance of the best),
  chosen from measured route results.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from orchestra_jax.envs.toolworld.encyclopedia import seeded_rng
from orchestra_jax.envs.toolworld.environment import ToolWorldEnv, call_text
from orchestra_jax.envs.toolworld.tasks import WorldTask
from orchestra_jax.tokenization.tool_calls import parse_tool_calls
from orchestra_jax.tools.executor import ToolExecutor
from orchestra_jax.tools.qa_tools import ANSWER, ENHANCE_REASONING, SEARCH

Pick = tuple[str, str]  # (tool name, alias)
#: The route shapes: which tools are called, in order, before the episode ends.
SHAPES: tuple[tuple[str, ...], ...] = (
    (ANSWER,),
    (SEARCH, ANSWER),
    (ENHANCE_REASONING, ANSWER),
    (SEARCH, ENHANCE_REASONING, ANSWER),
)


class ScriptedPolicy(Protocol):
    """Chooses the calls of each turn from the task, the turn and the aliases it offers."""

    name: str

    def choose(self, task: WorldTask, turn: int, aliases: Sequence[str]) -> list[Pick]: ...


@dataclass(frozen=True)
class Route:
    """A fixed call sequence: `steps[turn]` is the call of that turn."""

    name: str
    steps: tuple[Pick, ...]

    def choose(self, task: WorldTask, turn: int, aliases: Sequence[str]) -> list[Pick]:
        del task, aliases
        return [self.steps[turn]] if turn < len(self.steps) else []

    @property
    def aliases(self) -> set[str]:
        return {alias for _, alias in self.steps}


def route_name(steps: Sequence[Pick], frontier: str | None = None) -> str:
    """`route:search>answer[mini]` when one alias does every step, else each step named."""
    tools = [t for t, _ in steps]
    aliases = {a for _, a in steps}
    if frontier is not None and tools == [SEARCH, ENHANCE_REASONING, ANSWER] and aliases == {
        frontier
    }:
        return "route:frontier-all"
    if len(aliases) == 1:
        return f"route:{'>'.join(tools)}[{steps[0][1]}]"
    return "route:" + ">".join(f"{t}[{a}]" for t, a in steps)


def make_routes(
    aliases: Sequence[str], frontier: str, *, mixed: bool = True
) -> dict[str, Route]:
    """Every route of the four shapes: one alias per route, or (`mixed`) any alias per step.

    With six aliases that is 24 single-alias routes, or 6 + 36 + 36 + 216 = 294 mixed ones.
    """
    routes: dict[str, Route] = {}
    for shape in SHAPES:
        if mixed:
            choices: Iterable[tuple[str, ...]] = itertools.product(aliases, repeat=len(shape))
        else:
            choices = ((a,) * len(shape) for a in aliases)
        for picked in choices:
            steps = tuple(zip(shape, picked, strict=True))
            name = route_name(steps, frontier)
            routes[name] = Route(name, steps)
    return routes


def specialist_routes(
    aliases: Sequence[str], frontier: str, *, searcher: str, coder: str
) -> dict[str, Route]:
    """The one-alias routes plus the routes that search with `searcher` and/or compute with
    `coder` before any alias answers: a small set (42 with six aliases) that contains each
    family's cheap good route, for checks that cannot afford all 294."""
    routes = make_routes(aliases, frontier, mixed=False)
    for answerer in aliases:
        for steps in (
            ((SEARCH, searcher), (ANSWER, answerer)),
            ((ENHANCE_REASONING, coder), (ANSWER, answerer)),
            ((SEARCH, searcher), (ENHANCE_REASONING, coder), (ANSWER, answerer)),
        ):
            name = route_name(steps, frontier)
            routes[name] = Route(name, steps)
    return routes


class RandomPolicy:
    """One uniformly random valid call per turn: a tool the task offers, an alias it offers;
    on turn `last_turn` (when given) always `answer`, by a random alias -- what the
    environment's last-turn note asks, so no random episode ends unanswered."""

    def __init__(self, seed: int = 0, last_turn: int | None = None):
        self.seed = int(seed)
        self.last_turn = last_turn
        self.name = f"random:{self.seed}"

    def choose(self, task: WorldTask, turn: int, aliases: Sequence[str]) -> list[Pick]:
        rng = seeded_rng("random-policy", self.seed, task.id, turn)
        tool = rng.choice(list(task.tools))  # drawn even when overridden: same aliases either way
        alias = rng.choice(list(aliases))
        return [(ANSWER if turn == self.last_turn else tool, alias)]


@dataclass(frozen=True)
class OracleRouter:
    """The route chosen for each family, played as a policy."""

    choice: Mapping[str, Route]
    name: str = "oracle"

    def choose(self, task: WorldTask, turn: int, aliases: Sequence[str]) -> list[Pick]:
        route = self.choice.get(task.family)
        return [] if route is None else route.choose(task, turn, aliases)


@dataclass(frozen=True)
class EpisodeResult:
    """What one scripted episode did and got."""

    task_id: str
    family: str
    preference: str
    outcome: float
    cost_usd: float
    latency_s: float
    calls_per_alias: Mapping[str, int]
    calls_per_tool: Mapping[str, int]
    calls: tuple[tuple[str, Mapping[str, Any]], ...]  # (tool name, arguments), in order
    final_answer: str | None
    turns: int
    errors: int = 0  # calls that failed or were refused
    transcript: tuple[tuple[tuple[dict[str, Any], ...], str], ...] = field(default=(), repr=False)


class _World(Protocol):
    max_turns: int

    def make_env(self) -> ToolWorldEnv: ...


async def play(
    world: _World,
    policy: ScriptedPolicy,
    task: WorldTask,
    executor: Any,
    *,
    transcript: bool = False,
) -> EpisodeResult:
    """One episode of `task` under `policy` in a fresh environment of `world`.

    Each turn's picks are written as tool-call text and parsed against the task's schemas, so
    a pick the task does not offer is a malformed turn (nothing runs), as it would be for a
    model. With `transcript`, each turn's messages and assistant text are kept (SFT data).
    """
    env = world.make_env()
    env.reset(task)
    schemas = env.tools()
    records = []
    turns: list[tuple[tuple[dict[str, Any], ...], str]] = []
    turn = 0
    while turn < world.max_turns and not env.done:
        picks = policy.choose(task, turn, env.aliases)
        if not picks:
            break
        text = "".join(call_text(tool, alias) for tool, alias in picks)
        if transcript:
            turns.append((tuple(env.messages()), text))
        calls, _errors = parse_tool_calls(text, tools=schemas)
        output = await env.step(text, calls, executor, turn)
        records.extend(output.records)
        turn += 1
    per_alias = {a: n for a, n in alias_counts(records, env.aliases).items() if n}
    per_tool: dict[str, int] = {}
    for r in records:
        per_tool[r.tool] = per_tool.get(r.tool, 0) + 1
    return EpisodeResult(
        task_id=task.id,
        family=task.family,
        preference=task.preference,
        outcome=env.outcome(),
        cost_usd=float(sum(r.cost_usd for r in records)),
        latency_s=float(sum(r.latency_s for r in records)),
        calls_per_alias=per_alias,
        calls_per_tool=per_tool,
        calls=tuple((r.tool, dict(r.arguments)) for r in records),
        final_answer=env.final_answer,
        turns=turn,
        errors=sum(r.error_kind is not None for r in records),
        transcript=tuple(turns),
    )


def alias_counts(records: Iterable[Any], aliases: Sequence[str]) -> dict[str, int]:
    """Calls per alias (zero included, in `aliases` order) among call records; a call naming
    no known alias (refused) counts for none."""
    counts = dict.fromkeys(aliases, 0)
    for record in records:
        alias = getattr(record, "alias", None)
        if alias in counts:
            counts[alias] += 1
    return counts


async def run_scripted(
    world: _World,
    policy: ScriptedPolicy,
    tasks: Sequence[WorldTask],
    executor: Any = None,
    *,
    concurrency: int = 64,
    transcript: bool = False,
) -> list[EpisodeResult]:
    """Play every task under `policy`, `concurrency` episodes at a time; results in task order."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    executor = executor if executor is not None else ToolExecutor(max_concurrency=256)
    slots = asyncio.Semaphore(concurrency)

    async def one(task: WorldTask) -> EpisodeResult:
        async with slots:
            return await play(world, policy, task, executor, transcript=transcript)

    return list(await asyncio.gather(*(one(t) for t in tasks)))


def turn_chooser(
    policy: ScriptedPolicy, task: WorldTask, aliases: Sequence[str]
) -> Callable[[list[dict[str, Any]], random.Random], str]:
    """`policy` on `task` as a per-episode chooser `(tools, rng) -> completion text`.

    This is the shape the training loop's scripted episodes take
    (`rollout.scripted.scripted_episodes(choose_for=...)`), so the same routes and random
    policy drive the real episode loop -- whatever the tool schemas' style, since the choice
    comes from the task, not from the schemas. `aliases`: the task's aliases (the world's
    when the task names none). Each call is the next turn; past the policy's end it writes
    nothing (an empty turn).
    """
    offered = list(task.aliases) if task.aliases is not None else list(aliases)
    turn = 0

    def choose(tools: list[dict[str, Any]], rng: random.Random) -> str:
        nonlocal turn
        del tools, rng  # the policy draws from its own seeded generator
        picks = policy.choose(task, turn, offered)
        turn += 1
        return "".join(call_text(tool, alias) for tool, alias in picks)

    return choose


def summarize(
    results: Sequence[EpisodeResult], aliases: Sequence[str] | None = None
) -> dict[str, Any]:
    """Means over episodes: accuracy, cost, latency, calls per alias, and the same per family."""
    n = len(results)
    if n == 0:
        raise ValueError("cannot summarize zero results")
    names = list(aliases) if aliases is not None else sorted(
        {a for r in results for a in r.calls_per_alias}
    )
    out: dict[str, Any] = {
        "n": n,
        "accuracy": sum(r.outcome for r in results) / n,
        "cost_usd": sum(r.cost_usd for r in results) / n,
        "latency_s": sum(r.latency_s for r in results) / n,
        "calls": {a: sum(r.calls_per_alias.get(a, 0) for r in results) / n for a in names},
    }
    by_family: dict[str, dict[str, float]] = {}
    for family in dict.fromkeys(r.family for r in results):
        rows = [r for r in results if r.family == family]
        by_family[family] = {
            "n": len(rows),
            "accuracy": sum(r.outcome for r in rows) / len(rows),
            "cost_usd": sum(r.cost_usd for r in rows) / len(rows),
            "latency_s": sum(r.latency_s for r in rows) / len(rows),
        }
    out["by_family"] = by_family
    return out


def choose_oracle(
    route_results: Mapping[str, Sequence[EpisodeResult]],
    routes: Mapping[str, Route],
    *,
    tolerance: float = 0.02,
) -> OracleRouter:
    """Per family, the cheapest route whose accuracy is within `tolerance` of the best route's.

    `route_results` maps route names to their results on the same tasks; ties in cost go to
    the more accurate route, then to the name.
    """
    if not route_results:
        raise ValueError("no route results to choose from")
    per_family: dict[str, list[tuple[str, float, float]]] = {}
    for name, results in route_results.items():
        for family, stats in summarize(results)["by_family"].items():
            per_family.setdefault(family, []).append(
                (name, stats["accuracy"], stats["cost_usd"])
            )
    choice = {}
    for family, rows in per_family.items():
        best = max(acc for _, acc, _ in rows)
        good = [row for row in rows if row[1] >= best - tolerance - 1e-12]
        name = min(good, key=lambda row: (row[2], -row[1], row[0]))[0]
        choice[family] = routes[name]
    return OracleRouter(choice)


def oracle_results(
    oracle: OracleRouter, route_results: Mapping[str, Sequence[EpisodeResult]]
) -> list[EpisodeResult]:
    """The oracle's episodes, taken from its chosen routes' results (no re-run needed)."""
    out = []
    for family, route in oracle.choice.items():
        out.extend(r for r in route_results[route.name] if r.family == family)
    return out


__all__ = [
    "SHAPES",
    "EpisodeResult",
    "OracleRouter",
    "RandomPolicy",
    "Route",
    "ScriptedPolicy",
    "alias_counts",
    "choose_oracle",
    "make_routes",
    "oracle_results",
    "play",
    "route_name",
    "run_scripted",
    "specialist_routes",
    "summarize",
    "turn_chooser",
]
