"""Episodes played by a script instead of the model, through the very same episode loop.

Why: a format-only warm start (SFT on uniformly random *valid* tool calls) must teach the
policy the exact token sequences it will later sample -- the same rendered prompts (qa mode
re-renders every turn, dialogue mode extends), the same tool-call syntax, the same stop
handling. Driving `run_episode` with a `ScriptedTurns` generator instead of the batcher gives
trajectories whose `sequences()` are those tokens, with the loss mask on the scripted
completions only; the environment, the tools and the executor run for real.

`random_valid_call` chooses among the tools the environment offers in this episode (so tool
subsets are honoured) and, for every required argument with an `enum` (an expert alias), a
uniformly random allowed value: valid calls, no routing knowledge.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable, Sequence
from typing import Any

from orchestra_jax.envs.base import Environment
from orchestra_jax.rollout.episode import release, run_episode
from orchestra_jax.rollout.requests import GenerationRequest, GenerationResult, SamplingParams
from orchestra_jax.rollout.trajectory import Trajectory
from orchestra_jax.seeding import derive_seed
from orchestra_jax.tokenization import Tokenizer

#: Chooses a completion text from the tools offered and a random generator.
ChooseTurn = Callable[[list[dict[str, Any]], random.Random], str]


def tool_call_text(name: str, arguments: dict[str, Any]) -> str:
    """One call in the chat templates' `<tool_call>` syntax, compact JSON (fewest tokens)."""
    body = json.dumps({"name": name, "arguments": arguments}, separators=(",", ":"))
    return f"<tool_call>{body}</tool_call>"


def random_valid_call(tools: list[dict[str, Any]], rng: random.Random) -> str:
    """A uniformly random offered tool, its required enum arguments drawn uniformly."""
    if not tools:
        raise ValueError("random_valid_call: the environment offers no tools")
    schema = rng.choice(tools)["function"]
    params = schema.get("parameters") or {}
    properties = params.get("properties") or {}
    arguments: dict[str, Any] = {}
    for name in params.get("required") or []:
        spec = properties.get(name) or {}
        if "enum" not in spec:
            raise ValueError(f"random_valid_call: required argument {name!r} of tool "
                             f"{schema['name']!r} has no enum to draw from")
        arguments[name] = rng.choice(list(spec["enum"]))
    return tool_call_text(schema["name"], arguments)


class FixedRoute:
    """A chooser that makes the calls of `route` in order, one per turn, e.g.
    `[("search", {"model": "mini"}), ("answer", {"model": "mini"})]`; past its end it repeats
    the last call. A call to a tool the episode does not offer is still written (the
    environment refuses it, as it would a policy's)."""

    def __init__(self, route: Sequence[tuple[str, dict[str, Any]]]):
        if not route:
            raise ValueError("FixedRoute needs at least one call")
        self.route = list(route)
        self.turn = 0

    def __call__(self, tools: list[dict[str, Any]], rng: random.Random) -> str:
        del tools, rng
        name, arguments = self.route[min(self.turn, len(self.route) - 1)]
        self.turn += 1
        return tool_call_text(name, dict(arguments))


class ScriptedTurns:
    """A `Generator` for one episode: each request is answered with `choose(env.tools(), rng)`
    encoded by the tokenizer, then the tokenizer's end-of-turn token (when it has one), as the
    sampler returns a turn that ended by itself. Log-probs are 0 (no model was asked); finish
    reason "stop".

    The end-of-turn token is part of the turn a warm start teaches: without it a policy
    learns which call to write but not to stop after it, and with a short `max_new_tokens`
    (toolworld: 2) its second token is an untrained draw -- a second call, or noise."""

    def __init__(self, env: Environment, tokenizer: Tokenizer, choose: ChooseTurn, seed: int):
        self.env = env
        self.tokenizer = tokenizer
        self.choose = choose
        self.rng = random.Random(seed)

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        text = self.choose(self.env.tools(), self.rng)
        ids = list(self.tokenizer.encode(text))
        end = self.tokenizer.eos_token_id
        if end is not None:
            ids.append(int(end))
        return GenerationResult(token_ids=ids, logprobs=[0.0] * len(ids), finish_reason="stop",
                                prompt_tokens=len(request.prompt_ids))


async def scripted_episodes(
    tasks: Sequence[Any],
    make_env: Callable[[], Environment],
    *,
    tokenizer: Tokenizer,
    executor: Any,
    choose: ChooseTurn = random_valid_call,
    choose_for: Callable[[Any], ChooseTurn] | None = None,
    seed: int = 0,
    max_turns: int = 4,
    timeout_s: float = 60.0,
    max_prompt_tokens: int | None = None,
    max_concurrent: int = 64,
) -> list[Trajectory]:
    """One scripted episode per task, concurrently; episode `i` draws from seed `(seed, i)`.

    `choose_for(task)`, when given, makes a fresh chooser per episode (a fixed route that
    keeps its own place in its sequence of calls); otherwise every episode uses `choose`."""
    gate = asyncio.Semaphore(max(1, max_concurrent))
    sampling = SamplingParams(max_new_tokens=1, temperature=0.0)

    async def one(index: int, task: Any) -> Trajectory:
        async with gate:
            env = make_env()
            own = derive_seed(seed, index, bits=32)
            chooser = choose_for(task) if choose_for is not None else choose
            turns = ScriptedTurns(env, tokenizer, chooser, seed=own)
            return await run_episode(env, task, generator=turns, tokenizer=tokenizer,
                                     executor=executor, sampling=sampling, max_turns=max_turns,
                                     timeout_s=timeout_s, max_prompt_tokens=max_prompt_tokens,
                                     group=index)

    try:
        return list(await asyncio.gather(*(one(i, t) for i, t in enumerate(tasks))))
    finally:
        await release(executor)


__all__ = ["FixedRoute", "ScriptedTurns", "random_valid_call", "scripted_episodes",
           "tool_call_text"]
