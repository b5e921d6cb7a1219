"""One episode: render the prompt, sample a turn, parse its tool calls, step the environment.

The loop is an asyncio coroutine so that thousands of episodes share one generator (the batcher)
and one tool executor: while one episode waits for its tools, others generate. Its contract with
a training run is that it always returns a `Trajectory` and never raises: a bad reply becomes a
flagged (malformed) turn, a failing tool a classified call record, an exception in the
environment an episode that ended with termination "error". Only cancellation propagates.

Prompts come in two modes (the environment's `mode`):

- **qa**: the environment's messages are rendered afresh each turn.
- **dialogue**: the prompt accumulates. The next prompt is the previous prompt ids + the sampled
  ids + the tokens of what the chat template adds after them (closing the assistant turn, the
  new observation messages, the generation prompt). That tail is found as the *string* delta
  between two renderings of the template, so the sampled tokens are never decoded and
  re-tokenized: the learner sees exactly the ids the sampler produced, with their log-probs.
  When a template cannot be extended this way (it rewrites earlier turns), the prompt is
  rendered afresh and the trajectory starts a new sequence there (`TurnSample.new_segment`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, Protocol

from orchestra_jax.envs.base import Environment
from orchestra_jax.rollout.requests import GenerationRequest, GenerationResult, SamplingParams
from orchestra_jax.rollout.trajectory import (
    DUPLICATE_CALL,
    OUT_OF_VOCABULARY,
    Trajectory,
    TurnSample,
)
from orchestra_jax.seeding import derive_seed
from orchestra_jax.tokenization.protocol import Tokenizer
from orchestra_jax.tokenization.tool_calls import ToolCall, parse_tool_calls
from orchestra_jax.tools.results import ToolResult

#: Extra time `env.step` gets past the episode deadline before it is cancelled: the executor
#: already turns late calls into `deadline` results, this only catches a step that hangs
#: outside the executor.
STEP_GRACE_S = 1.0
#: How long a cancelled step may take to wind down before the episode leaves it behind.
_CANCEL_WAIT_S = 0.5


class Generator(Protocol):
    """Anything that continues a prompt: the `Batcher`, or a client of `orchestra serve`."""

    async def generate(self, request: GenerationRequest) -> GenerationResult: ...


class DeadlineExecutor:
    """The shared tool executor as one episode sees it: every call carries the episode deadline.

    Environments call `executor.run(...)` without knowing about episode deadlines; this view
    adds `deadline=` (the earlier of the episode's and the caller's) so that no tool of an
    episode runs past it. Everything else is the shared executor's.
    """

    def __init__(self, executor: Any, deadline: float):
        self._executor = executor
        self.deadline = deadline

    async def run(
        self,
        tool_name: str,
        factory: Any,
        timeout_s: float | None = None,
        deadline: float | None = None,
        **kwargs: Any,
    ) -> ToolResult:
        deadline = self.deadline if deadline is None else min(deadline, self.deadline)
        return await self._executor.run(
            tool_name, factory, timeout_s=timeout_s, deadline=deadline, **kwargs
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._executor, name)


def turn_seed(seed: int | None, turn: int) -> int | None:
    """A distinct, reproducible seed per turn (the same seed every turn would repeat samples)."""
    if seed is None:
        return None
    return derive_seed(seed, turn)


def keep_first_call_per_tool(calls: Sequence[ToolCall]) -> tuple[list[ToolCall], int]:
    """The first call to each tool, in order, and how many later duplicates were dropped.

    The method executes at most one call per tool name per turn: a policy that repeats a call
    gains nothing from it, and a turn cannot fan out into unbounded tool traffic.
    """
    kept: list[ToolCall] = []
    seen: set[str] = set()
    for call in calls:
        if call.name not in seen:
            seen.add(call.name)
            kept.append(call)
    return kept, len(calls) - len(kept)


class _Prompter:
    """Turns the environment's messages into prompt ids, in the environment's mode."""

    def __init__(self, tokenizer: Tokenizer, tools: list[dict[str, Any]], mode: str):
        self.tokenizer = tokenizer
        self.tools = tools or None
        self.dialogue = mode == "dialogue"
        eos = tokenizer.eos_token_id
        self.eos_text = tokenizer.decode([eos]) if eos is not None else ""
        self._messages: list[dict[str, Any]] | None = None  # what the last prompt rendered
        self._ids: list[int] | None = None  # the last prompt followed by its sampled ids
        self._completion_ended = True  # did the last completion end with a stop token?

    def render(self, messages: list[dict[str, Any]], generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            messages, tools=self.tools, add_generation_prompt=generation_prompt
        )

    def prompt(self, messages: list[dict[str, Any]], assistant_text: str) -> tuple[list[int], bool]:
        """(prompt ids, starts a new sequence) for the next turn."""
        if self.dialogue and self._ids is not None:
            tail = self._dialogue_tail(messages, assistant_text)
            if tail is not None:
                return [*self._ids, *self.tokenizer.encode(tail)], False
        text = self.render(messages, generation_prompt=True)
        return self.tokenizer.encode(text), True

    def sampled(
        self, messages: list[dict[str, Any]], prompt_ids: list[int], completion_ids: list[int],
        ended: bool,
    ) -> None:
        """Remember the turn just sampled (dialogue mode extends it next turn)."""
        self._messages = [dict(m) for m in messages]
        self._ids = [*prompt_ids, *completion_ids]
        self._completion_ended = ended

    def _dialogue_tail(self, messages: list[dict[str, Any]], assistant_text: str) -> str | None:
        """The text that follows the sampled ids, or None when the chat did not just grow."""
        previous = self._messages or []
        k = len(previous)
        if len(messages) < k or [dict(m) for m in messages[:k]] != previous:
            return None  # the environment rewrote its history: not an extension
        added = list(messages[k:])
        if added and added[0].get("role") == "assistant":
            assistant, after = added[0], added[1:]
        else:  # the environment keeps no assistant turns: render the sampled text as one
            assistant, after = {"role": "assistant", "content": assistant_text}, added
        before = self.render(previous, generation_prompt=True)
        through = self.render([*previous, assistant], generation_prompt=False)
        full = self.render([*previous, assistant, *after], generation_prompt=True)
        if not through.startswith(before) or not full.startswith(through):
            return None
        # What the template writes after the assistant's end-of-turn marker ("\n" in ChatML).
        turn_text = through[len(before):]
        cut = turn_text.rfind(self.eos_text) if self.eos_text else -1
        closing = turn_text[cut + len(self.eos_text):] if cut >= 0 else ""
        # A completion cut by the length limit (or by a stop sequence) has no end-of-turn token
        # yet: close the turn with an unsampled one, so the next turn reads like the template.
        close = "" if self._completion_ended or cut < 0 else self.eos_text
        return close + closing + full[len(through):]


def _decode(
    tokenizer: Tokenizer, ids: Sequence[int], finish_reason: str, stop_ids: frozenset[int]
) -> tuple[str, int, bool]:
    """(text without the final stop token, count of undecodable ids, ended with a stop token)."""
    ended = finish_reason == "stop" and bool(ids) and ids[-1] in stop_ids
    body = list(ids[:-1] if ended else ids)
    vocab = tokenizer.vocab_size
    known = [i for i in body if 0 <= i < vocab]
    return tokenizer.decode(known), len(body) - len(known), ended


def _with_stops(sampling: SamplingParams, tokenizer: Tokenizer) -> SamplingParams:
    """`sampling` plus the tokenizer's stop tokens (a turn must end at the end-of-turn token)."""
    stops = tuple(dict.fromkeys([*sampling.stop_token_ids, *tokenizer.stop_token_ids]))
    return dataclasses.replace(sampling, stop_token_ids=stops)


def task_id_of(task: Any, group: int | None = None) -> str:
    """The id a trajectory of `task` is recorded under: its `task_id`, else its `id` (a key of a
    mapping or an attribute), as a string.

    A task without either gets `f"task-{group}"` when the caller knows the task's group, so
    the groups of one step stay distinguishable in logs; without a group it gets "" (an
    episode run on its own has nothing better to name it by).
    """
    for name in ("task_id", "id"):
        value = task.get(name) if isinstance(task, Mapping) else getattr(task, name, None)
        if value is not None:
            return str(value)
    return "" if group is None else f"task-{group}"


def _ending(env: Environment, turn: int, max_turns: int, deadline: float) -> str | None:
    """Why the episode ends before this turn ("answered", "max_turns", "timeout"), or None."""
    if env.done:
        return "answered"
    if turn >= max_turns:
        return "max_turns"
    if time.monotonic() >= deadline:
        return "timeout"
    return None


def _turn_sample(tokenizer: Tokenizer, tools: Any, stop_ids: frozenset[int], turn: int,
                 prompt_ids: list[int], new_segment: bool, result: Any,
                 ) -> tuple[TurnSample, bool]:
    """The turn as the trajectory records it (the completion decoded without its final stop
    token, its tool calls parsed, the first per tool kept), and whether it ended at a stop."""
    completion = list(result.token_ids)
    if len(result.logprobs) != len(completion):
        raise ValueError(f"the generator returned {len(completion)} tokens but "
                         f"{len(result.logprobs)} log-probs")
    text, unknown_ids, ended = _decode(tokenizer, completion, result.finish_reason, stop_ids)
    calls, errors = parse_tool_calls(text, tools=tools)
    calls, duplicates = keep_first_call_per_tool(calls)
    format_errors = [str(e.kind) for e in errors]
    format_errors += [OUT_OF_VOCABULARY] * unknown_ids + [DUPLICATE_CALL] * duplicates
    sample = TurnSample(
        turn=turn, prompt_ids=prompt_ids, completion_ids=completion,
        completion_logprobs=[float(x) for x in result.logprobs],
        params_version=result.params_version, finish_reason=result.finish_reason, text=text,
        malformed=bool(errors or unknown_ids) and not calls, format_errors=format_errors,
        calls=calls, new_segment=new_segment)
    return sample, ended


async def run_episode(
    env: Environment,
    task: Any,
    *,
    generator: Generator,
    tokenizer: Tokenizer,
    executor: Any,
    sampling: SamplingParams,
    max_turns: int,
    timeout_s: float,
    max_prompt_tokens: int | None = None,
    task_id: str | None = None,
    group: int | None = None,
    step_grace_s: float = STEP_GRACE_S,
) -> Trajectory:
    """Play one episode of `task` in `env` and return its trajectory; never raises.

    Per turn: render `env.messages()` (qa: afresh; dialogue: extending the previous prompt),
    ask `generator` for a completion, decode it without its final stop token, parse its tool
    calls against `env.tools()`, keep the first call per tool name, and `await env.step(...)`
    with an executor bound to the episode deadline (`timeout_s` after the start). A turn with
    parse errors and no valid call is malformed: the environment gets no calls, the episode
    goes on. The episode ends when the environment is done ("answered"), after `max_turns`,
    when a generation would start past the deadline ("timeout"), when the next prompt is
    longer than `max_prompt_tokens` ("context_length"), or on any exception ("error").
    """
    start = time.monotonic()
    deadline = start + timeout_s
    trajectory = Trajectory(
        task_id=task_id if task_id is not None else task_id_of(task),
        mode=getattr(env, "mode", "qa"),
        group=group,
    )
    turn = 0
    try:
        if max_turns < 0 or timeout_s < 0:
            raise ValueError(f"max_turns ({max_turns}) and timeout_s ({timeout_s}) must be >= 0")
        env.reset(task)
        tools = env.tools()
        trajectory.mode = getattr(env, "mode", trajectory.mode)
        prompter = _Prompter(tokenizer, tools, trajectory.mode)
        params = _with_stops(sampling, tokenizer)
        stop_ids = frozenset(params.stop_token_ids)
        bounded = DeadlineExecutor(executor, deadline)
        text = ""
        while (ending := _ending(env, turn, max_turns, deadline)) is None:
            messages = env.messages()
            prompt_ids, new_segment = prompter.prompt(messages, text)
            if max_prompt_tokens is not None and len(prompt_ids) > max_prompt_tokens:
                ending = "context_length"
                break
            request = GenerationRequest(
                prompt_ids, dataclasses.replace(params, seed=turn_seed(params.seed, turn))
            )
            result = await generator.generate(request)
            sample, ended = _turn_sample(tokenizer, tools, stop_ids, turn, prompt_ids,
                                         new_segment, result)
            prompter.sampled(messages, prompt_ids, sample.completion_ids, ended)
            trajectory.samples.append(sample)
            text = sample.text
            step = env.step(text, [] if sample.malformed else sample.calls, bounded, turn)
            budget = max(deadline - time.monotonic(), 0.0) + step_grace_s
            finished, output = await _within(step, budget)
            turn += 1
            if not finished:
                ending = "timeout"
                trajectory.error = f"env.step of turn {turn - 1} ran past the episode deadline"
                break
            trajectory.records.extend(output.records)
        trajectory.termination = ending
    except Exception as err:  # an episode must never take the engine down with it
        trajectory.termination = "error"
        trajectory.error = f"{type(err).__name__} in turn {turn}: {err}"
    finally:
        trajectory.turns = turn
        trajectory.wall_s = time.monotonic() - start
    _finish(trajectory, env)
    return trajectory


async def release(executor: Any) -> None:
    """Let `executor` close what it holds on this event loop (`aclose`, when it has one)."""
    close = getattr(executor, "aclose", None)
    if close is not None:
        await close()


async def _within(step: Awaitable[Any], timeout_s: float) -> tuple[bool, Any]:
    """(True, result) of `step`, or (False, None) once it has run `timeout_s` (then cancelled).

    Unlike `asyncio.wait_for`, a `TimeoutError` raised *inside* the step stays an error of the
    step instead of passing for a timeout, and a step that ignores its cancellation is
    abandoned after a short wait instead of hanging the episode.
    """
    task = asyncio.ensure_future(step)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if done:
        return True, task.result()
    task.cancel()
    await asyncio.wait({task}, timeout=_CANCEL_WAIT_S)
    if task.done() and not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log it as never retrieved
    return False, None


def _finish(trajectory: Trajectory, env: Environment) -> None:
    """Read `done` and the outcome; an environment that fails here still yields a trajectory."""
    try:
        trajectory.done = bool(env.done)
        trajectory.outcome = float(env.outcome())
        info = getattr(env, "episode_info", None)
        if info is not None:
            trajectory.info = dict(info())
    except Exception as err:
        trajectory.outcome = 0.0
        if trajectory.error is None:
            trajectory.termination = "error"
            trajectory.error = f"{type(err).__name__} while scoring the outcome: {err}"
