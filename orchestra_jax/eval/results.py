"""From trajectories to the numbers a policy is judged by.

One `EpisodeOutcome` per (policy, task): solved or not, dollars, seconds, calls per expert
alias, the task's family and preference vector. `policy_table` turns a policy's outcomes into
the machine-readable entry of `summary.json`:

    {"accuracy", "cost_usd", "latency_s",            # means per task
     "calls": {alias: calls per task},
     "preference_score": float,                       # appendix L, see below
     "by_family": {family: {"accuracy", "cost_usd", "latency_s", "tasks"}},
     "tasks": int}

The preference score is the paper's appendix-L score against a base policy's outcomes on the
same tasks (the starting checkpoint; here the caller's choice, usually the warm-started
policy), reported as the mean of R_e over tasks (the paper sums; a mean does not grow with the
test set). Without a base it is computed against the policy itself.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from orchestra_jax.rewards.preference_score import preference_scores


@dataclass(frozen=True)
class EpisodeOutcome:
    """One evaluated episode."""

    task_id: str
    family: str
    outcome: float
    cost_usd: float
    latency_s: float
    calls: Mapping[str, int] = field(default_factory=dict)  # per alias (tool name if none)
    preference: tuple[float, ...] | None = None  # over [aliases..., outcome, cost, latency]
    termination: str = ""


def _alias_counts(trajectory: Any) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for record in trajectory.records:
        counts[record.alias or record.tool] += 1
    return dict(counts)


def outcome_of(trajectory: Any, task: Any, *, family: str | None = None,
               preference: Sequence[float] | None = None) -> EpisodeOutcome:
    """The outcome of `trajectory` on `task` (family read from `task.family` when not given)."""
    fam = family if family is not None else str(getattr(task, "family", "all"))
    return EpisodeOutcome(
        task_id=str(trajectory.task_id), family=fam, outcome=float(trajectory.outcome),
        cost_usd=float(trajectory.cost_usd), latency_s=float(trajectory.latency_s),
        calls=_alias_counts(trajectory),
        preference=None if preference is None else tuple(float(x) for x in preference),
        termination=str(trajectory.termination))


def _means(outcomes: Sequence[EpisodeOutcome]) -> dict[str, float]:
    return {"accuracy": float(np.mean([o.outcome for o in outcomes])),
            "cost_usd": float(np.mean([o.cost_usd for o in outcomes])),
            "latency_s": float(np.mean([o.latency_s for o in outcomes]))}


def _count_matrix(outcomes: Sequence[EpisodeOutcome], aliases: Sequence[str]) -> np.ndarray:
    return np.asarray([[o.calls.get(a, 0) for a in aliases] for o in outcomes], np.float32)


def mean_preference_score(outcomes: Sequence[EpisodeOutcome], base: Sequence[EpisodeOutcome],
                          aliases: Sequence[str]) -> float:
    """Appendix L's R_e averaged over tasks; `base` holds the base policy's outcomes of the
    same tasks in the same order. Tasks without a preference vector use outcome-only
    (1 on the outcome, 0 elsewhere)."""
    if len(outcomes) != len(base):
        raise ValueError(f"{len(outcomes)} outcomes but {len(base)} base outcomes")
    if not outcomes:
        return 0.0
    for o, b in zip(outcomes, base, strict=True):
        if o.task_id != b.task_id:
            raise ValueError(f"outcome of task {o.task_id!r} paired with base {b.task_id!r}")
    width = len(aliases) + 3
    neutral = tuple([0.0] * len(aliases) + [1.0, 0.0, 0.0])
    prefs = np.asarray([o.preference or neutral for o in outcomes], np.float32)
    if prefs.shape[1] != width:
        raise ValueError(f"preference vectors have {prefs.shape[1]} entries, expected {width} "
                         f"({len(aliases)} aliases + outcome, cost, latency)")

    def column(items: Sequence[EpisodeOutcome], name: str) -> np.ndarray:
        return np.asarray([getattr(o, name) for o in items], np.float32)

    scores = preference_scores(
        _count_matrix(outcomes, aliases), column(outcomes, "outcome"),
        column(outcomes, "cost_usd"), column(outcomes, "latency_s"), prefs,
        _count_matrix(base, aliases), column(base, "outcome"), column(base, "cost_usd"),
        column(base, "latency_s"))
    return float(np.mean(np.asarray(scores)))


def policy_table(outcomes: Sequence[EpisodeOutcome], aliases: Sequence[str],
                 base: Sequence[EpisodeOutcome] | None = None) -> dict[str, Any]:
    """The `summary.json` entry of one policy (see the module docstring)."""
    if not outcomes:
        raise ValueError("policy_table needs at least one evaluated episode")
    table: dict[str, Any] = _means(outcomes)
    total: Counter[str] = Counter()
    for o in outcomes:
        total.update(o.calls)
    names = list(aliases) + sorted(set(total) - set(aliases))
    table["calls"] = {a: total.get(a, 0) / len(outcomes) for a in names}
    table["preference_score"] = mean_preference_score(
        outcomes, base if base is not None else outcomes, aliases)
    by_family: dict[str, Any] = {}
    for fam in sorted({o.family for o in outcomes}):
        members = [o for o in outcomes if o.family == fam]
        by_family[fam] = {**_means(members), "tasks": len(members)}
    table["by_family"] = by_family
    table["tasks"] = len(outcomes)
    return table


def call_share(outcomes: Sequence[EpisodeOutcome], alias: str) -> float:
    """Fraction of all calls that named `alias` (0 when there were no calls)."""
    total = sum(sum(o.calls.values()) for o in outcomes)
    return sum(o.calls.get(alias, 0) for o in outcomes) / total if total else 0.0


__all__ = ["EpisodeOutcome", "call_share", "mean_preference_score", "outcome_of",
           "policy_table"]
