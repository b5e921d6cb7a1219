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
    CHATML_TOOLS_TEMPLATE,
    SentencePieceTokenizer,
    render_chat_template,
    train_sentencepiece,
)
from orchestra_jax.tools.qa_tools import ANSWER, SEARCH, TOOL_NAMES


def render_prompt(messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]]) -> str:
    """The prompt text the episode loop renders for these messages and tool schemas."""
    return render_chat_template(
        CHATML_TOOLS_TEMPLATE, list(messages), tools=list(tools), add_generation_prompt=True
    )


def call_texts(aliases: Sequence[str]) -> list[str]:
    """Every single call a policy can write (`call_text` for each tool and alias)."""
    return [call_text(tool, alias) for tool in TOOL_NAMES for alias in aliases]


async def _turn_prompts(world: ToolWorld, tasks: Sequence[WorldTask], policy: Any) -> list[str]:
    results = await run_scripted(world, policy, tasks, transcript=True)
    env = world.make_env()
    prompts = []
    for task, result in zip(tasks, results, strict=True):
        env.reset(task)
        schemas = env.tools()
        prompts += [render_prompt(messages, schemas) for messages, _ in result.transcript]
    return prompts


def training_texts(world: ToolWorld, n_tasks: int = 400, *, seed: int = 0) -> list[str]:
    """Text to train the world's vocabulary on: prompts of every turn of random-policy
    episodes on training tasks (mixed preferences, augmented), the calls, the documents."""
    tasks = world.tasks(
        "train", n_tasks, preference="mix", tool_subsets=True, price_schedules=True
    )
    plain = world.tasks("train", n_tasks)
    prompts = run_coroutine(_turn_prompts(world, tasks, world.random_policy(seed)))
    prompts += run_coroutine(_turn_prompts(world, plain, world.random_policy(seed + 1)))
    calls = call_texts(world.aliases) * 20
    documents = [f"{d.title}\n{d.text}" for d in world.encyclopedia.documents]
    return [*prompts, *calls, *documents]


def train_world_tokenizer(
    world: ToolWorld,
    out_dir: str | Path,
    *,
    vocab_size: int = 2000,
    n_tasks: int = 400,
    call_pieces: bool = True,
) -> SentencePieceTokenizer:
    """A SentencePiece vocabulary trained on `training_texts`, saved to `out_dir`.

    `call_pieces` makes every complete call (`<tool_call>{...}</tool_call>`) one piece, so a
    policy's turn is a single token, as in the toy world.
    """
    texts = training_texts(world, n_tasks)
    extra = call_texts(world.aliases) if call_pieces else []
    return train_sentencepiece(texts, out_dir, vocab_size, extra_special_tokens=extra)


def prompt_lengths(
    world: ToolWorld, tokenizer: Any, tasks: Sequence[WorldTask], *, searcher: str = "mini"
) -> dict[str, float]:
    """Token counts of the first-turn prompt and of the prompt after one search by `searcher`.

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
            len(tokenizer.encode(render_prompt(messages, schemas)))
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
    "call_texts",
    "prompt_lengths",
    "render_prompt",
    "train_world_tokenizer",
    "training_texts",
]
