"""The per-task record of an evaluation: `trajectories.jsonl`, one line per task.

Why a file of its own: `summary.json` holds means, and the paper's efficiency columns can only
be checked -- or recomputed with other prices -- from what each episode did. A line is

    {"id", "policy", "outcome", "cost_usd", "latency_s", "turns", "termination",
     "calls": [{"turn", "tool", "alias", "model", "prompt_tokens", "completion_tokens",
                "cost_usd", "latency_s", "error"}],
     "orchestrator": {"prompt_tokens", "completion_tokens", "cost_usd"},
     "info": {...}}                      # what the environment says (qa: how it was graded)

`cost_usd` is the calls' cost plus the orchestrator's (its own tokens at its model's price,
0 when the setting does not price it); `latency_s` is the calls' wall-clock only. The trained
policy's lines go to `trajectories.jsonl`; every other policy's to
`trajectories/<policy>.jsonl` beside it. No API key or endpoint URL is written: a call names
the alias and the model only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestra_jax.rollout.trajectory import Trajectory

#: The policy whose lines go to `trajectories.jsonl` itself.
MAIN_POLICY = "trained"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]+")


def trajectory_line(trajectory: Trajectory, policy: str) -> dict[str, Any]:
    """One task's line (see the module docstring)."""
    calls = [{"turn": r.turn, "tool": r.tool, "alias": r.alias, "model": r.model,
              "prompt_tokens": r.tokens_in, "completion_tokens": r.tokens_out,
              "cost_usd": r.cost_usd, "latency_s": r.latency_s,
              "error": None if r.error_kind is None else str(r.error_kind)}
             for r in trajectory.records]
    return {"id": trajectory.task_id, "policy": policy, "outcome": trajectory.outcome,
            "cost_usd": trajectory.cost_usd, "latency_s": trajectory.latency_s,
            "turns": trajectory.turns, "termination": trajectory.termination,
            "calls": calls,
            "orchestrator": {"prompt_tokens": trajectory.prompt_tokens,
                             "completion_tokens": trajectory.completion_tokens,
                             "cost_usd": trajectory.policy_cost_usd},
            "info": dict(trajectory.info)}


def policy_file(out_dir: Path, policy: str) -> Path:
    """Where `policy`'s lines go (the trained policy's: `trajectories.jsonl`)."""
    if policy == MAIN_POLICY:
        return out_dir / "trajectories.jsonl"
    return out_dir / "trajectories" / f"{_UNSAFE.sub('_', policy)}.jsonl"


def write_trajectories(kept: Mapping[str, Sequence[Trajectory]], out_dir: Path,
                       ) -> dict[str, str]:
    """Write every policy's lines; returns policy -> file written."""
    files = {}
    for policy, trajectories in kept.items():
        path = policy_file(out_dir, policy)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as f:
            for t in trajectories:
                f.write(json.dumps(trajectory_line(t, policy), default=str,
                                   ensure_ascii=False) + "\n")
        files[policy] = str(path)
    return files


__all__ = ["MAIN_POLICY", "policy_file", "trajectory_line", "write_trajectories"]
