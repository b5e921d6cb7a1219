"""Reward-independent statistics of a step's episodes, under the documented tag names.

Turned into TensorBoard records by `train.metrics` and into the periodic evaluation's
numbers by `eval.runner`; the reward is the reward module's business and is logged from
there.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from orchestra_jax.rollout.trajectory import Trajectory


def call_key(record: Any) -> str:
    """The per-alias key of a call: the expert alias it named, else its tool's name."""
    return record.alias if record.alias else record.tool


def rollout_metrics(trajectories: Sequence[Trajectory]) -> dict[str, float]:
    """Reward-independent statistics of one step's episodes, under documented tags.

    Means are per episode (per turn for format errors, per call for the tool error rate).
    An empty step gives `{"train/episodes": 0.0}` so the caller can still log that it happened.
    """
    n = len(trajectories)
    out: dict[str, float] = {"train/episodes": float(n)}
    if n == 0:
        return out

    def mean(values: Iterable[float]) -> float:
        return float(sum(values)) / n

    out["train/accuracy"] = mean(t.outcome for t in trajectories)
    out["train/cost_usd"] = mean(t.cost_usd for t in trajectories)
    out["train/latency_s"] = mean(t.latency_s for t in trajectories)
    out["train/wall_s"] = mean(t.wall_s for t in trajectories)
    out["train/turns"] = mean(t.turns for t in trajectories)
    out["train/answered_rate"] = mean(t.termination == "answered" for t in trajectories)
    out["train/prompt_tokens"] = mean(t.prompt_tokens for t in trajectories)
    out["train/completion_tokens"] = mean(t.completion_tokens for t in trajectories)
    out["train/tool_tokens"] = mean(t.tool_tokens_in + t.tool_tokens_out for t in trajectories)
    for reason, count in sorted(Counter(t.termination for t in trajectories).items()):
        out[f"train/termination/{reason}"] = count / n

    records = [r for t in trajectories for r in t.records]
    out["train/calls_per_episode"] = len(records) / n
    by_key = Counter(call_key(r) for r in records)
    for key, count in sorted(by_key.items()):
        out[f"train/calls_per_episode/{key}"] = count / n
        out[f"train/call_share/{key}"] = count / len(records)
    for tool, count in sorted(Counter(r.tool for r in records).items()):
        out[f"train/tool_calls_per_episode/{tool}"] = count / n
    failed = [str(r.error_kind) for r in records if r.error_kind is not None]
    out["train/tool_error_rate"] = len(failed) / len(records) if records else 0.0
    for kind, count in sorted(Counter(failed).items()):
        out[f"train/tool_errors/{kind}"] = count / n

    judged = [t.info for t in trajectories if "verdict_method" in t.info]
    if judged:  # environments that grade answers (qa): how, and how often the judge failed
        for method, count in sorted(Counter(str(i["verdict_method"]) for i in judged).items()):
            out[f"train/verdicts/{method}"] = count / n
        errors = Counter(str(i["judge_error"]) for i in judged if i.get("judge_error"))
        out["train/judge_error_rate"] = sum(errors.values()) / n
        for kind, count in sorted(errors.items()):
            out[f"train/judge_errors/{kind}"] = count / n
    if any(t.policy_cost_usd for t in trajectories):
        out["train/policy_cost_usd"] = mean(t.policy_cost_usd for t in trajectories)

    samples = [s for t in trajectories for s in t.samples]
    if samples:
        bad_turns = sum(1 for s in samples if s.malformed or s.format_errors)
        out["train/format_error_rate"] = bad_turns / len(samples)
        kinds = Counter(str(k) for s in samples for k in s.format_errors)
        for kind, count in sorted(kinds.items()):
            out[f"train/format_errors/{kind}"] = count / len(samples)
    return out


def tool_usage_histogram(trajectories: Sequence[Trajectory]) -> dict[str, np.ndarray]:
    """Per-episode call counts, as histogram tag -> one value per episode.

    `hist/calls_per_episode` holds each episode's total calls and
    `hist/calls_per_episode/<alias>` each episode's calls to that alias (0 where it was not
    called), so the dashboard shows how usage spreads over episodes, not only its mean.
    """
    if not trajectories:
        return {}
    keys = sorted({call_key(r) for t in trajectories for r in t.records})
    totals = np.asarray([len(t.records) for t in trajectories], dtype=np.float64)
    out = {"hist/calls_per_episode": totals}
    for key in keys:
        out[f"hist/calls_per_episode/{key}"] = np.asarray(
            [sum(1 for r in t.records if call_key(r) == key) for t in trajectories],
            dtype=np.float64,
        )
    return out


def trajectory_markdown(trajectory: Trajectory, *, max_chars: int = 4000) -> str:
    """A short markdown view of one episode for `text/trajectory`: outcome, turns, calls."""
    lines = [
        f"**task** `{trajectory.task_id}` · outcome {trajectory.outcome:g} · "
        f"{trajectory.termination} · {trajectory.turns} turns · "
        f"${trajectory.cost_usd:.4f} · {trajectory.latency_s:.2f}s",
        "",
    ]
    for sample in trajectory.samples:
        text = sample.text.strip().replace("\n", " ")
        flag = " (malformed)" if sample.malformed else ""
        lines.append(f"- turn {sample.turn}{flag}: {text}")
    for record in trajectory.records:
        status = f"error {record.error_kind}" if record.error_kind is not None else "ok"
        lines.append(
            f"- call `{record.tool}` -> {record.alias or '-'}: {status}, "
            f"${record.cost_usd:.4f}, {record.latency_s:.2f}s"
        )
    body = "\n".join(lines)
    return body if len(body) <= max_chars else body[:max_chars] + " …"
