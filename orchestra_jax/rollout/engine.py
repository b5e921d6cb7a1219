"""Many episodes at once: one asyncio task per episode, one shared generator and tool executor.

The released system ran rollouts turn-synchronously: every episode generated turn k in one
batch, then all tools ran (two at a time), then turn k+1 began, so the accelerator idled while
the slowest tool of the step finished. Here every episode is its own coroutine with no turn
barrier: an episode whose tools are done asks for its next turn at once, the batcher gathers
whatever requests are pending into the next batch, and tools of some episodes run while others
generate. Each episode owns its environment (built by a factory), since environments keep
per-episode state.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from orchestra_jax.envs.base import Environment
from orchestra_jax.rollout.episode import Generator, release, run_episode
from orchestra_jax.rollout.requests import SamplingParams
from orchestra_jax.rollout.trajectory import Trajectory
from orchestra_jax.seeding import derive_seed
from orchestra_jax.tokenization.protocol import Tokenizer


@dataclass(frozen=True)
class EpisodeSpec:
    """One episode to run: its own environment, the task, and the task's group in the batch."""

    env: Environment
    task: Any
    group: int | None = None
    task_id: str | None = None
    #: The episode's place in the whole step, which seeds its sampling (None: its position
    #: in the `run_episodes` call). A host that plays its share of a multi-host step keeps
    #: the global places, so the step samples the same tokens on any number of hosts.
    index: int | None = None


def grouped_episodes(
    tasks: Sequence[Any], env_factory: Callable[[], Environment], group_size: int
) -> list[EpisodeSpec]:
    """`group_size` episodes of every task, each with a fresh environment from `env_factory`.

    GRPO compares the episodes of one task with each other, so each spec carries its task's
    index as `group`.
    """
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    return [
        EpisodeSpec(env=env_factory(), task=task, group=g)
        for g, task in enumerate(tasks)
        for _ in range(group_size)
    ]


def episode_seed(seed: int | None, index: int) -> int | None:
    """A distinct, reproducible sampling seed per episode (None stays None)."""
    if seed is None:
        return None
    return derive_seed(seed, index, 0x0E)


async def run_episodes(
    episodes: Iterable[EpisodeSpec | tuple[Environment, Any]],
    *,
    generator: Generator,
    tokenizer: Tokenizer,
    executor: Any,
    sampling: SamplingParams,
    max_turns: int,
    timeout_s: float,
    max_prompt_tokens: int | None = None,
    max_concurrent_episodes: int | None = None,
) -> list[Trajectory]:
    """Run every episode concurrently; the trajectories come back in the input order.

    `episodes` are `EpisodeSpec`s or `(env, task)` pairs; no two may share an environment.
    `max_concurrent_episodes` caps how many run at once (None: all). A seeded `sampling` gets a
    distinct seed per episode, so the episodes of a group do not repeat each other. Episodes
    never raise (see `run_episode`); if the caller cancels, every episode is cancelled.
    """
    specs = [e if isinstance(e, EpisodeSpec) else EpisodeSpec(*e) for e in episodes]
    envs = [id(s.env) for s in specs]
    if len(set(envs)) != len(envs):
        raise ValueError("two episodes share one environment object; give each its own")
    if max_concurrent_episodes is not None and max_concurrent_episodes < 1:
        raise ValueError(f"max_concurrent_episodes must be >= 1, got {max_concurrent_episodes}")
    limit = asyncio.Semaphore(max_concurrent_episodes or max(len(specs), 1))

    async def one(index: int, spec: EpisodeSpec) -> Trajectory:
        async with limit:
            return await run_episode(
                spec.env,
                spec.task,
                generator=generator,
                tokenizer=tokenizer,
                executor=executor,
                sampling=dataclasses.replace(
                    sampling, seed=episode_seed(sampling.seed,
                                                index if spec.index is None else spec.index)),
                max_turns=max_turns,
                timeout_s=timeout_s,
                max_prompt_tokens=max_prompt_tokens,
                task_id=spec.task_id,
                group=spec.group,
            )

    tasks = [asyncio.ensure_future(one(i, s)) for i, s in enumerate(specs)]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()  # no-op for finished ones; stops the rest if we were cancelled
        await release(executor)
