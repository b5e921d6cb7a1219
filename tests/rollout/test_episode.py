"""The episode loop and the engine: prompts per mode, parsing rules, limits, and no escapes.

The loop logic is driven by a *scripted policy* -- a generator that answers with given texts,
encoded by the real tokenizer, with made-up log-probs -- because a randomly initialised model
never writes a tool call; the policy is not what these tests are about. Everything else is
real: a trained SentencePiece tokenizer, the ChatML tool template, the tool-call parser and the
`ToolExecutor`. One test runs the real Batcher + Sampler over the `tiny` model and checks that
the trajectory's log-probs are the model's own.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from orchestra_jax.envs.base import CallRecord, StepOutput
from orchestra_jax.rollout.engine import grouped_episodes, run_episodes
from orchestra_jax.rollout.episode import run_episode, task_id_of
from orchestra_jax.rollout.requests import GenerationRequest, GenerationResult, SamplingParams
from orchestra_jax.rollout.trajectory import DUPLICATE_CALL, OUT_OF_VOCABULARY
from orchestra_jax.tokenization import (
    CHATML_TOOLS_TEMPLATE,
    SentencePieceTokenizer,
    render_chat_template,
    train_sentencepiece,
)
from orchestra_jax.tokenization.tool_calls import ToolCall
from orchestra_jax.tools.executor import RetryPolicy, ToolExecutor
from orchestra_jax.tools.results import ToolError, ToolErrorKind, ToolResult

# ---- tools and a tokenizer for the tests ----------------------------------------------------

def _tool(name: str, **properties: str) -> dict[str, Any]:
    return {"type": "function", "function": {
        "name": name, "description": f"the {name} tool",
        "parameters": {"type": "object",
                       "properties": {k: {"type": v} for k, v in properties.items()},
                       "required": list(properties)}}}


TOOLS = [_tool("lookup", query="string"), _tool("answer", text="string"),
         _tool("flaky", x="string")]

_WORDS = ["lookup", "answer", "flaky", "query", "the", "capital", "of", "result", "for",
          "task", "is", "what", "Paris", "Oslo", "turn", "probe", "key"]


def chat_corpus(n: int = 120, seed: int = 0) -> list[str]:
    """Chats with tool calls and responses: enough for a vocabulary that encodes them well."""
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        w = rng.choice(_WORDS)
        docs.append(
            f"<|im_start|>user\nTask {i}: what is {w}?<|im_end|>\n<|im_start|>assistant\n"
            f'<tool_call>\n{{"name": "lookup", "arguments": {{"query": "{w} {i}"}}}}\n'
            f"</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\nresult for {w}\n"
            "</tool_response><|im_end|>\n"
        )
        docs.append(" ".join(rng.choice(_WORDS) for _ in range(25)))
    # The system turn with the tool schemas, so prompts come out short (fast tests).
    system = [{"role": "system", "content": "You answer with tools."}]
    docs += [render_chat_template(CHATML_TOOLS_TEMPLATE, system, tools=TOOLS)] * 20
    return docs


def make_tokenizer(directory) -> SentencePieceTokenizer:
    return train_sentencepiece(chat_corpus(), directory, vocab_size=600)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> SentencePieceTokenizer:
    return make_tokenizer(tmp_path_factory.mktemp("sp"))


# ---- the policy stand-in --------------------------------------------------------------------

def call_text(name: str, **arguments: Any) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


class ScriptedPolicy:
    """`generate` answers with `script(prompt_text)`, encoded + the end-of-turn token.

    Log-probs are distinct made-up numbers, so alignment errors show. `latency_s` is awaited
    (like generation time on an accelerator); `fail` makes every call raise.
    """

    def __init__(self, tokenizer, script: Callable[[str], str], *, latency_s: float = 0.0,
                 finish: str = "stop", extra_ids: tuple[int, ...] = (), fail: bool = False):
        self.tokenizer = tokenizer
        self.script = script
        self.latency_s = latency_s
        self.finish = finish
        self.extra_ids = extra_ids
        self.fail = fail
        self.requests: list[GenerationRequest] = []
        self.started_at: list[float] = []

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        self.requests.append(request)
        self.started_at.append(time.monotonic())
        await asyncio.sleep(self.latency_s)
        if self.fail:
            raise RuntimeError("generator exploded")
        prompt = self.tokenizer.decode(list(request.prompt_ids))
        ids = self.tokenizer.encode(self.script(prompt)) + list(self.extra_ids)
        if self.finish == "stop":
            ids.append(self.tokenizer.eos_token_id)
        logprobs = [-0.001 * (k + 1) - 0.1 * len(self.requests) for k in range(len(ids))]
        return GenerationResult(ids, logprobs, self.finish, params_version=7,
                                prompt_tokens=len(request.prompt_ids))


def turn_of(prompt: str) -> int:
    """The turn a prompt asks for: dialogue prompts hold one assistant header per turn so far,
    qa prompts (rendered by `ToyEnv`) say it."""
    if "Turn " in prompt:
        return int(prompt.rsplit("Turn ", 1)[1].split("\n", 1)[0].split("<", 1)[0])
    return prompt.count("<|im_start|>assistant") - 1


def by_turn(*replies: str) -> Callable[[str], str]:
    """A script that writes `replies[t]` in turn t (the last one again after that)."""
    return lambda prompt: replies[min(turn_of(prompt), len(replies) - 1)]


# ---- the test environment -------------------------------------------------------------------

class ToyEnv:
    """A task world with three tools, run through the real executor.

    `lookup` sleeps `lookup_latency_s` and returns text, `answer` ends the episode (outcome 1
    when the text is the task's gold answer), `flaky` fails with a retryable server error on
    its first `flaky_failures` attempts. `executed` lists (turn, tool, argument) of every tool
    body that really ran. `raise_at_turn` makes `step` raise; `hang_at_turn` makes it sleep
    forever outside the executor.
    """

    def __init__(self, mode: str = "dialogue", *, lookup_latency_s: float = 0.0,
                 flaky_failures: int = 1, raise_at_turn: int | None = None,
                 hang_at_turn: int | None = None, keep_assistant_turns: bool = True,
                 rewrite_history_at_turn: int | None = None):
        self.mode = mode
        self.keep_assistant_turns = keep_assistant_turns
        self.rewrite_history_at_turn = rewrite_history_at_turn
        self.lookup_latency_s = lookup_latency_s
        self.flaky_failures = flaky_failures
        self.raise_at_turn = raise_at_turn
        self.hang_at_turn = hang_at_turn
        self.executed: list[tuple[int, str, str]] = []
        self.messages_seen: list[list[dict[str, Any]]] = []

    def reset(self, task: dict[str, Any]) -> None:
        self.task = task
        self.turn = 0
        self.answer: str | None = None
        self.observations: list[str] = []
        self.flaky_attempts = 0
        self.chat = [{"role": "system", "content": "You answer with tools."},
                     {"role": "user", "content": f"Task {task['id']}: {task['question']}"}]

    def tools(self) -> list[dict[str, Any]]:
        return TOOLS

    def messages(self) -> list[dict[str, Any]]:
        if self.mode == "dialogue":
            messages = [m for m in self.chat
                        if self.keep_assistant_turns or m["role"] != "assistant"]
        else:
            notes = "\n".join(self.observations)
            messages = [self.chat[0], {"role": "user", "content":
                        f"Task {self.task['id']}: {self.task['question']}\n{notes}\n"
                        f"Turn {self.turn}"}]
        self.messages_seen.append(messages)
        return messages

    def _factory(self, call: ToolCall, turn: int):
        async def lookup() -> ToolResult:
            self.executed.append((turn, "lookup", call.arguments["query"]))
            await asyncio.sleep(self.lookup_latency_s)
            return ToolResult(f"{call.arguments['query']} is Paris", cost_usd=0.01)

        async def answer() -> ToolResult:
            self.executed.append((turn, "answer", call.arguments["text"]))
            return ToolResult("answer recorded", info={"answer": call.arguments["text"]})

        async def flaky() -> ToolResult:
            self.executed.append((turn, "flaky", call.arguments["x"]))
            self.flaky_attempts += 1
            if self.flaky_attempts <= self.flaky_failures:
                raise ToolError(ToolErrorKind.SERVER_ERROR, "backend hiccup")
            return ToolResult("flaky worked")

        return {"lookup": lookup, "answer": answer, "flaky": flaky}[call.name]

    async def step(self, assistant_text: str, calls, executor, turn: int) -> StepOutput:
        if turn == self.raise_at_turn:
            raise KeyError("the environment lost its state")
        if turn == self.hang_at_turn:
            await asyncio.sleep(3600)
        results = await asyncio.gather(
            *(executor.run(c.name, self._factory(c, turn)) for c in calls))
        out = StepOutput()
        if self.mode == "dialogue":
            self.chat.append({"role": "assistant", "content": assistant_text})
            if not calls:
                self.chat.append({"role": "user", "content": "Please call a tool."})
        for call, result in zip(calls, results, strict=True):
            out.records.append(CallRecord.from_result(turn, call, result))
            out.observations.append(result.observation)
            if call.name == "answer" and result.ok:
                self.answer = result.info["answer"]
            if self.mode == "dialogue":
                self.chat.append({"role": "tool", "content": result.observation})
        self.observations += out.observations
        if turn == self.rewrite_history_at_turn:  # e.g. a summary replacing the question
            self.chat[1] = {"role": "user", "content": "Summary: find the capital."}
        self.turn += 1
        return out

    @property
    def done(self) -> bool:
        return self.answer is not None

    def outcome(self) -> float:
        return float(self.answer == self.task["gold"])


TASK = {"id": "t1", "question": "what is the capital?", "gold": "Paris"}
LOOKUP = call_text("lookup", query="capital")
ANSWER = call_text("answer", text="Paris")


def executor(**overrides: Any) -> ToolExecutor:
    options = {"max_concurrency": 16, "timeout_s": 5.0,
               "retry": RetryPolicy(max_attempts=3, base_delay_s=0.01), "seed": 0}
    return ToolExecutor(**{**options, **overrides})


def play(env, policy, tokenizer, *, max_turns: int = 4, timeout_s: float = 10.0,
         ex: ToolExecutor | None = None, **kwargs: Any):
    async def main():
        return await asyncio.wait_for(run_episode(
            env, TASK, generator=policy, tokenizer=tokenizer, executor=ex or executor(),
            sampling=SamplingParams(max_new_tokens=64), max_turns=max_turns,
            timeout_s=timeout_s, **kwargs), timeout=30)
    return asyncio.run(main())


# ---- prompts ----------------------------------------------------------------------------

def test_dialogue_prompt_extends_the_previous_prompt_and_sampled_ids_token_exactly(tokenizer):
    env = ToyEnv("dialogue")
    policy = ScriptedPolicy(tokenizer, by_turn("Let me look.\n" + LOOKUP, ANSWER))
    traj = play(env, policy, tokenizer)
    assert (traj.termination, traj.done, traj.outcome, traj.turns) == ("answered", True, 1.0, 2)
    first, second = traj.samples
    assert second.prompt_ids[:len(first.prompt_ids) + len(first.completion_ids)] == [
        *first.prompt_ids, *first.completion_ids]
    assert not second.new_segment
    # The extended ids read exactly as the template renders the whole conversation.
    rendered = tokenizer.apply_chat_template(env.messages_seen[1], tools=TOOLS,
                                             add_generation_prompt=True)
    assert tokenizer.decode(second.prompt_ids) == rendered
    assert [r.tool for r in traj.records] == ["lookup", "answer"]
    assert [s.text for s in traj.samples] == ["Let me look.\n" + LOOKUP, ANSWER]


def test_dialogue_sequence_masks_exactly_the_sampled_tokens_with_their_logprobs(tokenizer):
    env = ToyEnv("dialogue")
    traj = play(env, ScriptedPolicy(tokenizer, by_turn(LOOKUP, LOOKUP, ANSWER)), tokenizer)
    (seq,) = traj.sequences()
    assert np.array_equal(seq.token_ids, traj.token_ids)
    assert seq.token_ids.tolist() == [*traj.samples[-1].prompt_ids,
                                      *traj.samples[-1].completion_ids]
    expected_mask = np.zeros(len(seq), np.int32)
    expected_logprobs = np.zeros(len(seq), np.float32)
    for s in traj.samples:
        start = len(s.prompt_ids)
        expected_mask[start:start + len(s.completion_ids)] = 1
        expected_logprobs[start:start + len(s.completion_ids)] = s.completion_logprobs
        assert seq.token_ids[start:start + len(s.completion_ids)].tolist() == s.completion_ids
    assert np.array_equal(seq.loss_mask, expected_mask)
    assert np.array_equal(seq.logprobs, expected_logprobs)
    assert seq.loss_mask.sum() == traj.completion_tokens
    assert np.all(seq.logprobs[seq.loss_mask == 0] == 0)


def test_a_length_cut_turn_is_closed_with_an_unsampled_end_of_turn_token(tokenizer):
    env = ToyEnv("dialogue")
    policy = ScriptedPolicy(tokenizer, by_turn(LOOKUP, ANSWER), finish="length")
    traj = play(env, policy, tokenizer)
    first, second = traj.samples
    assert first.finish_reason == "length" and tokenizer.eos_token_id not in first.completion_ids
    after = second.prompt_ids[len(first.prompt_ids) + len(first.completion_ids)]
    assert after == tokenizer.eos_token_id
    rendered = tokenizer.apply_chat_template(env.messages_seen[1], tools=TOOLS,
                                             add_generation_prompt=True)
    assert tokenizer.decode(second.prompt_ids) == rendered
    assert traj.loss_mask.sum() == traj.completion_tokens  # the closing token is not trained


def test_dialogue_without_stored_assistant_turns_renders_the_sampled_text_as_one(tokenizer):
    env = ToyEnv("dialogue", keep_assistant_turns=False)
    traj = play(env, ScriptedPolicy(tokenizer, by_turn(LOOKUP, ANSWER)), tokenizer)
    _, second = traj.samples
    assert not second.new_segment and len(traj.sequences()) == 1
    conversation = [*env.messages_seen[0], {"role": "assistant", "content": LOOKUP},
                    *env.messages_seen[1][len(env.messages_seen[0]):]]
    assert tokenizer.decode(second.prompt_ids) == tokenizer.apply_chat_template(
        conversation, tools=TOOLS, add_generation_prompt=True)


def test_a_rewritten_dialogue_history_starts_a_new_sequence(tokenizer):
    env = ToyEnv("dialogue", rewrite_history_at_turn=1)
    traj = play(env, ScriptedPolicy(tokenizer, by_turn(LOOKUP, LOOKUP, ANSWER)), tokenizer)
    assert [s.new_segment for s in traj.samples] == [True, False, True]
    assert traj.samples[2].prompt_ids == tokenizer.encode(tokenizer.apply_chat_template(
        env.messages_seen[2], tools=TOOLS, add_generation_prompt=True))
    first, second = traj.sequences()
    assert first.loss_mask.sum() == sum(len(s.completion_ids) for s in traj.samples[:2])
    assert second.loss_mask.sum() == len(traj.samples[2].completion_ids)


def test_qa_mode_renders_every_prompt_afresh_and_gives_one_sequence_per_turn(tokenizer):
    env = ToyEnv("qa")
    traj = play(env, ScriptedPolicy(tokenizer, by_turn(LOOKUP, ANSWER)), tokenizer)
    assert traj.termination == "answered" and traj.mode == "qa"
    for sample, messages in zip(traj.samples, env.messages_seen, strict=True):
        assert sample.new_segment
        assert sample.prompt_ids == tokenizer.encode(tokenizer.apply_chat_template(
            messages, tools=TOOLS, add_generation_prompt=True))
    assert "capital is Paris" in tokenizer.decode(traj.samples[1].prompt_ids)
    sequences = traj.sequences()
    assert len(sequences) == 2
    for seq, sample in zip(sequences, traj.samples, strict=True):
        assert np.array_equal(seq.token_ids, sample.sequence().token_ids)
        assert seq.loss_mask.tolist() == [0] * len(sample.prompt_ids) + [1] * len(
            sample.completion_ids)
    with pytest.raises(ValueError, match="2 sequences"):
        _ = traj.token_ids


def test_the_final_stop_token_is_not_part_of_the_parsed_text(tokenizer):
    traj = play(ToyEnv(), ScriptedPolicy(tokenizer, by_turn(ANSWER)), tokenizer)
    (sample,) = traj.samples
    assert sample.completion_ids[-1] == tokenizer.eos_token_id
    assert sample.text == ANSWER and sample.format_errors == []


def test_tokenizer_stop_tokens_are_added_to_the_sampling_params(tokenizer):
    policy = ScriptedPolicy(tokenizer, by_turn(ANSWER))
    play(ToyEnv(), policy, tokenizer)
    assert set(tokenizer.stop_token_ids) <= set(policy.requests[0].params.stop_token_ids)


# ---- parsing rules --------------------------------------------------------------------------

def test_malformed_turn_executes_nothing_is_flagged_and_the_episode_goes_on(tokenizer):
    broken = '<tool_call>\n{"name": "lookup", "arguments": {"query": }\n</tool_call>'
    env = ToyEnv("dialogue")
    traj = play(env, ScriptedPolicy(tokenizer, by_turn(broken, ANSWER)), tokenizer)
    bad, good = traj.samples
    assert bad.malformed and "malformed_json" in bad.format_errors and bad.calls == []
    assert not good.malformed
    assert [t for t, *_ in env.executed] == [1]  # only the answer of turn 1 ran
    assert [r.turn for r in traj.records] == [1]
    assert traj.termination == "answered" and traj.malformed_turns == 1
    masked = traj.sequences(mask_malformed=True)[0]
    start = len(bad.prompt_ids)
    assert masked.loss_mask[start:start + len(bad.completion_ids)].sum() == 0
    assert masked.loss_mask.sum() == len(good.completion_ids)


def test_a_valid_call_next_to_a_broken_one_runs_and_the_turn_is_not_malformed(tokenizer):
    text = '<tool_call>{"name": "nope", "arguments": {}}</tool_call>\n' + LOOKUP
    env = ToyEnv()
    traj = play(env, ScriptedPolicy(tokenizer, by_turn(text, ANSWER)), tokenizer)
    assert not traj.samples[0].malformed
    assert traj.samples[0].format_errors == ["unknown_tool"]
    assert env.executed[0] == (0, "lookup", "capital")


def test_only_the_first_call_per_tool_runs_in_a_turn(tokenizer):
    text = "\n".join([call_text("lookup", query="first"), call_text("flaky", x="a"),
                      call_text("lookup", query="second"), call_text("flaky", x="b")])
    env = ToyEnv(flaky_failures=1)
    traj = play(env, ScriptedPolicy(tokenizer, by_turn(text, ANSWER)), tokenizer)
    first = traj.samples[0]
    assert [c.arguments for c in first.calls] == [{"query": "first"}, {"x": "a"}]
    assert first.format_errors.count(DUPLICATE_CALL) == 2 and not first.malformed
    ran = [(tool, arg) for turn, tool, arg in env.executed if turn == 0]
    assert sorted(set(ran)) == [("flaky", "a"), ("lookup", "first")]
    flaky = next(r for r in traj.records if r.tool == "flaky")
    assert flaky.error_kind is None and flaky.attempts == 2  # retried by the executor


def test_undecodable_sampled_ids_are_format_errors_not_crashes(tokenizer):
    policy = ScriptedPolicy(tokenizer, by_turn(ANSWER), extra_ids=(tokenizer.vocab_size + 5,))
    traj = play(ToyEnv(), policy, tokenizer)
    assert traj.termination == "answered"
    assert traj.samples[0].format_errors == [OUT_OF_VOCABULARY]


# ---- limits ---------------------------------------------------------------------------------

def test_max_turns_ends_an_episode_that_never_answers(tokenizer):
    env = ToyEnv()
    traj = play(env, ScriptedPolicy(tokenizer, by_turn(LOOKUP)), tokenizer, max_turns=3)
    assert (traj.termination, traj.turns, traj.done, traj.outcome) == ("max_turns", 3, False, 0.0)
    assert len(traj.samples) == 3 and len(traj.records) == 3


def test_the_deadline_cuts_tools_and_no_generation_starts_after_it(tokenizer):
    env = ToyEnv(lookup_latency_s=0.3)
    policy = ScriptedPolicy(tokenizer, by_turn(LOOKUP))
    traj = play(env, policy, tokenizer, max_turns=10, timeout_s=0.5)
    assert traj.termination == "timeout"
    assert len(policy.requests) == 2 == traj.turns
    kinds = [r.error_kind for r in traj.records]
    assert kinds == [None, ToolErrorKind.DEADLINE]
    assert traj.wall_s < 0.5 + 0.3
    start = policy.started_at[0]
    assert all(t - start < 0.5 for t in policy.started_at)


def test_a_step_that_hangs_outside_the_executor_is_abandoned(tokenizer):
    env = ToyEnv(hang_at_turn=0)
    t0 = time.monotonic()
    traj = play(env, ScriptedPolicy(tokenizer, by_turn(LOOKUP)), tokenizer, timeout_s=0.2,
                step_grace_s=0.1)
    assert traj.termination == "timeout" and "deadline" in traj.error
    assert time.monotonic() - t0 < 2.0


def test_the_prompt_budget_ends_the_episode_before_generating(tokenizer):
    policy = ScriptedPolicy(tokenizer, by_turn(LOOKUP))
    traj = play(ToyEnv(), policy, tokenizer, max_prompt_tokens=10)
    assert traj.termination == "context_length" and policy.requests == []


# ---- nothing escapes ------------------------------------------------------------------------

def test_an_exception_in_env_step_ends_the_episode_with_error(tokenizer):
    env = ToyEnv(raise_at_turn=1)
    traj = play(env, ScriptedPolicy(tokenizer, by_turn(LOOKUP)), tokenizer)
    assert traj.termination == "error"
    assert "KeyError" in traj.error and "turn 1" in traj.error
    assert len(traj.samples) == 2 and [r.turn for r in traj.records] == [0]


def test_a_failing_generator_is_an_episode_error(tokenizer):
    traj = play(ToyEnv(), ScriptedPolicy(tokenizer, by_turn(LOOKUP), fail=True), tokenizer)
    assert traj.termination == "error" and "generator exploded" in traj.error
    assert traj.samples == [] and traj.turns == 0


def test_a_generator_reply_with_misaligned_logprobs_is_an_episode_error(tokenizer):
    class Misaligned(ScriptedPolicy):
        async def generate(self, request):
            result = await super().generate(request)
            return GenerationResult(result.token_ids, result.logprobs[:-1], "stop")

    traj = play(ToyEnv(), Misaligned(tokenizer, by_turn(LOOKUP)), tokenizer)
    assert traj.termination == "error" and "log-probs" in traj.error and traj.samples == []


def test_a_broken_episode_does_not_disturb_the_others_in_the_engine(tokenizer):
    envs = [ToyEnv(raise_at_turn=0), ToyEnv(), ToyEnv(hang_at_turn=0), ToyEnv()]
    tasks = [dict(TASK, id=f"t{i}") for i in range(4)]

    async def main():
        return await asyncio.wait_for(run_episodes(
            list(zip(envs, tasks, strict=True)), generator=ScriptedPolicy(
                tokenizer, by_turn(LOOKUP, ANSWER)),
            tokenizer=tokenizer, executor=executor(), sampling=SamplingParams(),
            max_turns=4, timeout_s=0.5), timeout=30)

    trajs = asyncio.run(main())
    assert [t.task_id for t in trajs] == ["t0", "t1", "t2", "t3"]
    assert [t.termination for t in trajs] == ["error", "answered", "timeout", "answered"]


# ---- the engine -----------------------------------------------------------------------------

def test_engine_has_no_turn_barrier(tokenizer):
    """A fast episode finishes all its turns while a slow one still waits on its first tool."""
    slow, fast = ToyEnv(lookup_latency_s=0.6), ToyEnv(lookup_latency_s=0.0)
    policy = ScriptedPolicy(tokenizer, by_turn(LOOKUP, LOOKUP, ANSWER), latency_s=0.01)

    async def main():
        return await run_episodes([(slow, TASK), (fast, TASK)], generator=policy,
                                  tokenizer=tokenizer, executor=executor(),
                                  sampling=SamplingParams(), max_turns=3, timeout_s=10)

    slow_traj, fast_traj = asyncio.run(main())
    assert slow_traj.termination == fast_traj.termination == "answered"
    assert fast_traj.wall_s < 0.3 < 0.6 < slow_traj.wall_s


def test_engine_runs_groups_concurrently_with_distinct_seeds(tokenizer):
    tasks = [dict(TASK, id=f"t{i}") for i in range(4)]
    specs = grouped_episodes(tasks, lambda: ToyEnv(lookup_latency_s=0.2), group_size=3)
    policy = ScriptedPolicy(tokenizer, by_turn(LOOKUP, LOOKUP, ANSWER))

    async def main():
        return await run_episodes(specs, generator=policy, tokenizer=tokenizer,
                                  executor=executor(max_concurrency=64),
                                  sampling=SamplingParams(seed=3), max_turns=3, timeout_s=10)

    t0 = time.monotonic()
    trajs = asyncio.run(main())
    assert time.monotonic() - t0 < 2 * 0.2 + 0.5  # 12 episodes x 2 lookups, all overlapped
    assert [t.group for t in trajs] == [g for g in range(4) for _ in range(3)]
    assert [t.task_id for t in trajs] == [f"t{g}" for g in range(4) for _ in range(3)]
    assert all(t.termination == "answered" for t in trajs)
    seeds = [r.params.seed for r in policy.requests]
    assert None not in seeds and len(set(seeds)) == len(seeds) == 36


def test_engine_rejects_a_shared_environment(tokenizer):
    env = ToyEnv()
    with pytest.raises(ValueError, match="share"):
        asyncio.run(run_episodes([(env, TASK), (env, TASK)], generator=None,
                                 tokenizer=tokenizer, executor=None,
                                 sampling=SamplingParams(), max_turns=1, timeout_s=1))


# ---- logging --------------------------------------------------------------------------------

def test_to_json_holds_texts_arguments_and_totals(tokenizer):
    traj = play(ToyEnv(), ScriptedPolicy(tokenizer, by_turn(LOOKUP, ANSWER)), tokenizer)
    data = json.loads(traj.to_json())
    assert data["termination"] == "answered" and data["outcome"] == 1.0
    assert [s["text"] for s in data["samples"]] == [LOOKUP, ANSWER]
    assert data["records"][0]["arguments"] == {"query": "capital"}
    assert data["cost_usd"] == pytest.approx(0.01) and traj.cost_usd == pytest.approx(0.01)
    assert "token_ids" not in json.dumps(data)
    assert data["completion_tokens"] == traj.completion_tokens > 0


# ---- the real batcher and sampler over the tiny model ---------------------------------------

def test_real_batcher_logprobs_are_the_models_own_logprobs_of_the_dialogue_sequence(tokenizer):
    """Random `tiny` weights, the real Sampler behind the real Batcher, a dialogue episode: the
    trajectory's mask marks the sampled tokens and its log-probs equal the model's log-probs of
    those tokens recomputed over the whole sequence in one forward pass."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from orchestra_jax.models import get_preset, init_decoder
    from orchestra_jax.rollout.batcher import Batcher
    from orchestra_jax.rollout.sampler import Sampler
    from orchestra_jax.sharding.mesh import single_device_mesh

    model = init_decoder(get_preset("tiny", vocab_size=tokenizer.vocab_size), seed=0)
    sampler = Sampler(model, single_device_mesh(), pad_id=tokenizer.pad_token_id,
                      stop_token_ids=tokenizer.stop_token_ids, seed=0)

    async def main():
        batcher = Batcher(sampler, max_batch_size=4)
        try:
            return await run_episodes(
                [(ToyEnv("dialogue"), dict(TASK, id=f"t{i}")) for i in range(2)],
                generator=batcher, tokenizer=tokenizer, executor=executor(),
                sampling=SamplingParams(max_new_tokens=10, temperature=1.0, seed=0),
                max_turns=3, timeout_s=120)
        finally:
            await batcher.aclose()

    trajs = asyncio.run(main())
    sequences = [t.sequences() for t in trajs]
    for traj, seqs in zip(trajs, sequences, strict=True):
        assert traj.termination == "max_turns" and traj.error is None
        assert len(seqs) == 1 and all(not s.new_segment for s in traj.samples[1:])
        assert {s.params_version for s in traj.samples} == {sampler.params_version}
    # Recompute: both sequences in one jitted forward, right-padded (causal attention: the
    # padding cannot change the logits of the positions before it).
    length = max(len(seqs[0]) for seqs in sequences)
    ids = np.full((len(trajs), length), tokenizer.pad_token_id, np.int32)
    for row, (seq,) in enumerate(sequences):
        ids[row, :len(seq)] = seq.token_ids
    graphdef, state = nnx.split(model)

    @jax.jit
    def token_logprobs(state, ids):
        logits = nnx.merge(graphdef, state)(ids, jnp.ones_like(ids)).logits
        logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        # The token at position i is predicted by the logits at position i - 1.
        return jnp.take_along_axis(logp[:, :-1], ids[:, 1:, None], axis=-1)[..., 0]

    recomputed = np.asarray(token_logprobs(state, jnp.asarray(ids)))
    for row, ((seq,), traj) in enumerate(zip(sequences, trajs, strict=True)):
        sampled = seq.loss_mask[1:] == 1
        assert sampled.sum() == traj.completion_tokens == sum(
            len(s.completion_ids) for s in traj.samples) > 0
        np.testing.assert_allclose(seq.logprobs[1:][sampled],
                                   recomputed[row, :len(seq) - 1][sampled], atol=1e-4)
        assert np.all(seq.logprobs[seq.loss_mask == 0] == 0)


# ---- task ids --------------------------------------------------------------------------------

class _Obj:
    def __init__(self, **attrs: Any):
        self.__dict__.update(attrs)


def test_task_id_of_prefers_task_id_then_id_for_mappings_and_objects():
    assert task_id_of({"task_id": "a", "id": "b"}) == "a"
    assert task_id_of({"task_id": None, "id": 7}) == "7"
    assert task_id_of(_Obj(task_id="a", id="b")) == "a"
    assert task_id_of(_Obj(id=3), group=5) == "3"


def test_task_id_of_falls_back_to_empty_or_to_the_group():
    assert task_id_of({"question": "q"}) == ""
    assert task_id_of(_Obj(id=None)) == ""
    assert task_id_of({"question": "q"}, group=4) == "task-4"
    assert task_id_of("plain string task", group=0) == "task-0"

