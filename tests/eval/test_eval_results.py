"""Policy tables: means per task, calls per alias, per-family breakdown, the appendix-L score
against a base policy, and the Pareto front of the plot."""

from __future__ import annotations

import numpy as np
import pytest

from orchestra_jax.eval.plots import pareto_front, pareto_plot
from orchestra_jax.eval.results import EpisodeOutcome, call_share, policy_table
from orchestra_jax.rewards.preference_score import preference_score

ALIASES = ("big", "small")


def _o(task, fam, outcome, cost, latency, calls, pref=None):
    return EpisodeOutcome(task, fam, outcome, cost, latency, calls, pref)


def test_policy_table_means_calls_and_families():
    outcomes = [_o("a", "math", 1, 0.5, 2.0, {"big": 2}),
                _o("b", "math", 0, 0.1, 1.0, {"small": 1}),
                _o("c", "easy", 1, 0.0, 0.5, {"small": 1, "search": 1})]
    table = policy_table(outcomes, ALIASES)
    assert table["accuracy"] == pytest.approx(2 / 3)
    assert table["cost_usd"] == pytest.approx(0.2)
    assert table["latency_s"] == pytest.approx(3.5 / 3)
    assert table["calls"] == pytest.approx({"big": 2 / 3, "small": 2 / 3, "search": 1 / 3})
    assert table["by_family"]["math"] == pytest.approx(
        {"accuracy": 0.5, "cost_usd": 0.3, "latency_s": 1.5, "tasks": 2})
    assert table["by_family"]["easy"]["accuracy"] == 1.0
    assert call_share(outcomes, "big") == pytest.approx(2 / 5)


def test_preference_score_is_appendix_l_mean_against_the_base():
    pref = (0.0, 1.0, 1.0, 1.0, 0.0)  # likes "small", the outcome and low cost
    ours = [_o("a", "f", 1, 2.0, 1.0, {"small": 2}, pref), _o("b", "f", 0, 1.0, 1.0, {}, pref)]
    base = [_o("a", "f", 1, 4.0, 1.0, {"small": 1}, pref), _o("b", "f", 1, 1.0, 1.0, {}, pref)]
    table = policy_table(ours, ALIASES, base=base)
    expected = preference_score(
        np.array([[0, 2], [0, 0]]), np.array([1, 0]), np.array([2.0, 1.0]),
        np.array([1.0, 1.0]), np.array(pref), np.array([[0, 1], [0, 0]]), np.array([1, 1]),
        np.array([4.0, 1.0]), np.array([1.0, 1.0])) / 2
    # by hand: task a = 2/1 (small) + 1/1 (outcome) + 4/2 (cost) = 5; task b unsolved = 0
    assert table["preference_score"] == pytest.approx(float(expected)) == pytest.approx(2.5)
    with pytest.raises(ValueError, match="paired with base"):
        policy_table(ours, ALIASES, base=list(reversed(base)))


def test_pareto_front_and_plot(tmp_path):
    points = {"route:dear": (1.0, 0.8), "route:cheap": (0.01, 0.4), "trained": (0.05, 0.85),
              "route:bad": (0.5, 0.3)}
    assert pareto_front(points) == ["route:cheap", "trained"]
    policies = {n: {"cost_usd": c, "accuracy": a} for n, (c, a) in points.items()}
    path = pareto_plot(policies, tmp_path / "pareto.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
