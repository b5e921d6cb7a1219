"""The accuracy-vs-cost picture of every evaluated policy, with its Pareto front.

Why a PNG next to `summary.json`: the method's claim is a trade-off (as right as the dearest
route, for a fraction of its cost), which one picture shows at a glance. Cost is on a log
axis because routes differ by orders of magnitude. matplotlib's Agg backend: no display needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def pareto_front(points: Mapping[str, tuple[float, float]]) -> list[str]:
    """Names of the (cost, accuracy) points no other point beats on both (cheaper or equal
    and at least as accurate, one strictly), ordered by cost."""
    front = []
    for name, (cost, acc) in points.items():
        dominated = any((c <= cost and a >= acc) and (c < cost or a > acc)
                        for other, (c, a) in points.items() if other != name)
        if not dominated:
            front.append(name)
    return sorted(front, key=lambda n: points[n][0])


def pareto_plot(policies: Mapping[str, Mapping[str, Any]], path: str | Path,
                title: str = "Accuracy vs mean cost per task") -> Path:
    """Write the plot of `policies` (name -> an entry with `accuracy` and `cost_usd`) to
    `path`; learned policies (names without "route:") are drawn larger and labelled bold."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    points = {n: (max(float(p["cost_usd"]), 1e-7), float(p["accuracy"]))
              for n, p in policies.items()}
    front = pareto_front(points)
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    for name, (cost, acc) in points.items():
        learned = not name.startswith("route:")
        ax.scatter([cost], [acc], s=90 if learned else 30, marker="*" if learned else "o",
                   color="tab:red" if learned else "tab:blue", zorder=3)
        ax.annotate(name.removeprefix("route:"), (cost, acc), textcoords="offset points",
                    xytext=(4, 4), fontsize=7, fontweight="bold" if learned else "normal")
    ax.plot([points[n][0] for n in front], [points[n][1] for n in front], "--",
            color="gray", linewidth=1, zorder=2, label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("mean cost per task (USD, log scale)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


__all__ = ["pareto_front", "pareto_plot"]
