"""What the ToolOrchestra reward reads from a step's episodes: tool counts, preferences.

Host code (numpy) between the episodes and the jittable reward in `toolorchestra.py`. It
knows nothing of the environment: the caller passes each episode's tool counts and the
preference vector its task carries (or None), and gets back the arrays the reward takes.

Why the solved credit: in a group every rollout of which solved its task the outcome
coordinate ties, so the paper's min-max normalisation counts it 0 for every rollout; in any
other group the normalised outcome (0 or 1) is the outcome itself. Adding the task's outcome
weight back to each rollout of an all-solved group is therefore the reward with the outcome
left unnormalised -- a constant within the group, which group-relative advantages never see,
but which makes the mean reward rise with the share of tasks the policy always solves
(`train/reward_raw_outcome`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from orchestra_jax.rewards.toolorchestra import NUM_EXTRA_FEATURES, toolorchestra_reward


@dataclass(frozen=True)
class DefaultPreference:
    """The preference a task gets when it carries none: one weight on every tool-count
    coordinate, then the outcome, cost and latency weights (`reward.preference`)."""

    tools: float
    outcome: float
    cost: float
    latency: float

    def vector(self, width: int) -> np.ndarray:
        return np.asarray([self.tools] * width + [self.outcome, self.cost, self.latency],
                          np.float32)


def preference_vector(own: Sequence[float] | None, default: DefaultPreference,
                      tool_names: Sequence[str], task_label: str) -> np.ndarray:
    """The task's own preference vector when it has one (checked against the reward's
    features), else the default; ValueError naming the task for a wrong shape."""
    width = max(1, len(tool_names))
    if own is None:
        return default.vector(width)
    vector = np.asarray(own, np.float32)
    if vector.shape != (width + NUM_EXTRA_FEATURES,):
        raise ValueError(f"task {task_label!r}: preference has shape {vector.shape}, expected "
                         f"({width + NUM_EXTRA_FEATURES},) (one per reward feature "
                         f"{list(tool_names)} + {NUM_EXTRA_FEATURES})")
    return vector


def tool_count_matrix(counts: Sequence[Mapping[str, int]],
                      tool_names: Sequence[str]) -> np.ndarray:
    """(N, max(1, K)) calls of each named tool per episode; unnamed tools are not features."""
    matrix = np.zeros((len(counts), max(1, len(tool_names))), np.float32)
    for i, used in enumerate(counts):
        for j, name in enumerate(tool_names):
            matrix[i, j] = used.get(name, 0)
    return matrix


def rewards_and_solved_credit(
    counts: np.ndarray, outcome: np.ndarray, cost_usd: np.ndarray, latency_s: np.ndarray,
    preference: np.ndarray, groups: np.ndarray, *, alias_min_over_users: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The ToolOrchestra reward of each episode, normalised within its group, and the
    outcome credit that normalisation takes from all-solved groups (module docstring)."""
    reward = toolorchestra_reward(counts, outcome, cost_usd, latency_s, preference, groups,
                                  alias_min_over_users=alias_min_over_users)
    solved = np.asarray(outcome) > 0.5
    all_solved = np.asarray([solved[groups == g].all() for g in groups], bool)
    width = counts.shape[1]
    credit = np.where(all_solved, preference[:, width], 0.0).astype(np.float32)
    return np.asarray(reward, np.float32), credit


__all__ = ["DefaultPreference", "preference_vector", "rewards_and_solved_credit",
           "tool_count_matrix"]
