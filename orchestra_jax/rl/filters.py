"""Which samples enter the loss, decided on the host before the batch goes to the device.

The method trains only on turn-samples that pass every filter, and drops rather than penalises
format errors:

1. ``homogeneous_group``: a group whose rewards barely differ (std <= ``min_group_std``, 0.1 in
   the method) carries no ranking signal -- every advantage is ~0 -- so all of it is dropped;
2. ``invalid_final_output``: the trajectory never produced a valid final output (qa: no
   executed ``answer`` call);
3. ``malformed_turn``: the turn's tool call did not parse;
4. ``truncated``: the sample hit the response-length limit, so its end (and its reward) is an
   artefact of the limit.

Everything here is numpy on per-sample host arrays; nothing imports jax. ``filter_samples``
returns a keep mask and, per reason, how many samples that reason rejected, for the metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

REASONS = ("homogeneous_group", "invalid_final_output", "malformed_turn", "truncated")


@dataclass(frozen=True)
class FilterResult:
    """``keep[i]`` says whether sample ``i`` enters the loss. ``dropped[reason]`` counts the
    samples that ``reason`` rejects (a sample failing two filters counts under both);
    ``n_dropped`` counts each rejected sample once."""

    keep: np.ndarray
    dropped: dict[str, int]

    @property
    def n_kept(self) -> int:
        return int(self.keep.sum())

    @property
    def n_dropped(self) -> int:
        return int(self.keep.size - self.keep.sum())


def _vector(name: str, values: object, n: int | None, dtype: type) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if n is not None and array.shape[0] != n:
        raise ValueError(f"{name} has {array.shape[0]} entries, expected {n}")
    if dtype is bool and array.dtype != bool:
        if not np.isin(array, (0, 1)).all():
            raise ValueError(f"{name} must hold booleans (or 0/1)")
        array = array.astype(bool)
    if dtype is float:
        array = array.astype(np.float64)
        if not np.isfinite(array).all():
            raise ValueError(f"{name} holds a non-finite value")
    return array


def group_reward_std(
    group_ids: Sequence | np.ndarray,
    rewards: Sequence | np.ndarray,
    *,
    trajectory_ids: Sequence | np.ndarray | None = None,
    ddof: int = 1,
) -> np.ndarray:
    """Per sample, the std of the rewards of its group, ``(N,)``.

    With several turn-samples per trajectory, pass ``trajectory_ids`` so each trajectory counts
    once (otherwise long trajectories would weigh more). ``ddof=1`` is the sample std that the
    advantage uses; a group with one trajectory has std 0."""
    ids = _vector("group_ids", group_ids, None, object)
    n = ids.shape[0]
    values = _vector("rewards", rewards, n, float)
    if trajectory_ids is None:
        unit = np.arange(n)
    else:
        unit = _vector("trajectory_ids", trajectory_ids, n, object)
    std_of: dict[object, float] = {}
    for gid in dict.fromkeys(ids.tolist()):
        members = ids == gid
        _, first = np.unique(unit[members], return_index=True)
        group_rewards = values[members][first]
        std_of[gid] = (float(np.std(group_rewards, ddof=ddof))
                       if group_rewards.size > ddof else 0.0)
    return np.array([std_of[g] for g in ids.tolist()], dtype=np.float64)


def filter_samples(
    group_ids: Sequence | np.ndarray,
    rewards: Sequence | np.ndarray,
    *,
    min_group_std: float | None = 0.1,
    valid_final_output: Sequence | np.ndarray | None = None,
    well_formed: Sequence | np.ndarray | None = None,
    truncated: Sequence | np.ndarray | None = None,
    trajectory_ids: Sequence | np.ndarray | None = None,
    ddof: int = 1,
) -> FilterResult:
    """Keep mask and drop counts for ``N`` samples. Each filter is off when its input is None
    (``min_group_std=None`` turns off homogeneity filtering). Flags are per sample: for
    turn-samples, repeat the trajectory's ``valid_final_output`` on each of its turns."""
    ids = _vector("group_ids", group_ids, None, object)
    n = ids.shape[0]
    _vector("rewards", rewards, n, float)
    failing: dict[str, np.ndarray] = {}
    if min_group_std is not None:
        std = group_reward_std(ids, rewards, trajectory_ids=trajectory_ids, ddof=ddof)
        failing["homogeneous_group"] = std <= min_group_std
    if valid_final_output is not None:
        failing["invalid_final_output"] = ~_vector("valid_final_output", valid_final_output,
                                                   n, bool)
    if well_formed is not None:
        failing["malformed_turn"] = ~_vector("well_formed", well_formed, n, bool)
    if truncated is not None:
        failing["truncated"] = _vector("truncated", truncated, n, bool)
    keep = np.ones(n, dtype=bool)
    for fails in failing.values():
        keep &= ~fails
    return FilterResult(keep=keep, dropped={r: int(failing[r].sum()) if r in failing else 0
                                            for r in REASONS})
