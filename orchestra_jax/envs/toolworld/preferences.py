"""User preferences (an instruction and its vector) and the paper's training augmentations.

A preference is two things that must agree: the *instruction* the policy reads in its prompt
("Avoid frontier.") and the *vector* the reward dots with the group-normalised features
`[per-alias call counts..., outcome, -cost, -latency]` (`rewards/toolorchestra.py`). The policy
can only follow an instruction it sees, and it is only rewarded for following it through the
vector.

Sign convention: the paper keeps every weight in [0, 1], which can only *reward* calls to an
alias. An "avoid X" instruction needs the opposite, so an avoided alias gets weight -1: with
the group min-max normalisation, the rollout of a group that called X most loses 1, and one
that never called it loses nothing. Aliases the instruction does not mention get 0.

Efficiency weights: a neutral user weights cost and latency 0.5 each against the outcome's 1
(an efficiency instruction raises its own to 1 and drops the other). With the group min-max
normalisation, weights of 1 made the cheapest lucky guess worth up to three times a correct
but dearer route (outcome 1 + cost 1 + latency 1 against outcome 1 + 0 + 0, whatever the
prices), so a group that mostly guessed taught its one correct search to guess too: a tiny
policy trained that way settled on answering every task at once with the cheapest expert
(45 % on the test tasks). At 0.5 a correct route still gains up to one point for being the
group's cheapest and fastest, but a guess that is right one time in five no longer pays.
`WorldConfig.efficiency_weight` sets that 0.5 per world: at 0.1 (the `toolworld_tiny` recipe)
a guess right half the time no longer pays as well as a route that is always right either.

Augmentations (paper, training only): a random subset of experts (and of the two optional
tools) per task, and a random price schedule per task (each alias's catalog price scaled by a
log-uniform factor), so the policy learns to read the roster rather than memorise it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestra_jax.tools.pricing import Price
from orchestra_jax.tools.qa_tools import ANSWER, TOOL_NAMES

#: The cost and latency weight of a preference that states none (neutral, avoid, prefer).
DEFAULT_EFFICIENCY_WEIGHT = 0.5


@dataclass(frozen=True)
class Preference:
    """A named preference. `avoid` names alias groups: "frontier" or "api" (closed models).
    `cost` / `latency` None: the world's `efficiency_weight` (`WorldConfig`)."""

    name: str
    instruction: str | None
    outcome: float = 1.0
    cost: float | None = None
    latency: float | None = None
    avoid: tuple[str, ...] = ()

    def avoided(self, frontier: str, api_aliases: Sequence[str]) -> set[str]:
        groups = {"frontier": {frontier}, "api": set(api_aliases)}
        return set().union(*(groups[g] for g in self.avoid)) if self.avoid else set()

    def text(self, frontier: str) -> str | None:
        """The instruction as the policy reads it (None: no instruction)."""
        return None if self.instruction is None else self.instruction.format(frontier=frontier)

    def vector(
        self,
        aliases: Sequence[str],
        frontier: str,
        api_aliases: Sequence[str],
        efficiency: float = DEFAULT_EFFICIENCY_WEIGHT,
    ) -> tuple[float, ...]:
        """`[alias weights (in `aliases` order)..., outcome, cost, latency]`; a preference that
        names no cost or latency weight of its own weights each by `efficiency`."""
        avoided = self.avoided(frontier, api_aliases)
        weights = [-1.0 if alias in avoided else 0.0 for alias in aliases]
        cost = efficiency if self.cost is None else self.cost
        latency = efficiency if self.latency is None else self.latency
        return (*weights, self.outcome, cost, latency)


PREFERENCES: dict[str, Preference] = {
    p.name: p
    for p in (
        Preference("neutral", None),
        Preference("avoid_frontier", "Avoid {frontier}.", avoid=("frontier",)),
        Preference("minimise_cost", "Keep the cost low.", cost=1.0, latency=0.0),
        Preference("minimise_latency", "Answer fast.", cost=0.0, latency=1.0),
        Preference("prefer_open", "Use open models only.", avoid=("api",)),
    )
}

#: The default mixture of preferences for training tasks (`preference="mix"`).
DEFAULT_MIX: tuple[tuple[str, float], ...] = (
    ("neutral", 0.5),
    ("avoid_frontier", 0.2),
    ("minimise_cost", 0.1),
    ("minimise_latency", 0.1),
    ("prefer_open", 0.1),
)


def get_preference(name: str) -> Preference:
    """The preference called `name`; ValueError naming the known ones otherwise."""
    if name not in PREFERENCES:
        raise ValueError(f"unknown preference {name!r}; known: {', '.join(PREFERENCES)}")
    return PREFERENCES[name]


def preference_mix_problems(mix: Sequence[tuple[str, Any]]) -> tuple[list[str], dict[str, Any]]:
    """The names in `mix` that are no known preference, and the weights that are not finite
    numbers >= 0 -- one rule for drawing and for callers that check a config first."""
    unknown = [name for name, _ in mix if name not in PREFERENCES]
    bad = {name: w for name, w in mix
           if isinstance(w, bool) or not isinstance(w, int | float)
           or not (w >= 0 and math.isfinite(w))}
    return unknown, bad


def draw_preference(rng: random.Random, mix: Sequence[tuple[str, float]]) -> str:
    """One preference name drawn with the mixture's weights."""
    if not mix:
        raise ValueError("the preference mixture is empty")
    names = [name for name, _ in mix]
    weights = [float(w) for _, w in mix]
    unknown, bad = preference_mix_problems(mix)
    if unknown:
        get_preference(unknown[0])  # the ValueError naming the known ones
    if bad or sum(weights) <= 0:
        raise ValueError(f"preference weights must be >= 0 with a positive sum, got {weights}")
    return rng.choices(names, weights=weights, k=1)[0]


@dataclass(frozen=True)
class Augmentation:
    """How tasks are augmented when asked (`tasks(..., tool_subsets=True, ...)`).

    - `alias_keep`: each alias is kept with this probability; at least `min_aliases` stay.
    - `tool_drop`: `search` and `enhance_reasoning` are each dropped with this probability
      (`answer` always stays).
    - `price_low`, `price_high`: each alias's price is its catalog price times a factor drawn
      log-uniformly from this range (input and output by the same factor).
    """

    alias_keep: float = 0.7
    min_aliases: int = 2
    tool_drop: float = 0.1
    price_low: float = 0.25
    price_high: float = 4.0

    def __post_init__(self) -> None:
        if not 0 < self.alias_keep <= 1:
            raise ValueError(f"alias_keep must lie in (0, 1], got {self.alias_keep}")
        if not 0 <= self.tool_drop < 1:
            raise ValueError(f"tool_drop must lie in [0, 1), got {self.tool_drop}")
        if self.min_aliases < 1:
            raise ValueError(f"min_aliases must be >= 1, got {self.min_aliases}")
        if not 0 < self.price_low <= self.price_high:
            raise ValueError(
                f"need 0 < price_low <= price_high, got {self.price_low}, {self.price_high}"
            )

    def aliases(self, rng: random.Random, aliases: Sequence[str]) -> tuple[str, ...]:
        """A random subset of `aliases`, in their order."""
        kept = [a for a in aliases if rng.random() < self.alias_keep]
        missing = [a for a in aliases if a not in kept]
        rng.shuffle(missing)
        while len(kept) < min(self.min_aliases, len(aliases)):
            kept.append(missing.pop())
        return tuple(a for a in aliases if a in kept)

    def tools(self, rng: random.Random) -> tuple[str, ...]:
        """A random subset of the qa tools that always contains `answer`."""
        return tuple(t for t in TOOL_NAMES if t == ANSWER or rng.random() >= self.tool_drop)

    def prices(
        self, rng: random.Random, base: Mapping[str, Price]
    ) -> tuple[tuple[str, Price], ...]:
        """A price schedule: every alias of `base` re-priced by its own random factor."""
        low, high = math.log(self.price_low), math.log(self.price_high)
        schedule = []
        for alias, price in base.items():
            factor = math.exp(rng.uniform(low, high))
            schedule.append(
                (
                    alias,
                    Price(
                        round(price.input_usd_per_mtok * factor, 4),
                        round(price.output_usd_per_mtok * factor, 4),
                        price.provider,
                    ),
                )
            )
        return tuple(schedule)


__all__ = [
    "DEFAULT_EFFICIENCY_WEIGHT",
    "DEFAULT_MIX",
    "PREFERENCES",
    "Augmentation",
    "Preference",
    "draw_preference",
    "get_preference",
    "preference_mix_problems",
]
