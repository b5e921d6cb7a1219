"""Per-family routing dynamics of a toolworld GRPO run, one JSON line per RL step.

    python benchmarks/routing_probe.py --workdir /tmp/probe --config.train.steps=30

Runs `orchestra train` on `experiments/toolworld_tiny.py` (or `--config`) with the given
overrides and, at every RL step, prints for each task family the sampled episodes' accuracy,
mean cost and the share of each first call (`tool[alias]`, or `malformed`) -- the numbers that
show whether the policy conditions its routing on the task or moves every family alike, and
the policy's exact first-turn tool probabilities per family on a fixed set of prompts (see
docs/research/toolworld-log.md). The last line is the run's summary (policies'
accuracy and cost on the test tasks when `eval.final` is on). It watches the run through
`train(observer=...)`, which sees each step after its update (the probabilities are the
updated policy's); the training itself is exactly the command's.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def first_call(trajectory: Any) -> str:
    """`tool[alias]` of the episode's first turn, or `malformed` when it called nothing."""
    if not trajectory.samples or not trajectory.samples[0].calls:
        return "malformed"
    call = trajectory.samples[0].calls[0]
    alias = (call.arguments or {}).get("model", "?") if isinstance(call.arguments, dict) else "?"
    return f"{call.name}[{alias}]"


def family_stats(tasks: list[Any], trajectories: list[Any]) -> dict[str, Any]:
    """Accuracy, cost and first-call shares of one step's episodes, per task family."""
    by_family: dict[str, list[Any]] = collections.defaultdict(list)
    for t in trajectories:
        task = tasks[t.group] if t.group is not None else None
        by_family[getattr(task, "family", "?")].append(t)
    out: dict[str, Any] = {}
    for family, group in sorted(by_family.items()):
        calls = collections.Counter(first_call(t) for t in group)
        n = len(group)
        tools = collections.Counter(c.split("[")[0] for c in calls.elements())
        out[family] = {"n": n, "acc": round(float(np.mean([t.outcome for t in group])), 3),
                       "cost_m$": round(1e3 * float(np.mean([t.cost_usd for t in group])), 3),
                       "first_tool": {k: round(v / n, 2) for k, v in tools.most_common()},
                       "top_first_call": calls.most_common(1)[0][0]}
    return out


class FirstTurnProbe:
    """Exact first-turn tool probabilities on a fixed set of prompts per family.

    Sampled shares of 2 tasks x 8 episodes a family move by +-0.2 from step to step on chance
    alone; the policy's own probabilities on the same prompts every step show a trend that
    small. The set is the first `per_family` first-turn prompts of each family the run meets
    (its first steps' tasks); probabilities are renormalised among the call pieces."""

    def __init__(self, per_family: int = 12):
        self.per_family = per_family
        self.prompts: dict[str, list[list[int]]] = collections.defaultdict(list)
        self.run: Any = None

    def collect(self, tasks: list[Any], trajectories: list[Any]) -> None:
        seen = set()
        for t in trajectories:
            family = getattr(tasks[t.group], "family", "?") if t.group is not None else "?"
            if t.group in seen or not t.samples or len(self.prompts[family]) >= self.per_family:
                continue
            seen.add(t.group)
            self.prompts[family].append(list(t.samples[0].prompt_ids))

    def probabilities(self) -> dict[str, dict[str, float]]:
        import jax
        import jax.numpy as jnp
        from flax import nnx

        from orchestra_jax.tools.qa_tools import TOOL_NAMES

        run = self.run
        if run is None or not self.prompts:
            return {}
        texts = run.suite.choice_texts
        try:
            ids = list(run.suite.choice_token_ids(run.tokenizer))
        except ValueError:
            return {}
        if not ids:
            return {}
        model = nnx.merge(run.graphdef, run.state.params)
        out: dict[str, dict[str, float]] = {}
        for family, prompts in sorted(self.prompts.items()):
            width = max(len(p) for p in prompts)
            pad = run.tokenizer.pad_token_id
            tokens = np.full((len(prompts), width), pad, np.int32)  # left-padded
            mask = np.zeros_like(tokens)
            for row, p in enumerate(prompts):
                tokens[row, width - len(p):] = p
                mask[row, width - len(p):] = 1
            hidden, _ = model.hidden_states(jnp.asarray(tokens), jnp.asarray(mask))
            logits = model.logits_from_hidden(hidden[:, -1:])[:, 0]
            probs = np.asarray(jax.nn.softmax(logits[:, jnp.asarray(ids)], axis=-1)).mean(0)
            tools: dict[str, float] = collections.defaultdict(float)
            for text, p in zip(texts, probs, strict=True):
                tools[next(t for t in TOOL_NAMES if t in text)] += float(p)
            out[family] = {k: round(v, 3) for k, v in tools.items()}
        return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="experiments/toolworld_tiny.py")
    parser.add_argument("--workdir", required=True)
    args, overrides = parser.parse_known_args(argv)  # the rest: --config.KEY=VALUE

    from orchestra_jax.train.config import load_config
    from orchestra_jax.train.loop import train

    config = load_config(args.config, overrides)
    started = time.perf_counter()
    probe = FirstTurnProbe()

    def observe(run: Any, result: Any) -> None:
        probe.run = run
        probe.collect(result.tasks, result.trajectories)
        record = {"step": result.step, "reward": round(float(np.mean(result.rewards)), 3),
                  "elapsed_s": round(time.perf_counter() - started, 1),
                  "first_turn_p": probe.probabilities(),
                  "families": family_stats(result.tasks, result.trajectories)}
        print(json.dumps(record), flush=True)

    summary = train(config, Path(args.workdir), observer=observe)
    policies = summary.get("policies", {})
    brief = {name: {"acc": round(p["accuracy"], 3), "cost_m$": round(1e3 * p["cost_usd"], 3),
                    "by_family": {f: round(v["accuracy"], 2)
                                  for f, v in p.get("by_family", {}).items()}}
             for name, p in policies.items()
             if not name.startswith("route:") or name == summary.get("best_fixed_route")}
    print(json.dumps({"summary": {"wall_s": round(summary["wall_time_s"], 1), "policies": brief,
                                  "preference_eval": summary.get("preference_eval")}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
