"""How much of the decision state tells the task families apart, for one set of params.

    python research/decision_states.py --workdir RUN [--params trained|sft|init]
        [--per-family 100] [--step N]

At the decision position (the last first-turn prompt position, where the policy writes its
call piece) of the first `--per-family` test tasks of each family, the final hidden states h:

- `probe_accuracy`: a linear probe's accuracy at telling the family (least squares onto the
  one-hot family, fitted on even-indexed prompts, scored on odd ones);
- `mean_sq_norm` (E|h|^2), `variance` (E|h - mean|^2), `between_family_variance`
  (sum_f share_f |mean_f - mean|^2) and the ratios `between_over_sq_norm`,
  `between_over_variance`;
- `shared_over_family_length`: |mean| / sqrt(between_family_variance), how much longer the
  direction every prompt shares is than the family directions.

Why: a gradient step moves each family's call logits by the shared part of the state plus a
family part that scales with the family directions' share, which is what the research log
(docs/research/toolworld-log.md, "What GRPO learns here") measures with these numbers.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
from run_state import (
    PARAMS,
    decision_states,
    first_of_each_family,
    first_turn_prompts,
    load_run,
    params_of,
)


def linear_probe_accuracy(h: np.ndarray, labels: np.ndarray) -> float:
    """Held-out accuracy of a least-squares linear map from h (plus a bias) to one-hot
    labels: fitted on even rows, scored on odd rows."""
    classes = np.unique(labels)
    x = np.concatenate([h, np.ones((len(h), 1), h.dtype)], axis=1)
    y = (labels[:, None] == classes[None, :]).astype(np.float64)
    fit, score = np.arange(0, len(h), 2), np.arange(1, len(h), 2)
    w, *_ = np.linalg.lstsq(x[fit], y[fit], rcond=None)
    return float(np.mean(classes[(x[score] @ w).argmax(1)] == labels[score]))


def variance_split(h: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Squared norm, variance and between-family variance of the states, and their ratios."""
    mean = h.mean(0)
    sq_norm = float(np.mean(np.sum(h * h, axis=1)))
    variance = float(np.mean(np.sum((h - mean) ** 2, axis=1)))
    between = 0.0
    for c in np.unique(labels):
        rows = labels == c
        between += float(rows.mean()) * float(np.sum((h[rows].mean(0) - mean) ** 2))
    return {"mean_sq_norm": sq_norm, "variance": variance, "between_family_variance": between,
            "between_over_sq_norm": between / sq_norm if sq_norm else 0.0,
            "between_over_variance": between / variance if variance else 0.0,
            "shared_over_family_length": float(np.linalg.norm(mean) / np.sqrt(between))
            if between > 0 else float("inf")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="a run directory of orchestra train")
    parser.add_argument("--params", default="trained", choices=PARAMS)
    parser.add_argument("--per-family", type=int, default=100)
    parser.add_argument("--step", type=int, default=None, help="checkpoint (default: latest)")
    args = parser.parse_args(argv)

    run = load_run(args.workdir)
    params, where = params_of(run, args.params, args.step)
    tasks = first_of_each_family(run.suite.eval_tasks, args.per_family)
    ordered = [t for group in tasks.values() for t in group]
    labels = np.asarray([t.family for t in ordered])
    hidden, _ = decision_states(run, params, first_turn_prompts(run, ordered))
    h = hidden.astype(np.float64)
    out = {"workdir": str(run.workdir), "params": where, "prompts": len(ordered),
           "probe_accuracy": round(linear_probe_accuracy(h, labels), 4),
           **{k: round(v, 6) for k, v in variance_split(h, labels).items()}}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
