"""The one evaluation runner (`eval.runner`) on a real run of the toy recipe: every policy of
the environment's spec on the same tasks, the periodic evaluation's greedy metrics, and the
spec cut to its first tasks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestra_jax.eval.runner import EvalSpec, final_evaluation, periodic_evaluation
from orchestra_jax.train.builders import build_run
from orchestra_jax.train.config import load_config

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "experiments" / "toy_target_call.py"
SMALL = ["--config.rollout.prompts_per_step=2", "--config.rollout.group_size=2",
         "--config.rollout.max_batch_size=8", "--config.data.max_tasks=4"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    config = load_config(str(RECIPE), SMALL)
    return build_run(config, tmp_path_factory.mktemp("run"))


def test_first_cuts_the_tasks_and_every_preference_variant_alike():
    spec = EvalSpec(tasks=list("abcd"), aliases=("x",), family_of=str, scripted={},
                    preference_tasks={"avoid": list("ABCD")})
    cut = spec.first(2)
    assert cut.tasks == ["a", "b"] and cut.preference_tasks == {"avoid": ["A", "B"]}
    assert spec.first(None) is spec
    variants = EvalSpec(tasks=list("abcd"), aliases=("x",), family_of=str, scripted={},
                        variants={"basic": list("ABCD")})
    assert variants.first(3).variants == {"basic": ["A", "B", "C"]}


def test_every_policy_is_played_on_the_same_tasks_into_one_summary(run, tmp_path):
    lines: list[str] = []
    out = final_evaluation(run, run.suite.evaluation, step=0, base_params=None,
                           out_dir=tmp_path, max_tasks=3, ema_decay=0.0, log=lines.append)
    assert set(out) == {"policies", "best_fixed_route", "preference_eval", "pareto_png",
                        "trajectories", "trained_params", "eval_s"}
    policies = out["policies"]
    assert set(policies) == {"trained", *run.suite.evaluation.scripted}
    assert {p["tasks"] for p in policies.values()} == {3}
    # Every policy's per-task lines: the trained one's in trajectories.jsonl, one per task.
    assert set(out["trajectories"]) == set(policies)
    trained_lines = [json.loads(x) for x in
                     (tmp_path / "trajectories.jsonl").read_text().splitlines()]
    assert len(trained_lines) == 3 and {x["policy"] for x in trained_lines} == {"trained"}
    assert {"id", "outcome", "cost_usd", "latency_s", "calls", "orchestrator"} <= set(
        trained_lines[0])
    # The scripted routes are played for real: only the target route is always right.
    assert policies["route:target"]["accuracy"] == 1.0
    assert out["best_fixed_route"] == "route:target"
    assert Path(out["pareto_png"]) == tmp_path / "pareto.png"
    assert (tmp_path / "pareto.png").is_file()
    assert out["trained_params"] == "last step"
    assert lines[0] == "eval: trained on 3 tasks"


def test_the_periodic_evaluation_reports_greedy_metrics_under_eval(run):
    tasks = list(run.suite.eval_tasks)[:2]
    got = periodic_evaluation(run, tasks, step=1)
    assert {"eval/accuracy", "eval/cost_usd", "eval/latency_s", "eval/turns",
            "eval/answered_rate", "time/eval_s"} == set(got)
    assert 0.0 <= got["eval/accuracy"] <= 1.0
    # Greedy: the same params play the same episodes.
    again = periodic_evaluation(run, tasks, step=7)
    assert again["eval/accuracy"] == got["eval/accuracy"]
    assert periodic_evaluation(run, [], step=1) == {}
