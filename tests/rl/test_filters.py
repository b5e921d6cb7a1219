"""Host-side sample filters."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from orchestra_jax.rl.filters import filter_samples, group_reward_std

IDS = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
REWARDS = np.array([1.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.3, 0.35, 0.3])


def test_homogeneous_groups_are_dropped_whole():
    result = filter_samples(IDS, REWARDS, min_group_std=0.1)
    # group 0 std 0.577 kept; group 1 std 0 dropped; group 2 std 0.029 dropped
    np.testing.assert_array_equal(result.keep, [1, 1, 1, 0, 0, 0, 0, 0, 0])
    assert result.dropped["homogeneous_group"] == 6
    assert (result.n_kept, result.n_dropped) == (3, 6)


def test_every_flag_drops_and_is_counted_per_reason():
    valid = np.array([1, 0, 1, 1, 1, 1, 1, 1, 1], bool)
    well_formed = np.array([1, 1, 0, 1, 1, 1, 1, 1, 1])
    truncated = np.array([0, 1, 0, 0, 0, 0, 0, 0, 0], bool)
    result = filter_samples(IDS, REWARDS, min_group_std=None, valid_final_output=valid,
                            well_formed=well_formed, truncated=truncated)
    np.testing.assert_array_equal(result.keep, [1, 0, 0, 1, 1, 1, 1, 1, 1])
    assert result.dropped == {"homogeneous_group": 0, "invalid_final_output": 1,
                              "malformed_turn": 1, "truncated": 1}
    assert result.n_dropped == 2  # sample 1 fails two filters, counted once here


def test_turn_samples_count_each_trajectory_once_in_the_group_std():
    # group 0: trajectories a (reward 1, three turns) and b, c (reward 0.9): by trajectory the
    # std is 0.058 (homogeneous); counted per turn it would be 0.055 -- use a case where the
    # turn-weighting flips the decision: a 1.0 with 4 turns, b 0.8 with one turn.
    ids = np.zeros(5, int)
    rewards = np.array([1.0, 1.0, 1.0, 1.0, 0.8])
    traj = np.array(["a", "a", "a", "a", "b"])
    per_traj = group_reward_std(ids, rewards, trajectory_ids=traj)
    np.testing.assert_allclose(per_traj, np.std([1.0, 0.8], ddof=1))
    assert filter_samples(ids, rewards, trajectory_ids=traj).keep.all()
    assert not filter_samples(ids, rewards).keep.any()  # per turn: std 0.089 <= 0.1


def test_single_trajectory_group_has_zero_std():
    assert group_reward_std(np.array([4]), np.array([1.0]))[0] == 0.0


def test_bad_inputs_are_value_errors_naming_the_input():
    with pytest.raises(ValueError, match="rewards has 2 entries"):
        filter_samples(IDS, REWARDS[:2])
    with pytest.raises(ValueError, match="well_formed"):
        filter_samples(IDS, REWARDS, well_formed=np.full(9, 2))
    with pytest.raises(ValueError, match="non-finite"):
        filter_samples(IDS, np.full(9, np.nan))
    with pytest.raises(ValueError, match="one-dimensional"):
        filter_samples(IDS.reshape(3, 3), REWARDS)


def test_filters_do_not_import_jax():
    code = ("import sys; import orchestra_jax.rl.filters; "
            "print('jax' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
