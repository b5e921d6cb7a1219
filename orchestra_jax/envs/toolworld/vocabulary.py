"""The world's text for a SentencePiece vocabulary, and the prompt lengths it gives.

Why here: the tiny policy reads toolworld prompts through a vocabulary trained on toolworld
text, and its whole RL run must fit in minutes on a CPU, so prompt length is a budget
(first turn <= 256 tokens; after a search <= 384). These helpers produce that text from real
episodes (the random policy's prompts, every turn, rendered with the ChatML tools template),
train the vocabulary, and measure prompts the way the episode loop will render them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from statistics import mean
from typing import Any

from orchestra_jax.envs.toolworld.environment import call_text
from orchestra_jax.envs.toolworld.routes import Route, run_scripted
from orchestra_jax.envs.toolworld.tasks import WorldTask
from orchestra_jax.envs.toolworld.world import ToolWorld
from orchestra_jax.sync import run_coroutine
from orchestra_jax.tokenization import (
    SentencePieceTokenizer,
    named_chat_template,
    render_chat_template,
    train_sentencepiece,
)
from orchestra_jax.tools.qa_tools import ANSWER, SEARCH, TOOL_NAMES


def render_prompt(
    messages: Sequence[dict[str, Any]],
    tools: Sequence[dict[str, Any]],
    template: str = "chatml_tools",
) -> str:
    """The prompt text the episode loop renders for these messages and tool schemas with the
    vocabulary's `template` (a name in `tokenization.NAMED_CHAT_TEMPLATES`)."""
    return render_chat_template(
        named_chat_template(template), list(messages), tools=list(tools),
        add_generation_prompt=True,
    )


def call_texts(aliases: Sequence[str]) -> list[str]:
    """Every single call a policy can write (`call_text` for each tool and alias)."""
    return [call_text(tool, alias) for tool in TOOL_NAMES for alias in aliases]


#: How a call becomes pieces of the world's vocabulary (`train_world_tokenizer`'s
#: `call_pieces`): "call" makes each complete call one piece (18 choices in one token);
#: "split" makes a tool piece (`<tool_call>{"name":"search","arguments":{"model":"`) and an
#: alias piece (`mini"}}</tool_call>`), so a turn picks its tool among 3 and then its expert
#: among 6 -- the tool decision, which most decides the outcome, gets a third of the samples
#: instead of an eighteenth; "none" leaves calls to the learned pieces.
CALL_PIECES = ("call", "split", "none")


def call_piece_texts(aliases: Sequence[str], call_pieces: str = "call") -> list[str]:
    """The user-defined pieces that `call_pieces` (one of `CALL_PIECES`) adds to a world
    vocabulary; ValueError naming the option otherwise."""
    if call_pieces == "call":
        return call_texts(aliases)
    if call_pieces == "none":
        return []
    if call_pieces != "split":
        raise ValueError(f"call_pieces must be one of {CALL_PIECES}, got {call_pieces!r}")
    pieces = []
    for tool in TOOL_NAMES:
        text = call_text(tool, aliases[0])
        pieces.append(text[: text.rindex(aliases[0])])
    for alias in aliases:
        text = call_text(TOOL_NAMES[0], alias)
        pieces.append(text[text.rindex(alias):])
    return pieces


def call_piece_groups(aliases: Sequence[str], call_pieces: str = "call") -> list[str]:
    """The tool of each of `call_piece_texts(aliases, call_pieces)` when every piece is a whole
    call ("call"); empty otherwise (a "split" alias piece belongs to no one tool)."""
    if call_pieces != "call":
        call_piece_texts(aliases, call_pieces)  # a ValueError naming a bad option
        return []
    return [tool for tool in TOOL_NAMES for _ in aliases]


async def _turn_prompts(
    world: ToolWorld, tasks: Sequence[WorldTask], policy: Any, template: str
) -> list[str]:
    results = await run_scripted(world, policy, tasks, transcript=True)
    env = world.make_env()
    prompts = []
    for task, result in zip(tasks, results, strict=True):
        env.reset(task)
        schemas = env.tools()
        prompts += [render_prompt(m, schemas, template) for m, _ in result.transcript]
    return prompts


def training_texts(
    world: ToolWorld, n_tasks: int = 400, *, seed: int = 0, template: str = "chatml_tools"
) -> list[str]:
    """Text to train the world's vocabulary on: prompts of every turn of random-policy
    episodes on training tasks (mixed preferences, augmented) rendered with `template`, the
    calls, the documents."""
    named_chat_template(template)
    tasks = world.tasks(
        "train", n_tasks, preference="mix", tool_subsets=True, price_schedules=True
    )
    plain = world.tasks("train", n_tasks)
    prompts = run_coroutine(_turn_prompts(world, tasks, world.random_policy(seed), template))
    prompts += run_coroutine(
        _turn_prompts(world, plain, world.random_policy(seed + 1), template)
    )
    calls = call_texts(world.aliases) * 20
    documents = [f"{d.title}\n{d.text}" for d in world.encyclopedia.documents]
    return [*prompts, *calls, *documents]


def train_world_tokenizer(
    world: ToolWorld,
    out_dir: str | Path,
    *,
    vocab_size: int = 2000,
    n_tasks: int = 400,
    call_pieces: str = "call",
    template: str = "chatml_tools",
) -> SentencePieceTokenizer:
    """A SentencePiece vocabulary trained on `training_texts`, saved to `out_dir` with
    `template` (a name in `tokenization.NAMED_CHAT_TEMPLATES`) as its chat template, which the
    episode loop renders.

    `call_pieces` (`CALL_PIECES`): "call" makes every complete call
    (`<tool_call>{...}</tool_call>`) one piece, so a policy's turn is a single token, as in the
    toy world; "split" makes it two (a tool piece, then an alias piece).
    """
    extra = call_piece_texts(world.aliases, call_pieces)
    texts = training_texts(world, n_tasks, template=template)
    return train_sentencepiece(texts, out_dir, vocab_size, extra_special_tokens=extra,
                               chat_template=named_chat_template(template))


def prompt_lengths(
    world: ToolWorld, tokenizer: Any, tasks: Sequence[WorldTask], *, searcher: str = "mini"
) -> dict[str, float]:
    """Token counts of the first-turn prompt and of the prompt after one search by `searcher`,
    rendered as the episode loop renders them (the tokenizer's own chat template).

    Returns max and mean of each over `tasks` (`first_max`, `first_mean`, `after_search_max`,
    `after_search_mean`).
    """
    route = Route("probe", ((SEARCH, searcher), (ANSWER, searcher)))

    async def collect() -> list[Any]:
        return await run_scripted(world, route, tasks, transcript=True)

    results = run_coroutine(collect())
    env = world.make_env()
    first, after = [], []
    for task, result in zip(tasks, results, strict=True):
        env.reset(task)
        schemas = env.tools()
        lengths = [
            len(tokenizer.encode(tokenizer.apply_chat_template(
                messages, tools=schemas, add_generation_prompt=True)))
            for messages, _ in result.transcript
        ]
        first.append(lengths[0])
        if len(lengths) > 1:
            after.append(lengths[1])
    return {
        "first_max": float(max(first)),
        "first_mean": mean(first),
        "after_search_max": float(max(after)) if after else 0.0,
        "after_search_mean": mean(after) if after else 0.0,
    }


__all__ = [
    "CALL_PIECES",
    "call_piece_groups",
    "call_piece_texts",
    "call_texts",
    "prompt_lengths",
    "render_prompt",
    "train_world_tokenizer",
    "training_texts",
]
