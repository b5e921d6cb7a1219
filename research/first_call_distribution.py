"""The exact first-turn call distribution of a run's params, per task family.

    python research/first_call_distribution.py --workdir RUN [--per-family 50] [--step N]
        [--params trained|sft|init]

For the first `--per-family` test tasks of each family: the first-turn prompt rendered as the
episode loop renders it, and the softmax over the 18 call pieces (`tool[alias]`, renormalised
among them) at the decision position. Prints one JSON object: per family the mean probability
of each call, its sums per tool and per alias, the greedy (argmax) call's counts, and the
probability mass on the call pieces before renormalising. Why: sampled first-call shares of a
training step (2 tasks x 8 episodes a family) move by +-0.2 on chance alone, and the routing
probe's `first_turn_p` gives tool sums only, not which expert a tool goes to. The research log
(docs/research/toolworld-log.md, "Which expert, not only which tool") quotes it.
"""

from __future__ import annotations

import argparse
import collections
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


def call_name(text: str) -> str:
    """`tool[alias]` of a call piece's text (`<tool_call>{"name": ..., "arguments": ...}`)."""
    body = text[text.index("{"): text.rindex("}") + 1]
    call = json.loads(body)
    return f"{call['name']}[{call['arguments']['model']}]"


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="a run directory of orchestra train")
    parser.add_argument("--per-family", type=int, default=50)
    parser.add_argument("--step", type=int, default=None, help="checkpoint (default: latest)")
    parser.add_argument("--params", default="trained", choices=PARAMS)
    args = parser.parse_args(argv)

    run = load_run(args.workdir)
    if run.config.world.call_pieces != "call":
        raise SystemExit("needs world.call_pieces=call (every call one piece)")
    params, where = params_of(run, args.params, args.step)
    names = [call_name(t) for t in run.suite.choice_texts]
    ids = np.asarray(run.suite.choice_token_ids(run.tokenizer))
    tasks = first_of_each_family(run.suite.eval_tasks, args.per_family)
    out: dict[str, object] = {"workdir": str(run.workdir), "params": where, "families": {}}
    for family, group in tasks.items():
        _, logits = decision_states(run, params, first_turn_prompts(run, group))
        full = softmax(logits)
        probs = softmax(logits[:, ids])
        mean = probs.mean(0)
        tools: dict[str, float] = collections.defaultdict(float)
        aliases: dict[str, float] = collections.defaultdict(float)
        for name, p in zip(names, mean, strict=True):
            tools[name.split("[")[0]] += float(p)
            aliases[name.split("[")[1].rstrip("]")] += float(p)
        greedy = collections.Counter(names[i] for i in probs.argmax(-1))
        out["families"][family] = {  # type: ignore[index]
            "prompts": len(group),
            "call_p": {n: round(float(p), 3) for n, p in
                       sorted(zip(names, mean, strict=True), key=lambda kv: -kv[1])},
            "tool_p": {k: round(v, 3) for k, v in sorted(tools.items(), key=lambda kv: -kv[1])},
            "alias_p": {k: round(v, 3)
                        for k, v in sorted(aliases.items(), key=lambda kv: -kv[1])},
            "greedy_calls": dict(greedy.most_common()),
            "mass_on_call_pieces": round(float(full[:, ids].sum(-1).mean()), 4),
        }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
