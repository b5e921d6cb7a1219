"""`ToolWorld`: one seeded world -- corpus, BM25 index, experts, tasks, environments, baselines.

Built once per run (the index and the expert pool are shared by every episode); everything
else is cheap and created per call. The corpus is written as JSONL under the cache directory
with its content hash in the file name, so `LocalSearch` finds its cached index on the next run
and a different seed never reads another seed's index.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from orchestra_jax.envs.toolworld.encyclopedia import Encyclopedia, seeded_rng
from orchestra_jax.envs.toolworld.environment import (
    AliasCard,
    CodeRunner,
    ToolWorldEnv,
    WorldQATools,
    tool_schemas,
)
from orchestra_jax.envs.toolworld.experts import (
    ALIASES,
    API_ALIASES,
    FRONTIER,
    build_pool,
    build_profiles,
    typical_latency_s,
)
from orchestra_jax.envs.toolworld.preferences import (
    DEFAULT_EFFICIENCY_WEIGHT,
    DEFAULT_MIX,
    Augmentation,
    draw_preference,
    get_preference,
)
from orchestra_jax.envs.toolworld.routes import (
    EpisodeResult,
    OracleRouter,
    RandomPolicy,
    Route,
    ScriptedPolicy,
    alias_counts,
    make_routes,
    run_scripted,
    summarize,
    turn_chooser,
)
from orchestra_jax.envs.toolworld.tasks import FAMILIES, SPLITS, WorldTask, generate_task
from orchestra_jax.sync import run_coroutine
from orchestra_jax.tools.local_search import LocalSearch, default_cache_dir
from orchestra_jax.tools.pricing import PricingCatalog


@dataclass(frozen=True)
class WorldConfig:
    """Everything that shapes a world; the same config always gives the same world.

    - `seed`: entities, facts, tasks and the experts' draws.
    - `n_towns`, `n_people`, `n_rivers`: the encyclopedia's size (one document each).
    - `families`: task families, dealt round-robin so every split is balanced.
    - `search_k`: documents per search (few: they go into the policy's prompt).
    - `max_turns`: turns a scripted episode may take (the longest route needs 3).
    - `last_turn_note`: the last of `max_turns` turns tells the policy so
      (`environment.LAST_TURN_NOTE`), and the random policy answers on it.
    - `context_chars`: budget of the notes in the policy's prompt, in characters.
    - `schema_style`: "compact" (names only; fits the 256-token budget) or "openai" tool
      schemas (`environment.tool_schemas`).
    - `search_charge_s`, `sandbox_charge_s`: nominal seconds charged per search / program run
      (None: the measured wall-clock; see `environment.py` for why nominal is the default).
    - `cache_code_runs`: run each distinct program once per world and reuse its output.
    - `cache_dir`: where the corpus and its index go (default: the user's cache directory).
    - `preference_mix`: preferences and weights for `tasks(..., preference="mix")`.
    - `efficiency_weight`: the cost and the latency weight of every preference that states
      none of its own (neutral, avoid_frontier, prefer_open) against the outcome's 1.
    - `augmentation`: how `tool_subsets` / `price_schedules` augment tasks.
    """

    seed: int = 0
    n_towns: int = 240
    n_people: int = 240
    n_rivers: int = 120
    families: tuple[str, ...] = FAMILIES
    search_k: int = 3
    max_turns: int = 3
    last_turn_note: bool = False
    context_chars: int = 1200
    schema_style: str = "compact"
    search_charge_s: float | None = 0.005
    sandbox_charge_s: float | None = 0.05
    cache_code_runs: bool = True
    cache_dir: str | None = None
    preference_mix: tuple[tuple[str, float], ...] = DEFAULT_MIX
    efficiency_weight: float = DEFAULT_EFFICIENCY_WEIGHT
    augmentation: Augmentation = field(default_factory=Augmentation)

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an int, got {self.seed!r}")
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown or not self.families:
            raise ValueError(f"families must be a non-empty subset of {FAMILIES}, got {unknown}")
        if self.search_k < 1 or self.max_turns < 1 or self.context_chars < 100:
            raise ValueError(
                "need search_k >= 1, max_turns >= 1 and context_chars >= 100, got "
                f"{self.search_k}, {self.max_turns}, {self.context_chars}"
            )
        for name in ("search_charge_s", "sandbox_charge_s"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise ValueError(f"{name} must be None or >= 0, got {value!r}")
        tool_schemas((), style=self.schema_style)  # a ValueError naming a bad style
        for name, _ in self.preference_mix:
            get_preference(name)  # a ValueError naming an unknown preference
        if not 0 <= self.efficiency_weight <= 1:
            raise ValueError(
                f"efficiency_weight must lie in [0, 1], got {self.efficiency_weight!r}"
            )


class ToolWorld:
    """The embedded orchestration world (see `orchestra_jax.envs.toolworld`)."""

    def __init__(self, config: WorldConfig | None = None):
        self.config = config or WorldConfig()
        c = self.config
        self.encyclopedia = Encyclopedia(
            c.seed, n_towns=c.n_towns, n_people=c.n_people, n_rivers=c.n_rivers
        )
        root = Path(c.cache_dir) if c.cache_dir else default_cache_dir().parent / "toolworld"
        self.corpus_path = _write_corpus(self.encyclopedia.rows(), root)
        self.search = LocalSearch(self.corpus_path, cache_dir=root / "bm25")
        self.profiles = build_profiles()
        self.catalog = PricingCatalog.load()
        self.pool = build_pool(self.profiles, self.catalog, seed=c.seed)
        self.latencies = {a: typical_latency_s(p) for a, p in self.profiles.items()}
        self.cards = {
            a: AliasCard(p.tokens_out_median, self.latencies[a]) for a, p in self.profiles.items()
        }
        self.code_runner = CodeRunner(cache=c.cache_code_runs)
        self.qa_tools = WorldQATools(
            self.pool,
            self.search,
            run_code=self.code_runner,
            search_k=c.search_k,
            latencies=self.latencies,
            search_charge_s=c.search_charge_s,
            sandbox_charge_s=c.sandbox_charge_s,
        )

    # -- roster --------------------------------------------------------------------------------

    @property
    def aliases(self) -> tuple[str, ...]:
        """The expert aliases in their fixed order (the preference vector's alias order)."""
        return ALIASES

    @property
    def frontier_alias(self) -> str:
        return FRONTIER

    @property
    def api_aliases(self) -> tuple[str, ...]:
        return API_ALIASES

    @property
    def max_turns(self) -> int:
        return self.config.max_turns

    # -- tasks ---------------------------------------------------------------------------------

    def tasks(
        self,
        split: str,
        n: int,
        *,
        start: int = 0,
        preference: str = "neutral",
        tool_subsets: bool = False,
        price_schedules: bool = False,
    ) -> list[WorldTask]:
        """Tasks `start .. start + n - 1` of `split`, families dealt round-robin.

        `preference` is a preference name (the same tasks under its instruction) or "mix"
        (each task draws one from `config.preference_mix`); `tool_subsets` and
        `price_schedules` apply the paper's augmentations (`config.augmentation`). A task
        under a non-neutral preference has its id suffixed `@<preference>`.
        """
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0 or start < 0:
            raise ValueError(f"n and start must be ints >= 0, got n={n!r}, start={start!r}")
        if preference != "mix":
            get_preference(preference)
        c = self.config
        out = []
        for index in range(start, start + n):
            task = generate_task(self.encyclopedia, c.seed, split, index, c.families)
            name = preference
            if preference == "mix":
                name = draw_preference(
                    seeded_rng("preference", c.seed, split, index), c.preference_mix
                )
            out.append(self._augment(task, name, tool_subsets, price_schedules))
        return out

    def _augment(
        self, task: WorldTask, preference: str, tool_subsets: bool, price_schedules: bool
    ) -> WorldTask:
        pref = get_preference(preference)
        aug = self.config.augmentation
        rng = seeded_rng("augment", self.config.seed, task.split, task.index)
        changes: dict[str, Any] = {
            "preference": pref.name,
            "instruction": pref.text(self.frontier_alias),
            "preference_vector": pref.vector(self.aliases, self.frontier_alias, self.api_aliases,
                                             self.config.efficiency_weight),
        }
        if pref.name != "neutral":
            changes["id"] = f"{task.id}@{pref.name}"
        if tool_subsets:
            changes["aliases"] = aug.aliases(rng, self.aliases)
            changes["tools"] = aug.tools(rng)
        if price_schedules:
            base = {a: self.pool[a].price for a in self.aliases}
            changes["prices"] = aug.prices(rng, base)
        return replace(task, **changes)

    # -- episodes ------------------------------------------------------------------------------

    def make_env(
        self,
        *,
        measure: Any = len,
        context_budget: int | None = None,
        schema_style: str | None = None,
    ) -> ToolWorldEnv:
        """A fresh environment (qa mode) sharing this world's experts, index and sandbox."""
        return ToolWorldEnv(
            self.qa_tools,
            self.cards,
            context_budget=context_budget or self.config.context_chars,
            measure=measure,
            schema_style=schema_style or self.config.schema_style,
            max_turns=self.config.max_turns if self.config.last_turn_note else None,
        )

    def routes(self, *, mixed: bool = False) -> dict[str, Route]:
        """The fixed routes: the 24 one-alias routes (the fixed baselines), or with `mixed`
        all 294 routes of the four shapes (what the oracle chooses among).

        Names: `route:answer[alias]`, `route:search>answer[alias]`,
        `route:enhance_reasoning>answer[alias]`, `route:search>enhance_reasoning>answer[alias]`
        with `route:frontier-all` for the last one by the frontier alias; mixed routes name
        every step, `route:search[mini]>enhance_reasoning[coder]>answer[math-small]`.
        """
        return make_routes(self.aliases, self.frontier_alias, mixed=mixed)

    def random_policy(self, seed: int = 0) -> RandomPolicy:
        """Uniformly random valid calls, one per turn (also the SFT data source); with
        `last_turn_note` an answer (by a random alias) on the last turn, as the note asks."""
        return RandomPolicy(seed, last_turn=self.config.max_turns - 1
                            if self.config.last_turn_note else None)

    async def run_scripted(
        self,
        policy: ScriptedPolicy,
        tasks: Sequence[WorldTask],
        executor: Any = None,
        *,
        concurrency: int = 64,
        transcript: bool = False,
    ) -> list[EpisodeResult]:
        """Play `tasks` under a route, the random policy or an oracle, in the real env."""
        return await run_scripted(
            self, policy, tasks, executor, concurrency=concurrency, transcript=transcript
        )

    def evaluate(
        self, policy: ScriptedPolicy, tasks: Sequence[WorldTask], **kwargs: Any
    ) -> list[EpisodeResult]:
        """`run_scripted` from synchronous code (its own event loop)."""
        return run_coroutine(self.run_scripted(policy, tasks, **kwargs))

    def summarize(self, results: Sequence[EpisodeResult]) -> dict[str, Any]:
        """Accuracy, cost, latency, calls per alias per task, and all of it per family."""
        return summarize(results, self.aliases)

    def oracle_policy(self, choice: dict[str, Route]) -> OracleRouter:
        """A policy that plays `choice[family]` on each task."""
        return OracleRouter(choice)

    def scripted_choosers(
        self, *, mixed: bool = False, random_seed: int = 0, oracle: OracleRouter | None = None
    ) -> dict[str, Callable[[WorldTask], Callable[[list[dict[str, Any]], random.Random], str]]]:
        """name -> per-episode chooser factory, for the training loop's scripted policies:
        "random" (the random valid policy), every route of `routes(mixed=mixed)`, and
        "oracle" when one is given."""
        out = {"random": self.chooser_for(self.random_policy(random_seed))}
        for name, route in self.routes(mixed=mixed).items():
            out[name] = self.chooser_for(route)
        if oracle is not None:
            out["oracle"] = self.chooser_for(oracle)
        return out

    def count_calls(self, episode: Any) -> dict[str, int]:
        """Calls per alias (every alias present, in order) of a trajectory or of its records:
        the per-alias features of the ToolOrchestra reward."""
        records = getattr(episode, "records", episode)
        return alias_counts(records, self.aliases)

    @staticmethod
    def preference_of(task: WorldTask) -> tuple[float, ...]:
        """The task's preference vector `[per-alias weights..., outcome, cost, latency]`."""
        return task.preference_vector

    @staticmethod
    def family_of(task: WorldTask) -> str:
        return task.family

    def chooser_for(
        self, policy: ScriptedPolicy
    ) -> Callable[[WorldTask], Callable[[list[dict[str, Any]], random.Random], str]]:
        """`task -> (tools, rng) -> text`: `policy` for the loop's scripted episodes (SFT data,
        baselines), independent of the schema style (`routes.turn_chooser`)."""
        return lambda task: turn_chooser(policy, task, self.aliases)


def _write_corpus(rows: list[dict[str, str]], root: Path) -> Path:
    """Write the corpus once under `root`, named by its content hash; atomic against races."""
    text = "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"corpus-{digest}.jsonl"
    if path.is_file():
        return path
    fd, tmp = tempfile.mkstemp(prefix=".corpus.", dir=root)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


__all__ = ["ToolWorld", "WorldConfig"]
