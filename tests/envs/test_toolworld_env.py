"""The toolworld environment driven turn by turn: real simulated experts, real BM25 search over
the world's corpus, the real sandbox and the real executor (no mocks)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from orchestra_jax.envs.base import Environment
from orchestra_jax.envs.toolworld import ToolWorld, WorldConfig, call_text
from orchestra_jax.envs.toolworld.environment import LAST_TURN_NOTE, CodeRunner, tool_schemas
from orchestra_jax.envs.toolworld.routes import Route
from orchestra_jax.envs.toolworld.situations import situation
from orchestra_jax.envs.toolworld.vocabulary import (
    call_piece_texts,
    prompt_lengths,
    render_prompt,
    train_world_tokenizer,
)
from orchestra_jax.tokenization.tool_calls import ToolCall, parse_tool_calls
from orchestra_jax.tools.executor import ToolExecutor
from orchestra_jax.tools.pricing import SANDBOX_USD_PER_SECOND, Price
from orchestra_jax.tools.results import ToolErrorKind


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> ToolWorld:
    return ToolWorld(WorldConfig(seed=0, cache_dir=str(tmp_path_factory.mktemp("tw"))))


def family_tasks(world: ToolWorld, family: str, n: int = 40, **kwargs):
    return [t for t in world.tasks("test", 4 * n, **kwargs) if t.family == family][:n]


def call(tool: str, model: object) -> ToolCall:
    return ToolCall(tool, {"model": model}, (0, 0))


async def steps(env, task, turns: list[list[ToolCall]]):
    env.reset(task)
    executor = ToolExecutor()
    outputs = []
    for turn, calls in enumerate(turns):
        outputs.append(await env.step("", calls, executor, turn))
    return outputs


def test_env_follows_the_environment_protocol_in_qa_mode(world: ToolWorld) -> None:
    env = world.make_env()
    assert isinstance(env, Environment) and env.mode == "qa"
    env.reset(world.tasks("test", 1)[0])
    assert [s["name"] for s in env.tools()] == ["search", "enhance_reasoning", "answer"]
    assert not env.done and env.outcome() == 0.0


def test_prompt_shows_question_roster_and_instruction_but_no_hints(world: ToolWorld) -> None:
    env = world.make_env()
    task = family_tasks(world, "lookup", 1, preference="avoid_frontier")[0]
    env.reset(task)
    system, user = env.messages()
    assert user["content"].startswith(task.question)
    assert f"Avoid {world.frontier_alias}." in user["content"]
    for alias in world.aliases:
        assert f"\n{alias} " in system["content"]
    rendered = render_prompt(env.messages(), env.tools())
    assert task.answer not in rendered  # the gold (an expert hint) never reaches the policy
    for wrong in task.spec.distractors:
        assert wrong not in rendered
    env.reset(family_tasks(world, "lookup", 1)[0])
    assert "Avoid" not in env.messages()[1]["content"]


def test_malformed_calls_and_unknown_aliases_are_refused_and_the_episode_goes_on(
    world: ToolWorld,
) -> None:
    env = world.make_env()
    task = family_tasks(world, "easy", 1)[0]
    bad = [
        [call("search", "gpt-9")],  # unknown alias
        [ToolCall("answer", {}, (0, 0))],  # no model argument
        [call("answer", 7)],  # not a string
        [ToolCall("delete_everything", {"model": "mini"}, (0, 0))],  # unknown tool
        [],  # a malformed turn: nothing parsed
    ]
    outputs = asyncio.run(steps(env, task, [*bad, [call("answer", "frontier")]]))
    kinds = [out.records[0].error_kind if out.records else None for out in outputs[:-1]]
    assert kinds == [
        ToolErrorKind.INVALID_ARGUMENTS,
        ToolErrorKind.INVALID_ARGUMENTS,
        ToolErrorKind.INVALID_ARGUMENTS,
        ToolErrorKind.UNKNOWN_TOOL,
        None,
    ]
    assert all(r.cost_usd == 0.0 for out in outputs[:-1] for r in out.records)
    assert "gpt-9" in outputs[0].observations[0] and "no tool was called" in (
        outputs[4].observations[0]
    )
    assert env.done and outputs[-1].records[0].error_kind is None
    # the parser side: garbage text gives no call, a wrong enum value an error, never a raise
    calls, errors = parse_tool_calls("<tool_call>{not json", tools=env.tools())
    assert calls == [] and errors
    openai = tool_schemas(world.aliases, style="openai")
    calls, errors = parse_tool_calls(call_text("answer", "gpt-9"), tools=openai)
    assert calls == [] and errors[0].kind == "invalid_value"


def test_a_tool_the_task_does_not_offer_is_refused(world: ToolWorld) -> None:
    env = world.make_env()
    task = dataclasses.replace(world.tasks("test", 1)[0], tools=("answer",), aliases=("mini",))
    env.reset(task)
    assert [s["name"] for s in env.tools()] == ["answer"]
    out = asyncio.run(steps(env, task, [[call("search", "mini")], [call("answer", "open")]]))
    assert out[0].records[0].error_kind == ToolErrorKind.UNKNOWN_TOOL
    assert out[1].records[0].error_kind == ToolErrorKind.INVALID_ARGUMENTS
    assert "mini" in env.roster() and "frontier" not in env.roster()


def test_search_really_retrieves_the_supporting_document(world: ToolWorld) -> None:
    env = world.make_env()
    for task in family_tasks(world, "lookup", 10):
        asyncio.run(steps(env, task, [[call("search", "mini")]]))
        if task.spec.support[0] in env.state.seen_doc_ids():
            assert situation(task, env.state) == "lookup+docs"
            notes = env.messages()[1]["content"]
            assert "search by mini found:" in notes and task.answer in notes
            break
    else:
        pytest.fail("mini's search never found a lookup's document")


def test_code_really_runs_and_a_correct_result_changes_the_situation(world: ToolWorld) -> None:
    env = world.make_env()
    printed_gold = 0
    tasks = family_tasks(world, "arithmetic", 12)
    for task in tasks:
        asyncio.run(steps(env, task, [[call("enhance_reasoning", "coder")]]))
        (run,) = env.state.code_runs
        assert run.exit_kind is None
        if run.output.strip() == task.answer:
            printed_gold += 1
            assert situation(task, env.state) == "arithmetic+result"
            assert f"printed: {task.answer}" in env.messages()[1]["content"]
    assert printed_gold >= len(tasks) - 2  # the coder's programs are right 99% of the time


def test_code_runner_runs_a_program_once_and_reuses_its_output() -> None:
    runner = CodeRunner(cache=True)

    async def twice():
        return await runner("print(6 * 7)\n"), await runner("print(6 * 7)\n")

    first, second = asyncio.run(twice())
    assert first.stdout.strip() == "42" and second is first and len(runner.wall_s) == 1


def test_tool_time_is_charged_nominally_so_results_are_deterministic(world: ToolWorld) -> None:
    task = family_tasks(world, "multihop", 1)[0]
    route = [[call("search", "mini")], [call("enhance_reasoning", "coder")]]
    first = asyncio.run(steps(world.make_env(), task, route))
    again = asyncio.run(steps(world.make_env(), task, route))
    a = [(r.cost_usd, r.latency_s) for o in first for r in o.records]
    b = [(r.cost_usd, r.latency_s) for o in again for r in o.records]
    assert a == b
    search, code = first[0].records[0], first[1].records[0]
    expert_price = world.pool["coder"].price
    assert code.cost_usd == pytest.approx(
        expert_price.cost_usd(code.tokens_in, code.tokens_out)
        + world.config.sandbox_charge_s * SANDBOX_USD_PER_SECOND
    )
    assert search.cost_usd == pytest.approx(
        world.pool["mini"].price.cost_usd(search.tokens_in, search.tokens_out)
    )


def test_a_price_schedule_is_charged_and_shown(world: ToolWorld) -> None:
    task = world.tasks("test", 1)[0]
    dear = Price(100.0, 200.0)
    priced = dataclasses.replace(task, prices=(("open", dear),))
    env = world.make_env()
    (out,) = asyncio.run(steps(env, priced, [[call("answer", "open")]]))
    record = out.records[0]
    assert record.cost_usd == pytest.approx(dear.cost_usd(record.tokens_in, record.tokens_out))
    assert record.cost_usd > 100 * world.pool["open"].price.cost_usd(
        record.tokens_in, record.tokens_out
    )
    env.reset(priced)
    line = next(x for x in env.roster().splitlines() if x.startswith("open "))
    env.reset(task)
    plain = next(x for x in env.roster().splitlines() if x.startswith("open "))
    assert int(line.split()[1]) > 100 * int(plain.split()[1])


def test_episodes_are_deterministic_across_worlds(world: ToolWorld, tmp_path) -> None:
    again = ToolWorld(WorldConfig(seed=0, cache_dir=str(tmp_path)))
    tasks = world.tasks("test", 24)
    route = world.routes()["route:frontier-all"]
    assert world.evaluate(route, tasks) == again.evaluate(route, tasks)
    policy = world.random_policy(3)
    assert world.evaluate(policy, tasks) == again.evaluate(again.random_policy(3), tasks)


@pytest.mark.parametrize(("template", "first", "after_search"),
                         [("chatml_tools", 256, 384), ("compact", 128, 256)])
def test_prompts_fit_the_token_budgets(world: ToolWorld, tmp_path, template, first,
                                       after_search) -> None:
    """First turn <= 256 tokens, after a search <= 384, with a 2000-piece vocabulary trained
    on the world's text, on neutral, avoid-frontier and augmented tasks; the compact template
    (tools named on one line) halves both."""
    tokenizer = train_world_tokenizer(world, tmp_path / "sp", vocab_size=2000, n_tasks=150,
                                      template=template)
    for tasks in (
        world.tasks("test", 120),
        world.tasks("test", 120, preference="avoid_frontier"),
        world.tasks("train", 120, preference="mix", tool_subsets=True, price_schedules=True),
    ):
        lengths = prompt_lengths(world, tokenizer, tasks)
        assert lengths["first_max"] <= first, lengths
        assert lengths["after_search_max"] <= after_search, lengths
    env = world.make_env()
    env.reset(world.tasks("test", 1)[0])
    prompt = tokenizer.apply_chat_template(env.messages(), tools=env.tools(),
                                           add_generation_prompt=True)
    assert prompt == render_prompt(env.messages(), env.tools(), template)
    assert ("Tools: search enhance_reasoning answer<|im_end|>" in prompt) == (
        template == "compact")


def test_split_call_pieces_are_three_tools_then_six_aliases(world: ToolWorld) -> None:
    pieces = call_piece_texts(world.aliases, "split")
    tools, aliases = pieces[:3], pieces[3:]
    assert len(aliases) == len(world.aliases) == 6
    for name, piece in zip(("search", "enhance_reasoning", "answer"), tools, strict=True):
        assert f'"{name}"' in piece and not any(a in piece for a in world.aliases), piece
    assert {t + a for t in tools for a in aliases} == {
        call_text(tool, alias) for tool in ("search", "enhance_reasoning", "answer")
        for alias in world.aliases}
    assert call_piece_texts(world.aliases, "none") == []
    with pytest.raises(ValueError, match=r"call_pieces.*'both'"):
        call_piece_texts(world.aliases, "both")


def test_an_unknown_prompt_template_is_named() -> None:
    with pytest.raises(ValueError, match=r"'hermes'.*known"):
        render_prompt([{"role": "user", "content": "hi"}], [], "hermes")


def test_search_turn_notes_show_what_was_found(world: ToolWorld) -> None:
    task = family_tasks(world, "multihop", 1)[0]
    (result,) = world.evaluate(
        Route("probe", (("search", "mini"), ("answer", "mini"))), [task], transcript=True
    )
    after_search = result.transcript[1][0][1]["content"]
    assert after_search.startswith(task.question)
    assert "Notes:\nsearch by mini found:" in after_search


def test_only_the_last_allowed_turn_says_it_is_the_last(world: ToolWorld) -> None:
    task = family_tasks(world, "multihop", 1)[0]
    route = Route("probe", (("search", "mini"), ("enhance_reasoning", "coder"), ("answer", "mini")))
    noted = ToolWorld(dataclasses.replace(world.config, last_turn_note=True))
    (result,) = noted.evaluate(route, [task], transcript=True)
    users = [messages[1]["content"] for messages, _ in result.transcript]
    assert noted.max_turns == len(users) == 3
    assert [u.endswith(f"\n{LAST_TURN_NOTE}") for u in users] == [False, False, True]
    assert users[2].startswith(task.question) and "Notes:\nsearch by mini found:" in users[2]

    (plain,) = world.evaluate(route, [task], transcript=True)
    assert not any(LAST_TURN_NOTE in m[1]["content"] for m, _ in plain.transcript)
    one_turn = noted.make_env()
    one_turn.max_turns = 1
    one_turn.reset(task)
    assert one_turn.messages()[1]["content"] == f"{task.question}\n{LAST_TURN_NOTE}"


@pytest.mark.parametrize(("call_pieces", "pieces_per_call"), [("call", 1), ("split", 2)])
def test_the_training_loops_episodes_agree_with_the_scripted_harness(
    world: ToolWorld, tmp_path, call_pieces: str, pieces_per_call: int
) -> None:
    """The same routes and random policy, played by the rollout's episode loop (rendered
    prompts, the world's vocabulary with one piece per call -- or a tool piece and an alias
    piece --, the parser) give the same outcomes, costs and per-alias calls as
    `run_scripted`."""
    from orchestra_jax.rollout.scripted import scripted_episodes

    tokenizer = train_world_tokenizer(world, tmp_path / "sp", vocab_size=2000, n_tasks=100,
                                      call_pieces=call_pieces)
    tasks = world.tasks("test", 16, preference="avoid_frontier")
    for policy in (world.routes()["route:frontier-all"], world.random_policy(5)):
        trajectories = asyncio.run(
            scripted_episodes(
                tasks,
                world.make_env,
                tokenizer=tokenizer,
                executor=ToolExecutor(),
                choose_for=world.chooser_for(policy),
                max_turns=world.max_turns,
                max_prompt_tokens=512,
            )
        )
        mine = world.evaluate(policy, tasks)
        for trajectory, result in zip(trajectories, mine, strict=True):
            assert trajectory.error is None
            assert trajectory.outcome == result.outcome
            assert trajectory.cost_usd == pytest.approx(result.cost_usd)
            assert world.count_calls(trajectory) == {
                a: result.calls_per_alias.get(a, 0) for a in world.aliases
            }
            # One piece per call (or two when split), then the end of the turn.
            assert all(len(s.completion_ids) == pieces_per_call + 1 and s.completion_ids[-1]
                       == tokenizer.eos_token_id for s in trajectory.samples)
            assert not any(s.malformed for s in trajectory.samples)
    assert world.preference_of(tasks[0])[world.aliases.index(world.frontier_alias)] < 0
    choosers = world.scripted_choosers()
    assert set(choosers) == {"random", *world.routes()}
