"""The final evaluation of a run: every policy on the same held-out tasks, one summary.

Policies: the trained model (greedy), the warm-started model before RL (greedy; the base of
the appendix-L preference score), and the suite's scripted policies -- the random valid policy
and each fixed route -- all played through the same episode loop, environment, executor and
cost accounting, so their numbers compare like for like. The suite's preference variants
(e.g. "avoid the frontier model") are played by the trained model too.

What `summary.json` gets from here (tools read these keys):

    {"policies": {NAME: policy_table(...)},       # trained, sft, random, route:...
     "best_fixed_route": NAME,                      # the route with the highest accuracy
     "preference_eval": {PREF: {"accuracy", "frontier_call_share", ...}},
     "pareto_png": path}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestra_jax.eval.plots import pareto_plot
from orchestra_jax.eval.results import EpisodeOutcome, call_share, outcome_of, policy_table
from orchestra_jax.rollout.scripted import ChooseTurn, scripted_episodes
from orchestra_jax.sync import run_coroutine


@dataclasses.dataclass
class EvalSpec:
    """What a suite offers for a final evaluation.

    `tasks`: the held-out tasks. `aliases`: the reward's per-alias features, in order.
    `family_of(task)`: the family a task reports under. `scripted`: name -> a factory of one
    episode's chooser (`"random"`, `"route:..."`). `preference_tasks`: name -> the same
    held-out tasks under that preference instruction. `frontier_alias`: the alias whose share
    of calls `preference_eval` reports."""

    tasks: Sequence[Any]
    aliases: tuple[str, ...]
    family_of: Callable[[Any], str]
    scripted: Mapping[str, Callable[[Any], ChooseTurn]]
    preference_tasks: Mapping[str, Sequence[Any]] = dataclasses.field(default_factory=dict)
    frontier_alias: str | None = None


def _outcomes(run: Any, spec: EvalSpec, tasks: Sequence[Any], trajectories: Sequence[Any],
              ) -> list[EpisodeOutcome]:
    prefer = run.suite.preference_of
    return [outcome_of(t, task, family=spec.family_of(task),
                       preference=prefer(task) if prefer is not None else None)
            for t, task in zip(trajectories, tasks, strict=True)]


def model_outcomes(run: Any, spec: EvalSpec, tasks: Sequence[Any], step: int,
                   ) -> list[EpisodeOutcome]:
    """The run's current sampler parameters, greedy, one episode per task."""
    trajectories = run.episodes(tasks, 1, run.sampling(step, greedy=True))
    return _outcomes(run, spec, tasks, trajectories)


def scripted_outcomes(run: Any, spec: EvalSpec, tasks: Sequence[Any], name: str,
                      ) -> list[EpisodeOutcome]:
    rollout = run.config.rollout
    trajectories = run_coroutine(scripted_episodes(
        tasks, run.suite.make_env, tokenizer=run.tokenizer, executor=run.suite.make_executor(),
        choose_for=spec.scripted[name], seed=int(run.config.train.seed),
        max_turns=int(rollout.max_turns), timeout_s=float(rollout.episode_timeout_s),
        max_prompt_tokens=int(rollout.max_prompt_tokens)))
    return _outcomes(run, spec, tasks, trajectories)


def evaluate_policies(run: Any, spec: EvalSpec, *, step: int, base_params: Any | None,
                      workdir: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Play every policy on `spec.tasks`; the summary entries of the module docstring.

    `base_params` are the warm-started parameters ("sft"; None: no such policy, and the
    preference score uses the trained policy as its own base). The sampler is left holding
    the trained parameters."""
    tasks = list(spec.tasks)
    trained_params = run.policy_params
    run.sampler.update_params(trained_params, version=step)
    outcomes: dict[str, list[EpisodeOutcome]] = {}
    outcomes["trained"] = model_outcomes(run, spec, tasks, step)
    log(f"eval: trained on {len(tasks)} tasks")
    if base_params is not None:
        run.sampler.update_params(base_params, version=-1)
        try:
            outcomes["sft"] = model_outcomes(run, spec, tasks, step)
        finally:
            run.sampler.update_params(trained_params, version=step)
        log("eval: sft")
    for name in spec.scripted:
        outcomes[name] = scripted_outcomes(run, spec, tasks, name)
    log(f"eval: {len(spec.scripted)} scripted policies")
    base = outcomes.get("sft", outcomes["trained"])
    policies = {name: policy_table(o, spec.aliases, base=base) for name, o in outcomes.items()}
    routes = [n for n in policies if n.startswith("route:")]
    best = max(routes, key=lambda n: (policies[n]["accuracy"], -policies[n]["cost_usd"]),
               default=None)
    preference_eval: dict[str, Any] = {}
    for pref, pref_tasks in spec.preference_tasks.items():
        got = model_outcomes(run, spec, list(pref_tasks), step)
        paired = [o.task_id for o in got] == [o.task_id for o in base]
        entry = policy_table(got, spec.aliases, base=base if paired else None)
        entry["frontier_call_share"] = (call_share(got, spec.frontier_alias)
                                        if spec.frontier_alias else None)
        preference_eval[pref] = entry
    png = pareto_plot(policies, workdir / "pareto.png")
    return {"policies": policies, "best_fixed_route": best, "preference_eval": preference_eval,
            "pareto_png": str(png)}


__all__ = ["EvalSpec", "evaluate_policies", "model_outcomes", "scripted_outcomes"]
