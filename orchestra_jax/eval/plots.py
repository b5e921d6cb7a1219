"""The accuracy-vs-cost picture of every evaluated policy, with its Pareto front.

Why a PNG next to `summary.json`: the method's claim is a trade-off (as right as the dearest
route, for a fraction of its cost), which one picture shows at a glance. A run evaluates some
25 fixed routes, and 25 names printed beside their points pile on top of each other; so only
the points a reader looks for carry a name -- the learned policies, the random router, the
best fixed route and the Pareto front -- and the other routes are small grey dots. Labels are
placed away from each other (with a leader line when moved off their point). Cost is shown
in m$ (thousandths of a US dollar per task), on a log axis when it spans more than a decade.
matplotlib's Agg backend: no display needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROUTE_PREFIX = "route:"
# Display names of the policies the evaluation names (other names are shown as they are).
DISPLAY_NAMES = {"trained": "trained", "sft": "warm start", "random": "random"}


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


def best_fixed_route(policies: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The fixed route (a name starting "route:") with the highest accuracy, ties broken by
    the lower cost -- the rule `summary.json`'s `best_fixed_route` uses. None without routes."""
    routes = [n for n in policies if n.startswith(ROUTE_PREFIX)]
    return max(routes, key=lambda n: (float(policies[n]["accuracy"]),
                                      -float(policies[n]["cost_usd"])), default=None)


def display_name(name: str) -> str:
    """The text a policy is labelled with: "sft" reads "warm start", routes lose "route:"."""
    return DISPLAY_NAMES.get(name, name.removeprefix(ROUTE_PREFIX))


def labelled_policies(policies: Mapping[str, Mapping[str, Any]],
                      best_route: str | None = None) -> list[str]:
    """Names of the policies the plot labels, in drawing order: every named (non-route)
    policy, the best fixed route, then the other routes on the Pareto front."""
    best = best_route if best_route is not None else best_fixed_route(policies)
    front = pareto_front(_points(policies))
    named = [n for n in policies if not n.startswith(ROUTE_PREFIX)]
    routes = [best] if best in policies else []
    routes += [n for n in front if n.startswith(ROUTE_PREFIX) and n != best]
    return named + routes


def plot_labels(policies: Mapping[str, Mapping[str, Any]],
                best_route: str | None = None) -> list[str]:
    """The label texts the plot draws (and no others), in the order of `labelled_policies`;
    the best fixed route's label says so."""
    best = best_route if best_route is not None else best_fixed_route(policies)
    return [f"{display_name(n)} (best fixed route)" if n == best else display_name(n)
            for n in labelled_policies(policies, best)]


def _points(policies: Mapping[str, Mapping[str, Any]]) -> dict[str, tuple[float, float]]:
    """name -> (cost in m$, accuracy in %); a free policy sits at 1e-4 m$ for the log axis."""
    return {n: (max(1e3 * float(p["cost_usd"]), 1e-4), 100.0 * float(p["accuracy"]))
            for n, p in policies.items()}


def _style(name: str, best: str | None, front: Sequence[str]) -> dict[str, Any]:
    if name == "trained":
        return {"marker": "*", "s": 220, "color": "tab:red", "zorder": 5}
    if name == "sft":
        return {"marker": "D", "s": 60, "color": "tab:orange", "zorder": 4}
    if name == "random":
        return {"marker": "X", "s": 70, "color": "tab:purple", "zorder": 4}
    if not name.startswith(ROUTE_PREFIX):
        return {"marker": "P", "s": 70, "color": "tab:green", "zorder": 4}
    if name == best:
        return {"marker": "s", "s": 60, "color": "tab:blue", "zorder": 4}
    if name in front:
        return {"marker": "o", "s": 36, "color": "tab:blue", "zorder": 3}
    return {"marker": "o", "s": 14, "color": "0.65", "zorder": 2}


# Offsets (points) tried for a label, nearest first: right, left, above and below, then the
# diagonals, each at growing distances.
_OFFSETS = [(r * dx, r * dy) for r in (1.0, 1.8, 2.8, 4.0, 5.5, 7.5, 10.0)
            for dx, dy in ((8, -2), (-8, -2), (0, 10), (0, -10), (8, 8), (-8, 8), (8, -8),
                           (-8, -8), (3, 10), (-3, 10), (3, -10), (-3, -10))]


def _place_labels(fig: Any, ax: Any, entries: Sequence[tuple[str, float, float, bool]],
                  others: Sequence[tuple[float, float]] = ()) -> None:
    """Annotate each (text, x, y, bold) at the first offset whose box overlaps no label, no
    marker (labelled ones, and the unlabelled points `others`) and stays inside the axes
    (else where it overlaps least); a label moved
    off its point gets a leader line. Greedy in the given order, so the first entries sit
    closest to their points."""
    from matplotlib.text import Text

    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    taken = []
    for _, x, y, _ in entries:  # the labelled markers themselves, as small boxes
        px, py = ax.transData.transform((x, y))
        taken.append((px - 6, py - 6, px + 6, py + 6))
    for x, y in others:
        px, py = ax.transData.transform((x, y))
        taken.append((px - 3, py - 3, px + 3, py + 3))

    def clash(box: tuple[float, float, float, float]) -> float:
        """Overlap with the labels placed so far, plus the part of the box outside the axes."""
        x0, y0, x1, y1 = box
        outside = ((x1 - x0) * (y1 - y0)
                   - max(0.0, min(x1, frame.x1) - max(x0, frame.x0))
                   * max(0.0, min(y1, frame.y1) - max(y0, frame.y0)))
        return 10 * outside + sum(max(0.0, min(x1, b[2]) - max(x0, b[0]))
                                  * max(0.0, min(y1, b[3]) - max(y0, b[1])) for b in taken)

    def annotate(text: str, x: float, y: float, bold: bool, dx: float, dy: float) -> Any:
        far = abs(dx) > 9 or abs(dy) > 11 or not bold  # a route's label always points
        return ax.annotate(
            text, (x, y), xytext=(dx, dy), textcoords="offset points", va="center",
            ha="left" if dx > 0 else "right" if dx < 0 else "center", fontsize=8,
            fontweight="bold" if bold else "normal",
            arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.8, "shrinkA": 0,
                        "shrinkB": 3} if far else None)

    for text, x, y, bold in entries:
        offsets = _OFFSETS if bold else _OFFSETS[12:]  # a route's label leaves room for its line
        best: tuple[float, float, float] | None = None  # (clash, dx, dy)
        for dx, dy in offsets:
            ann = annotate(text, x, y, bold, dx, dy)
            ann.update_positions(renderer)
            e = Text.get_window_extent(ann, renderer)  # the text alone, not its leader line
            ann.remove()
            score = clash((e.x0 - 2, e.y0 - 2, e.x1 + 2, e.y1 + 2))
            if best is None or score < best[0]:
                best = (score, dx, dy)
            if score == 0:
                break
        assert best is not None
        ann = annotate(text, x, y, bold, best[1], best[2])
        ann.update_positions(renderer)
        e = Text.get_window_extent(ann, renderer)
        taken.append((e.x0 - 2, e.y0 - 2, e.x1 + 2, e.y1 + 2))


def pareto_figure(policies: Mapping[str, Mapping[str, Any]], best_route: str | None = None,
                  title: str = "Accuracy vs mean cost per task") -> Any:
    """The matplotlib figure of `policies` (name -> an entry with `accuracy` in [0, 1] and
    `cost_usd`); its axes' texts are exactly `plot_labels(policies, best_route)`. The caller
    closes it (`matplotlib.pyplot.close(fig)`)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    best = best_route if best_route is not None else best_fixed_route(policies)
    points = _points(policies)
    front = pareto_front(points)
    fig, ax = plt.subplots(figsize=(10, 6.5), dpi=110)
    for name, (cost, acc) in points.items():
        ax.scatter([cost], [acc], linewidths=0, **_style(name, best, front))
    ax.plot([points[n][0] for n in front], [points[n][1] for n in front], "--",
            color="0.45", linewidth=1, zorder=1)
    costs = [c for c, _ in points.values()]
    if max(costs) / min(costs) > 10:
        ax.set_xscale("log")
        ax.set_xlabel("mean cost per task (m$ = thousandths of a US dollar; log scale)")
    else:
        ax.set_xlabel("mean cost per task (m$ = thousandths of a US dollar)")
    lo, hi = min(costs), max(costs)
    if ax.get_xscale() == "log":
        ax.set_xlim(lo / 2.5, hi * 4)
    else:
        span = max(hi - lo, 1e-3)
        ax.set_xlim(lo - 0.1 * span, hi + 0.35 * span)
    ax.set_ylabel("accuracy on the held-out tasks (%)")
    floor = max(0.0, 10.0 * ((min(a for _, a in points.values()) - 10.0) // 10.0))
    ax.set_ylim(floor - 2, 104)
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(handles=[
        Line2D([], [], color="0.45", linestyle="--", label="Pareto front"),
        Line2D([], [], color="tab:blue", marker="s", linestyle="", label="best fixed route"),
        Line2D([], [], color="tab:blue", marker="o", linestyle="",
               label="fixed route on the front"),
        Line2D([], [], color="0.65", marker="o", markersize=4, linestyle="",
               label="other fixed routes"),
    ], loc="lower right", fontsize=8, framealpha=0.9)
    fig.tight_layout()
    names = labelled_policies(policies, best)
    texts = plot_labels(policies, best)
    _place_labels(fig, ax, [(t, *points[n], not n.startswith(ROUTE_PREFIX))
                            for n, t in zip(names, texts, strict=True)],
                  [p for n, p in points.items() if n not in names])
    return fig


def pareto_plot(policies: Mapping[str, Mapping[str, Any]], path: str | Path,
                title: str = "Accuracy vs mean cost per task",
                best_route: str | None = None) -> Path:
    """Write the plot of `policies` (name -> an entry with `accuracy` and `cost_usd`) to
    `path` and return it. `best_route` names the best fixed route (None: the most accurate
    route, the cheaper on a tie)."""
    import matplotlib.pyplot as plt

    fig = pareto_figure(policies, best_route, title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


__all__ = ["best_fixed_route", "display_name", "labelled_policies", "pareto_figure",
           "pareto_front", "pareto_plot", "plot_labels"]
