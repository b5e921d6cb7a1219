"""Greedy accuracy of a run's saved checkpoints (and of moving averages over them) on the
test tasks and on validation tasks training never draws.

    python research/checkpoint_eval.py --workdir RUN [--steps 45,50,55,60] [--tasks 400]
        [--ema 0.5,0.8,0.9]

Validation tasks are training-split tasks `world.train_tasks` .. `world.train_tasks + tasks - 1`
(task i of a split depends only on (seed, split, i), and training draws only the first
`world.train_tasks`), neutral preference; test tasks are the run's own evaluation tasks. Each
checkpoint's trained params play one greedy episode per task. `--ema D` also evaluates the
moving average of the params over the saved checkpoints in step order (start: the saved warm
start, as the loop's average starts from the params RL begins with; then
avg = D * avg + (1 - D) * params per saved step): the loop's `train.ema_decay` exactly when
the run saved every step (`--config.train.checkpoint_every=1
--config.train.keep_checkpoints=1000`).
Prints one JSON object: per params, accuracy and per-family accuracy on both task sets.
Why: whether picking a checkpoint or a decay by validation would beat the last step
(docs/research/toolworld-log.md, the checkpoint table).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import jax
from run_state import load_run, params_of, restore, saved_steps, world_of


def greedy(run: Any, params: Any, tasks: list[Any], version: int) -> dict[str, Any]:
    """Accuracy and per-family accuracy of one greedy episode per task under `params`."""
    from orchestra_jax.eval.results import policy_table
    from orchestra_jax.eval.runner import model_outcomes

    spec = run.suite.evaluation
    run.sampler.update_params(params, version=version)
    table = policy_table(model_outcomes(run, spec, tasks, version), spec.aliases)
    return {"accuracy": round(table["accuracy"], 4),
            "by_family": {f: round(v["accuracy"], 3)
                          for f, v in sorted(table["by_family"].items())}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="a run directory of orchestra train")
    parser.add_argument("--steps", default=None, help="comma-separated (default: all saved)")
    parser.add_argument("--tasks", type=int, default=400, help="tasks per set")
    parser.add_argument("--ema", default="", help="comma-separated decays")
    args = parser.parse_args(argv)

    run = load_run(args.workdir)
    world = world_of(run)
    first = int(run.config.world.train_tasks)
    validation = world.tasks("train", first + args.tasks)[first:]
    test = list(run.suite.eval_tasks)[: args.tasks]
    saved = saved_steps(run)
    steps = [int(s) for s in args.steps.split(",")] if args.steps else saved
    decays = [float(d) for d in args.ema.split(",") if d]
    averages: dict[float, Any] = {}
    if decays:
        start, _ = params_of(run, "sft")
        averages = dict.fromkeys(decays, start)
    out: dict[str, Any] = {"workdir": str(run.workdir), "validation_tasks": len(validation),
                           "test_tasks": len(test), "params": {}}
    for step in sorted(set(steps) | (set(saved) if decays else set())):
        restore(run, step)
        params = run.policy_params
        for d in decays:
            averages[d] = jax.tree.map(lambda a, p, d=d: d * a + (1 - d) * p,
                                       averages[d], params)
        if step in steps:
            out["params"][f"step {step}"] = {"validation": greedy(run, params, validation, step),
                                             "test": greedy(run, params, test, step)}
    last = saved[-1] if saved else 0  # greedy: the step only seeds an unused sampler
    for d, params in averages.items():
        out["params"][f"moving average, decay {d:g}"] = {
            "validation": greedy(run, params, validation, last),
            "test": greedy(run, params, test, last)}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
