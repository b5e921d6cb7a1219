"""The paper's augmentation of plain qa tasks (`envs.qa_augment`): per-task aliases, price
schedules, tool subsets and preferences, drawn reproducibly, never touching the question."""

from __future__ import annotations

import dataclasses

import pytest

from orchestra_jax.envs.qa import QAEnvironment
from orchestra_jax.envs.qa_augment import (
    PRICE_FACTORS,
    augment_task,
    augment_tasks,
    preference_keys,
)
from orchestra_jax.envs.qa_tasks import QATask
from orchestra_jax.tools.experts import Expert, ExpertPool
from orchestra_jax.tools.pricing import Price
from orchestra_jax.tools.qa_tools import QATools
from orchestra_jax.tools.simulated_expert import ExpertProfile, SimulatedExpert

EXPERTS = {"cheap": Price(0.2, 0.2), "mid": Price(1.0, 2.0), "dear": Price(1.25, 10.0)}


def pool() -> ExpertPool:
    return ExpertPool([Expert(name, f"{name}-model",
                              SimulatedExpert(ExpertProfile(f"{name}-model")), price)
                       for name, price in EXPERTS.items()])


def plain(i: int) -> QATask:
    return QATask(id=f"q{i}", question=f"What is {i} + {i}?", answer=str(2 * i))


def experts() -> dict[str, Expert]:
    p = pool()
    return {name: p[name] for name in p.aliases()}


def test_each_plain_task_gets_anonymous_aliases_a_price_schedule_and_the_answer_tool():
    tasks = augment_tasks([plain(i) for i in range(40)], experts(), seed=0)
    for before, task in zip([plain(i) for i in range(40)], tasks, strict=True):
        assert (task.id, task.question, task.answer) == (before.id, before.question,
                                                         before.answer)
        assert sorted(task.model_mapping) == ["expert-1", "expert-2", "expert-3"]
        assert sorted(task.model_mapping.values()) == sorted(EXPERTS)
        for name, price in task.prices.items():
            factor = price.input_usd_per_mtok / EXPERTS[name].input_usd_per_mtok
            assert min(abs(factor - f) for f in PRICE_FACTORS) < 1e-9
            assert price.output_usd_per_mtok == pytest.approx(
                EXPERTS[name].output_usd_per_mtok * factor)
        assert "answer" in task.tool_aliases
    # The draws vary across tasks: orders, schedules, tool subsets and preferences.
    assert len({tuple(t.model_mapping.values()) for t in tasks}) > 1
    assert len({tuple(sorted(t.tool_aliases)) for t in tasks}) > 1
    with_pref = [t for t in tasks if t.preference is not None]
    assert 0 < len(with_pref) < len(tasks)
    for task in with_pref:
        assert task.instruction and set(task.preference) <= preference_keys(task)
        assert task.preference["accuracy"] == 1.0


def test_the_same_seed_draws_the_same_and_another_seed_differs():
    tasks = [plain(i) for i in range(20)]
    assert augment_tasks(tasks, experts(), seed=3) == augment_tasks(tasks, experts(), seed=3)
    assert augment_tasks(tasks, experts(), seed=3) != augment_tasks(tasks, experts(), seed=4)


def test_a_task_that_carries_its_own_setting_is_left_as_it_is():
    released = dataclasses.replace(plain(1), model_mapping={"search-1": "cheap"})
    assert augment_task(released, experts(), seed=0) is released
    priced = dataclasses.replace(plain(2), prices={"cheap-model": Price(9.0, 9.0)})
    assert augment_task(priced, experts(), seed=0) is priced


def test_preference_share_zero_gives_no_instruction_and_a_bad_share_is_refused():
    tasks = augment_tasks([plain(i) for i in range(20)], experts(), seed=0,
                          preference_share=0.0)
    assert all(t.preference is None and t.instruction is None for t in tasks)
    with pytest.raises(ValueError, match="preference_share"):
        augment_tasks([plain(0)], experts(), seed=0, preference_share=1.5)


def test_the_policy_sees_the_drawn_aliases_prices_and_instruction(tmp_path):
    p = pool()
    task = next(t for t in augment_tasks([plain(i) for i in range(40)], experts(), seed=0)
                if t.instruction is not None)

    class NoSearch:
        async def search(self, query, k=5, *, doc_ids=None):
            return []

    env = QAEnvironment(QATools(p, NoSearch()))
    env.reset(task)
    system, user = (m["content"] for m in env.messages())
    for alias, name in task.model_mapping.items():
        price = task.prices[name]
        assert f"{alias}: ${price.input_usd_per_mtok:g} in / ${price.output_usd_per_mtok:g}" \
            in system
        assert f"{name}-model" not in system  # the model behind an alias stays hidden
    assert task.instruction in user
    offered = {schema["function"]["name"] for schema in env.tools()}
    assert offered == set(task.tool_aliases)
