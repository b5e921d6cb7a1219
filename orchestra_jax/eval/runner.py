"""The one evaluation runner: every policy on the same held-out tasks, one summary.

Three callers, one code path: the final evaluation at the end of `orchestra train`, the
periodic evaluation every `train.eval_every` steps, and `orchestra eval` on a saved run.

Policies: the trained model (greedy), the warm-started model before RL (greedy; the base of
the appendix-L preference score), and the suite's scripted policies -- the random valid policy
and each fixed route -- all played through the same episode loop, environment, executor and
cost accounting, so their numbers compare like for like. The suite's preference variants
(e.g. "avoid the frontier model") are played by the trained model too.

What `summary.json` gets from here (tools read these keys):

    {"policies": {NAME: policy_table(...)},       # trained, sft, random, route:...
     "best_fixed_route": NAME,                      # the route with the highest accuracy
     "preference_eval": {PREF: {"accuracy", "frontier_call_share", ...}},
     "pareto_png": path, "trajectories": {NAME: path of its per-task lines},
     "trained_params": ..., "eval_s": seconds}

The runner needs a `PolicyRun` (the training run satisfies it): it never builds or loads a
model itself, so it imports nothing from `train`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from orchestra_jax.eval.plots import pareto_plot
from orchestra_jax.eval.results import EpisodeOutcome, call_share, outcome_of, policy_table
from orchestra_jax.eval.trajectory_files import write_trajectories
from orchestra_jax.rollout.requests import SamplingParams
from orchestra_jax.rollout.scripted import ChooseTurn, scripted_episodes
from orchestra_jax.rollout.statistics import rollout_metrics
from orchestra_jax.rollout.trajectory import Trajectory
from orchestra_jax.sharding.multihost import is_primary
from orchestra_jax.sync import run_coroutine

#: The rollout metrics the periodic evaluation reports, under `eval/`.
PERIODIC_TAGS = ("train/accuracy", "train/cost_usd", "train/latency_s", "train/turns",
                 "train/answered_rate")


@dataclasses.dataclass
class EvalSpec:
    """What a suite offers for an evaluation.

    `tasks`: the held-out tasks. `aliases`: the reward's per-alias features, in order.
    `family_of(task)`: the family a task reports under. `scripted`: name -> a factory of one
    episode's chooser (`"random"`, `"route:..."`). `preference_tasks`: name -> the same
    held-out tasks under that preference instruction. `frontier_alias`: the alias whose share
    of calls `preference_eval` reports. `variants`: name -> the same held-out tasks changed in
    some way (qa: every alias mapped to one expert), played by the trained model and reported
    as policies of their own."""

    tasks: Sequence[Any]
    aliases: tuple[str, ...]
    family_of: Callable[[Any], str]
    scripted: Mapping[str, Callable[[Any], ChooseTurn]]
    preference_tasks: Mapping[str, Sequence[Any]] = dataclasses.field(default_factory=dict)
    frontier_alias: str | None = None
    variants: Mapping[str, Sequence[Any]] = dataclasses.field(default_factory=dict)

    def first(self, limit: int | None) -> EvalSpec:
        """The same evaluation on the first `limit` tasks (None: all)."""
        if limit is None:
            return self
        return dataclasses.replace(
            self, tasks=list(self.tasks)[: int(limit)],
            preference_tasks={k: list(v)[: int(limit)]
                              for k, v in self.preference_tasks.items()},
            variants={k: list(v)[: int(limit)] for k, v in self.variants.items()})


class PolicyRun(Protocol):
    """What the runner needs of a run: its suite, tokenizer, rollout settings, sampler and
    the params to play as "trained"."""

    suite: Any  # train.envs.EnvSuite
    tokenizer: Any
    rollout: Any  # train.run.RolloutSettings
    sampler: Any  # rollout.sampler.Sampler
    seed: int

    @property
    def policy_params(self) -> Any: ...

    def episodes(self, tasks: Sequence[Any], group_size: int,
                 sampling: SamplingParams) -> list[Trajectory]: ...

    def sampling(self, step: int, *, greedy: bool = False) -> SamplingParams: ...


def _outcomes(run: PolicyRun, spec: EvalSpec, tasks: Sequence[Any],
              trajectories: Sequence[Trajectory]) -> list[EpisodeOutcome]:
    prefer = run.suite.preference_of
    return [outcome_of(t, task, family=spec.family_of(task),
                       preference=prefer(task) if prefer is not None else None)
            for t, task in zip(trajectories, tasks, strict=True)]


def model_outcomes(run: PolicyRun, spec: EvalSpec, tasks: Sequence[Any], step: int,
                   keep: list[Trajectory] | None = None) -> list[EpisodeOutcome]:
    """The run's current sampler parameters, greedy, one episode per task (the trajectories
    are appended to `keep` when given)."""
    trajectories = run.episodes(tasks, 1, run.sampling(step, greedy=True))
    if keep is not None:
        keep.extend(trajectories)
    return _outcomes(run, spec, tasks, trajectories)


def scripted_outcomes(run: PolicyRun, spec: EvalSpec, tasks: Sequence[Any], name: str,
                      keep: list[Trajectory] | None = None) -> list[EpisodeOutcome]:
    """The scripted policy `name` of the spec, one episode per task (kept as above)."""
    r = run.rollout
    trajectories = run_coroutine(scripted_episodes(
        tasks, run.suite.make_env, tokenizer=run.tokenizer, executor=run.suite.make_executor(),
        choose_for=spec.scripted[name], seed=run.seed, max_turns=r.max_turns,
        timeout_s=r.episode_timeout_s, max_prompt_tokens=r.max_prompt_tokens))
    if keep is not None:
        keep.extend(trajectories)
    return _outcomes(run, spec, tasks, trajectories)


def _model_policies(run: PolicyRun, spec: EvalSpec, step: int, base_params: Any | None,
                    log: Callable[[str], None], kept: dict[str, list[Trajectory]],
                    ) -> dict[str, list[EpisodeOutcome]]:
    """"trained" (and "sft" from `base_params`), then the spec's variants played by the
    trained; the sampler ends holding the trained."""
    tasks = list(spec.tasks)
    trained_params = run.policy_params
    run.sampler.update_params(trained_params, version=step)
    outcomes = {"trained": model_outcomes(run, spec, tasks, step, kept.setdefault("trained", []))}
    log(f"eval: trained on {len(tasks)} tasks")
    if base_params is not None:
        run.sampler.update_params(base_params, version=-1)
        try:
            outcomes["sft"] = model_outcomes(run, spec, tasks, step, kept.setdefault("sft", []))
        finally:
            run.sampler.update_params(trained_params, version=step)
        log("eval: sft")
    for name, variant_tasks in spec.variants.items():
        outcomes[name] = model_outcomes(run, spec, list(variant_tasks), step,
                                        kept.setdefault(name, []))
        log(f"eval: {name}")
    return outcomes


def _preference_eval(run: PolicyRun, spec: EvalSpec, step: int,
                     base: Sequence[EpisodeOutcome]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pref, pref_tasks in spec.preference_tasks.items():
        got = model_outcomes(run, spec, list(pref_tasks), step)
        paired = [o.task_id for o in got] == [o.task_id for o in base]
        entry = policy_table(got, spec.aliases, base=base if paired else None)
        entry["frontier_call_share"] = (call_share(got, spec.frontier_alias)
                                        if spec.frontier_alias else None)
        out[pref] = entry
    return out


def evaluate_policies(run: PolicyRun, spec: EvalSpec, *, step: int, base_params: Any | None,
                      out_dir: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Play every policy on `spec.tasks`; the summary entries of the module docstring, the
    plot written to `out_dir/pareto.png`.

    `base_params` are the warm-started parameters ("sft"; None: no such policy, and the
    preference score uses the trained policy as its own base). The sampler is left holding
    the trained parameters."""
    kept: dict[str, list[Trajectory]] = {}
    outcomes = _model_policies(run, spec, step, base_params, log, kept)
    for name in spec.scripted:
        outcomes[name] = scripted_outcomes(run, spec, list(spec.tasks), name,
                                           kept.setdefault(name, []))
    log(f"eval: {len(spec.scripted)} scripted policies")
    primary = is_primary()  # in a multi-process run, process 0 alone writes
    files = write_trajectories(kept, out_dir) if primary else {}
    base = outcomes.get("sft", outcomes["trained"])
    policies = {name: policy_table(o, spec.aliases, base=base) for name, o in outcomes.items()}
    routes = [n for n in policies if n.startswith("route:")]
    best = max(routes, key=lambda n: (policies[n]["accuracy"], -policies[n]["cost_usd"]),
               default=None)
    preference_eval = _preference_eval(run, spec, step, base)
    png = pareto_plot(policies, out_dir / "pareto.png") if primary else out_dir / "pareto.png"
    return {"policies": policies, "best_fixed_route": best, "preference_eval": preference_eval,
            "pareto_png": str(png), "trajectories": files}


def final_evaluation(run: PolicyRun, spec: EvalSpec, *, step: int, base_params: Any | None,
                     out_dir: Path, max_tasks: int | None, ema_decay: float,
                     log: Callable[[str], None] = print) -> dict[str, Any]:
    """`evaluate_policies` on the first `max_tasks` held-out tasks, with which params played
    "trained" and how long it took."""
    start = time.perf_counter()
    out = evaluate_policies(run, spec.first(max_tasks), step=step, base_params=base_params,
                            out_dir=out_dir, log=log)
    out["trained_params"] = (f"moving average (decay {ema_decay:g})" if ema_decay > 0
                             else "last step")
    out["eval_s"] = time.perf_counter() - start
    return out


def periodic_evaluation(run: PolicyRun, tasks: Sequence[Any], step: int) -> dict[str, float]:
    """Greedy episodes of the current params on `tasks`: reward-free metrics under `eval/`
    and the time it took (`time/eval_s`)."""
    if not tasks:
        return {}
    start = time.perf_counter()
    stats = rollout_metrics(run.episodes(list(tasks), 1, run.sampling(step, greedy=True)))
    out = {f"eval/{k.removeprefix('train/')}": v for k, v in stats.items()
           if k in PERIODIC_TAGS}
    out["time/eval_s"] = time.perf_counter() - start
    return out


__all__ = ["EvalSpec", "PolicyRun", "evaluate_policies", "final_evaluation", "model_outcomes",
           "periodic_evaluation", "scripted_outcomes"]
