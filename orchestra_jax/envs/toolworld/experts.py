"""The six simulated experts of toolworld, shaped like the paper's tiers, and their calibration.

Why these numbers: the world exists to make routing *matter*. The profiles are calibrated so
that no fixed route is best on every family and the cheapest good route differs by family:

- `frontier` (plays GPT-5, $1.25 / $10 per million tokens, ~40 s): strong at everything, the
  dearest and slowest by far.
- `mini` (GPT-5-mini, $0.25 / $2, ~18 s): a cheap generalist; writes good queries and reads
  documents well, weak at unaided arithmetic.
- `open` (Qwen3-32B, $0.8 / $0.8, ~10 s): an open generalist; knows general facts, middling
  elsewhere.
- `coder` (Qwen2.5-Coder-32B, $0.8 / $0.8, ~9 s): the best program writer, a poor answerer.
- `math-small` (Qwen2.5-Math-7B, $0.2 / $0.2, ~7 s): the cheapest; reads a computed number off
  the notes reliably, weak on general and look-up questions.
- `math-large` (Qwen2.5-Math-72B, $0.9 / $0.9, ~12 s): the best unaided arithmetic, weak at
  queries and general knowledge.

Skills are indexed by *situation* (`situations.py`): answer accuracy per situation, query
quality and code quality per family. Prices come from the paper's price table
(`tools/data/pricing.json`); latencies follow the paper's tool table (GPT-5 tens of seconds,
the open 7-72B models around ten). These are illustrative orderings, not measurements of the
real models.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from orchestra_jax.envs.toolworld.situations import SITUATIONS, family_of
from orchestra_jax.tools.experts import Expert, ExpertPool
from orchestra_jax.tools.pricing import PricingCatalog
from orchestra_jax.tools.simulated_expert import ExpertProfile, FamilySkill, SimulatedExpert

FRONTIER = "frontier"
MINI = "mini"
OPEN = "open"
CODER = "coder"
MATH_SMALL = "math-small"
MATH_LARGE = "math-large"
#: The aliases in their fixed order (the order of the preference vector's alias weights).
ALIASES: tuple[str, ...] = (FRONTIER, MINI, OPEN, CODER, MATH_SMALL, MATH_LARGE)
#: Aliases served by a closed API (what "prefer open models" avoids).
API_ALIASES: tuple[str, ...] = (FRONTIER, MINI)

MODELS: dict[str, str] = {
    FRONTIER: "gpt-5",
    MINI: "gpt-5-mini",
    OPEN: "qwen3-32b",
    CODER: "qwen2.5-coder-32b-instruct",
    MATH_SMALL: "qwen2.5-math-7b-instruct",
    MATH_LARGE: "qwen2.5-math-72b-instruct",
}


@dataclass(frozen=True)
class Costs:
    """Token and latency shape of one expert (see `ExpertProfile`)."""

    tokens_out_median: float
    latency_first_token_s: float
    latency_per_token_s: float
    tokens_out_sigma: float = 0.3
    latency_sigma: float = 0.2
    answer_format: str = "tags"


COSTS: dict[str, Costs] = {
    FRONTIER: Costs(600, 8.0, 0.05, latency_sigma=0.3),
    MINI: Costs(450, 4.0, 0.03),
    OPEN: Costs(350, 1.5, 0.025),
    CODER: Costs(250, 2.0, 0.028),
    MATH_SMALL: Costs(300, 1.0, 0.02, answer_format="boxed"),
    MATH_LARGE: Costs(400, 1.5, 0.025, answer_format="boxed"),
}

_A = ALIASES  # column order of the tables below: frontier, mini, open, coder, math-s, math-l

#: P(correct final answer) per situation. Without its documents a look-up or multi-hop expert
#: is not given the answer at all and guesses (the rows `lookup` and `multihop` are unused).
ANSWER_ACCURACY: dict[str, tuple[float, ...]] = {
    #                           front  mini  open  coder m-sm  m-lg
    "easy":                    (0.97, 0.97, 0.97, 0.88, 0.78, 0.88),
    "easy+noise":              (0.62, 0.58, 0.55, 0.50, 0.45, 0.50),
    "arithmetic":              (0.80, 0.50, 0.40, 0.35, 0.60, 0.85),
    "arithmetic+noise":        (0.55, 0.35, 0.30, 0.25, 0.40, 0.60),
    "arithmetic+result":       (0.99, 0.98, 0.97, 0.95, 0.99, 0.99),
    "arithmetic+result+noise": (0.70, 0.68, 0.65, 0.60, 0.70, 0.72),
    "lookup":                  (0.20, 0.20, 0.20, 0.20, 0.20, 0.20),
    "lookup+docs":             (0.98, 0.98, 0.90, 0.80, 0.55, 0.70),
    "multihop":                (0.20, 0.20, 0.20, 0.20, 0.20, 0.20),
    "multihop+docs":           (0.75, 0.45, 0.40, 0.35, 0.50, 0.70),
    "multihop+docs+result":    (0.99, 0.97, 0.96, 0.94, 0.98, 0.99),
}  # fmt: skip

#: P(a query naming what is missing) per family.
QUERY_QUALITY: dict[str, tuple[float, ...]] = {
    "easy":       (0.95, 0.95, 0.90, 0.80, 0.60, 0.70),
    "arithmetic": (0.95, 0.95, 0.90, 0.80, 0.60, 0.70),
    "lookup":     (0.97, 0.98, 0.85, 0.60, 0.30, 0.40),
    "multihop":   (0.97, 0.97, 0.75, 0.50, 0.25, 0.35),
}  # fmt: skip

#: P(the program is the correct one) per family (easy and look-up programs print nothing useful).
CODE_QUALITY: dict[str, tuple[float, ...]] = {
    "easy":       (0.50, 0.50, 0.50, 0.50, 0.50, 0.50),
    "arithmetic": (0.85, 0.70, 0.65, 0.99, 0.50, 0.85),
    "lookup":     (0.50, 0.50, 0.50, 0.50, 0.50, 0.50),
    "multihop":   (0.85, 0.70, 0.60, 0.99, 0.45, 0.85),
}  # fmt: skip


def build_profiles(
    answer: Mapping[str, tuple[float, ...]] = ANSWER_ACCURACY,
    query: Mapping[str, tuple[float, ...]] = QUERY_QUALITY,
    code: Mapping[str, tuple[float, ...]] = CODE_QUALITY,
) -> dict[str, ExpertProfile]:
    """alias -> `ExpertProfile` with one `FamilySkill` per situation (tables as above)."""
    situations = [s for keys in SITUATIONS.values() for s in keys]
    for name, table, keys in (
        ("answer", answer, situations),
        ("query", query, list(SITUATIONS)),
        ("code", code, list(SITUATIONS)),
    ):
        missing = [k for k in keys if k not in table]
        if missing:
            raise ValueError(f"the {name} table lacks rows {missing}")
        short = [k for k in keys if len(table[k]) != len(ALIASES)]
        if short:
            raise ValueError(f"the {name} table's rows {short} need {len(ALIASES)} values")
    profiles = {}
    for i, alias in enumerate(ALIASES):
        c = COSTS[alias]
        skills = {
            s: FamilySkill(
                answer_accuracy=answer[s][i],
                query_quality=query[family_of(s)][i],
                code_quality=code[family_of(s)][i],
            )
            for s in situations
        }
        profiles[alias] = ExpertProfile(
            name=MODELS[alias],
            skills=skills,
            default_skill=FamilySkill(0.2, 0.5, 0.5),
            answer_format=c.answer_format,  # type: ignore[arg-type]
            tokens_out_median=c.tokens_out_median,
            tokens_out_sigma=c.tokens_out_sigma,
            latency_first_token_s=c.latency_first_token_s,
            latency_per_token_s=c.latency_per_token_s,
            latency_sigma=c.latency_sigma,
        )
    return profiles


def build_pool(
    profiles: Mapping[str, ExpertProfile], catalog: PricingCatalog, seed: int
) -> ExpertPool:
    """The world's expert pool: each alias a `SimulatedExpert` priced from `catalog`."""
    return ExpertPool(
        [
            Expert(
                alias=alias,
                model=profile.name,
                client=SimulatedExpert(profile, seed=seed),
                price=catalog.price(profile.name),
            )
            for alias, profile in profiles.items()
        ]
    )


def typical_latency_s(profile: ExpertProfile) -> float:
    """The median latency of one call (what the roster tells the policy)."""
    return profile.latency_first_token_s + profile.latency_per_token_s * profile.tokens_out_median


__all__ = [
    "ALIASES",
    "ANSWER_ACCURACY",
    "API_ALIASES",
    "CODER",
    "CODE_QUALITY",
    "COSTS",
    "FRONTIER",
    "MATH_LARGE",
    "MATH_SMALL",
    "MINI",
    "MODELS",
    "OPEN",
    "QUERY_QUALITY",
    "build_pool",
    "build_profiles",
    "typical_latency_s",
]
