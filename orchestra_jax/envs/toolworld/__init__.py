"""toolworld: the embedded orchestration world (seeded, offline, two CPU cores).

A procedural world for training a small orchestrator: four task families (arithmetic word
problems, look-ups in a generated encyclopedia of invented entities, multi-hop questions
combining two look-ups with arithmetic, easy general questions), each with a gold answer and a
verifier; the paper's qa tools (`search`, `enhance_reasoning`, `answer`, each naming an expert
alias) over real BM25 retrieval and a real code sandbox; six simulated experts shaped like the
paper's tiers and calibrated so that routing matters; preference instructions with their
vectors; the paper's augmentations; and scripted baselines (fixed routes, random routing, the
per-family oracle). See docs/toolworld.md.

    from orchestra_jax.envs.toolworld import ToolWorld, WorldConfig
    world = ToolWorld(WorldConfig(seed=0))
    tasks = world.tasks("test", 400)
    results = world.evaluate(world.routes()["route:frontier-all"], tasks)
    print(world.summarize(results))

Host code: never imports jax.
"""

from orchestra_jax.envs.toolworld.environment import ToolWorldEnv, call_text
from orchestra_jax.envs.toolworld.preferences import PREFERENCES, Augmentation, Preference
from orchestra_jax.envs.toolworld.routes import (
    EpisodeResult,
    OracleRouter,
    RandomPolicy,
    Route,
    choose_oracle,
    oracle_results,
)
from orchestra_jax.envs.toolworld.tasks import FAMILIES, TaskSpec, WorldTask, verify
from orchestra_jax.envs.toolworld.world import ToolWorld, WorldConfig

__all__ = [
    "FAMILIES",
    "PREFERENCES",
    "Augmentation",
    "EpisodeResult",
    "OracleRouter",
    "Preference",
    "RandomPolicy",
    "Route",
    "TaskSpec",
    "ToolWorld",
    "ToolWorldEnv",
    "WorldConfig",
    "WorldTask",
    "call_text",
    "choose_oracle",
    "oracle_results",
    "verify",
]
