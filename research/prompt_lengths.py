"""Prompt lengths in tokens of a run's own vocabulary and prompt template.

    python research/prompt_lengths.py --workdir RUN [--tasks 400]

`python -m orchestra_jax.envs.toolworld.report` measures prompt lengths with the default
ChatML tool template; a run renders with its `world.prompt_template` (the `toolworld_tiny`
recipe: "compact") through the vocabulary trained in its workdir, which is what
`train.seq_buckets` and `rollout.max_prompt_tokens` must fit. For the run's neutral test
tasks, the same tasks under "avoid the frontier", and its training tasks: max and mean
token count of the first-turn prompt and of the prompt after one search by `mini`, rendered
as the episode loop renders them. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys

from run_state import load_run, world_of


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="a run directory of orchestra train")
    parser.add_argument("--tasks", type=int, default=400, help="tasks per set")
    args = parser.parse_args(argv)

    from orchestra_jax.envs.toolworld.vocabulary import prompt_lengths

    run = load_run(args.workdir)
    world = world_of(run)
    n = args.tasks
    sets = {"neutral test tasks": list(run.suite.eval_tasks)[:n],
            "avoid_frontier test tasks": world.tasks("test", n, preference="avoid_frontier"),
            "training tasks": list(run.suite.tasks)[:n]}
    out = {"workdir": str(run.workdir), "template": str(run.config.world.prompt_template),
           "lengths": {name: {k: round(v, 1) for k, v in
                              prompt_lengths(world, run.tokenizer, tasks).items()}
                       for name, tasks in sets.items()}}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
