"""The paper's training-time augmentation for plain qa tasks: per-task aliases, prices, tools
and preferences.

Why: a plain FRAMES / HLE row says nothing about experts, prices or the user's wishes, so a
policy trained on such rows alone would learn one fixed routing and ignore the prices and
instructions in its prompt. The method draws, per training example, a random alias -> model
mapping, a random price schedule, a random subset of the tools and a preference instruction
with its vector; this module does the same for rows that carry none of these (a released
record already carries its own and is left as it is). The question and the gold answer are
never touched, so the outcome of a task does not change -- only what it costs and how the
user weighs it.

Per task, from a seed and the task's id (the same task is augmented the same way on every
run and every host):

* aliases `expert-1 … expert-N`, assigned to the experts in a random order;
* each expert's price multiplied by a factor drawn from `PRICE_FACTORS` (input and output
  alike): the ranking of experts by price changes from task to task;
* `answer` always offered, `search` and `enhance_reasoning` each with probability
  `TOOL_KEEP`;
* with probability `preference_share`, one preference instruction with its vector over
  `[aliases…, accuracy, cost, latency]` (`PREFERENCES`); otherwise none (the config's default
  preference applies).
"""

from __future__ import annotations

import dataclasses
import random
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from orchestra_jax.envs.qa_tasks import QATask
from orchestra_jax.seeding import derive_seed
from orchestra_jax.tools.pricing import Price

#: Price multipliers of a task's schedule (input and output alike).
PRICE_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)
#: Probability that each of the optional tools is offered (`answer` always is).
TOOL_KEEP = 0.75
OPTIONAL_TOOLS = ("search", "enhance_reasoning")
#: Keeps the augmentation's draws apart from every other use of the run seed.
_AUGMENT_TAG = 0xA06

Vector = dict[str, float]


def _cheapest(aliases: Sequence[str], rng: random.Random) -> tuple[str, Vector]:
    return ("Keep the cost as low as you can: a correct answer that costs less is better.",
            {"accuracy": 1.0, "cost": 1.0, "latency": 0.0})


def _fastest(aliases: Sequence[str], rng: random.Random) -> tuple[str, Vector]:
    return ("I am in a hurry: a correct answer that arrives sooner is better.",
            {"accuracy": 1.0, "cost": 0.0, "latency": 1.0})


def _avoid(aliases: Sequence[str], rng: random.Random) -> tuple[str, Vector]:
    avoided = rng.choice(list(aliases))
    vector = {a: (0.0 if a == avoided else 1.0) for a in aliases}
    return (f"Please do not use {avoided}.", {**vector, "accuracy": 1.0, "cost": 0.0,
                                              "latency": 0.0})


def _prefer(aliases: Sequence[str], rng: random.Random) -> tuple[str, Vector]:
    preferred = rng.choice(list(aliases))
    vector = {a: (1.0 if a == preferred else 0.0) for a in aliases}
    return (f"I prefer answers that use {preferred}.", {**vector, "accuracy": 1.0, "cost": 0.0,
                                                         "latency": 0.0})


#: name -> (aliases, rng) -> (instruction text, preference vector).
PREFERENCES: dict[str, Callable[[Sequence[str], random.Random], tuple[str, Vector]]] = {
    "cheapest": _cheapest, "fastest": _fastest, "avoid": _avoid, "prefer": _prefer}


def preference_keys(task: QATask) -> set[str]:
    """The keys a preference vector of `task` may have: its aliases, accuracy, cost, latency."""
    return {*(task.visible_aliases or ()), "accuracy", "cost", "latency"}


def is_plain(task: QATask) -> bool:
    """True for a task that carries no mapping, prices, tool subset or preference."""
    return (task.model_mapping is None and not task.prices and task.tool_aliases is None
            and task.preference is None and task.instruction is None)


def augment_task(task: QATask, experts: Mapping[str, Any], *, seed: int,
                 preference_share: float = 0.5) -> QATask:
    """`task` with the augmentation of the module docstring; `experts` maps each expert name
    to its `Expert` (for its model and price). A task that is not plain is returned as is."""
    if not is_plain(task):
        return task
    rng = random.Random(derive_seed(seed, _AUGMENT_TAG, zlib.crc32(task.id.encode()), bits=32))
    names = list(task.aliases) if task.aliases is not None else list(experts)
    order = rng.sample(names, len(names))
    mapping = {f"expert-{i + 1}": name for i, name in enumerate(order)}
    prices: dict[str, Price] = {}
    for name in names:
        base, factor = experts[name].price, rng.choice(PRICE_FACTORS)
        prices[name] = Price(input_usd_per_mtok=base.input_usd_per_mtok * factor,
                             output_usd_per_mtok=base.output_usd_per_mtok * factor)
    tools = {t: () for t in OPTIONAL_TOOLS if rng.random() < TOOL_KEEP}
    tools["answer"] = ()
    instruction, preference = None, None
    if rng.random() < preference_share:
        make = PREFERENCES[rng.choice(sorted(PREFERENCES))]
        instruction, preference = make(list(mapping), rng)
    return dataclasses.replace(task, aliases=None, model_mapping=mapping, prices=prices,
                               tool_aliases=tools, preference=preference,
                               instruction=instruction)


def augment_tasks(tasks: Sequence[QATask], experts: Mapping[str, Any], *, seed: int,
                  preference_share: float = 0.5) -> list[QATask]:
    """Every plain task of `tasks` augmented (see `augment_task`)."""
    if not 0.0 <= preference_share <= 1.0:
        raise ValueError(f"preference_share must be in [0, 1], got {preference_share}")
    return [augment_task(t, experts, seed=seed, preference_share=preference_share)
            for t in tasks]


__all__ = [
    "OPTIONAL_TOOLS",
    "PREFERENCES",
    "PRICE_FACTORS",
    "augment_task",
    "augment_tasks",
    "is_plain",
    "preference_keys",
]
