"""The Pareto plot names only what a reader looks for -- the learned policies, the random
router, the best fixed route and the routes on the front -- and its labels do not overlap."""

from __future__ import annotations

import itertools

import matplotlib.pyplot as plt
import pytest
from matplotlib.text import Text

from orchestra_jax.eval.plots import (
    best_fixed_route,
    pareto_figure,
    pareto_plot,
    plot_labels,
)

# The README run's shape: 24 one-alias routes (accuracy %, cost m$) and the named policies.
ROUTES = {
    "answer[frontier]": (52.8, 6.49), "answer[mini]": (49.2, 0.97), "answer[open]": (42.0, 0.37),
    "answer[coder]": (40.8, 0.28), "answer[math-small]": (45.0, 0.08),
    "answer[math-large]": (52.0, 0.45), "search>answer[frontier]": (78.5, 12.79),
    "search>answer[mini]": (65.2, 1.96), "search>answer[open]": (56.8, 0.79),
    "search>answer[coder]": (48.2, 0.62), "search>answer[math-small]": (41.2, 0.17),
    "search>answer[math-large]": (57.0, 0.97), "enhance_reasoning>answer[frontier]": (56.2, 12.96),
    "enhance_reasoning>answer[mini]": (55.2, 1.96), "enhance_reasoning>answer[open]": (52.2, 0.78),
    "enhance_reasoning>answer[coder]": (56.8, 0.60),
    "enhance_reasoning>answer[math-small]": (50.5, 0.17),
    "enhance_reasoning>answer[math-large]": (53.5, 0.98), "frontier-all": (85.25, 19.25),
    "search>enhance_reasoning>answer[mini]": (80.0, 2.99),
    "search>enhance_reasoning>answer[open]": (66.5, 1.26),
    "search>enhance_reasoning>answer[coder]": (64.2, 1.00),
    "search>enhance_reasoning>answer[math-small]": (50.5, 0.28),
    "search>enhance_reasoning>answer[math-large]": (60.2, 1.54),
}
NAMED = {"trained": (91.25, 2.01), "sft": (46.5, 2.6), "random": (59.3, 2.9)}


def _policies() -> dict[str, dict[str, float]]:
    points = {**NAMED, **{f"route:{n}": p for n, p in ROUTES.items()}}
    return {n: {"accuracy": a / 100, "cost_usd": c / 1e3} for n, (a, c) in points.items()}


def test_best_fixed_route_is_the_most_accurate_then_the_cheaper():
    policies = {"route:a": {"accuracy": 0.8, "cost_usd": 2.0},
                "route:b": {"accuracy": 0.8, "cost_usd": 1.0},
                "trained": {"accuracy": 0.9, "cost_usd": 0.5}}
    assert best_fixed_route(policies) == "route:b"
    assert best_fixed_route({"trained": {"accuracy": 1.0, "cost_usd": 0.0}}) is None


def test_labels_are_the_named_policies_the_best_route_and_the_front_only():
    labels = plot_labels(_policies())
    assert labels[:4] == ["trained", "warm start", "random", "frontier-all (best fixed route)"]
    # The cheap routes the trained policy does not dominate; nothing dearer than it.
    assert set(labels[4:]) == {
        "answer[math-small]", "enhance_reasoning>answer[math-small]", "answer[math-large]",
        "enhance_reasoning>answer[coder]", "search>answer[math-large]",
        "search>enhance_reasoning>answer[coder]", "search>enhance_reasoning>answer[open]"}
    assert "search>enhance_reasoning>answer[mini]" not in labels
    assert plot_labels(_policies(), best_route="route:answer[mini]")[3] == (
        "answer[mini] (best fixed route)")


def test_figure_draws_exactly_those_labels_and_none_overlap():
    policies = _policies()
    fig = pareto_figure(policies)
    try:
        ax = fig.axes[0]
        assert sorted(t.get_text() for t in ax.texts) == sorted(plot_labels(policies))
        renderer = fig.canvas.get_renderer()
        boxes = [Text.get_window_extent(t, renderer) for t in ax.texts]
        frame = ax.get_window_extent(renderer)
        for box in boxes:
            assert frame.x0 <= box.x0 and box.x1 <= frame.x1
            assert frame.y0 <= box.y0 and box.y1 <= frame.y1
        for a, b in itertools.combinations(boxes, 2):
            assert not a.overlaps(b)
        assert ax.get_xscale() == "log" and "m$" in ax.get_xlabel()
        assert "%" in ax.get_ylabel()
    finally:
        plt.close(fig)


@pytest.mark.parametrize("best_route", [None, "route:frontier-all"])
def test_pareto_plot_writes_the_png(tmp_path, best_route):
    path = pareto_plot(_policies(), tmp_path / "out" / "pareto.png", best_route=best_route)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
