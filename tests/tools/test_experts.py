"""`ExpertPool.for_task`: one task's aliases over the run's named experts, sharing their clients
and models, priced by the task's schedule first, and an unknown name refused by name."""

from __future__ import annotations

import asyncio

import pytest

from orchestra_jax.tools.experts import Expert, ExpertPool
from orchestra_jax.tools.pricing import Price
from orchestra_jax.tools.simulated_expert import ExpertProfile, FamilySkill, SimulatedExpert

STEADY = dict(tokens_out_median=50, tokens_out_sigma=0.0, latency_sigma=0.0)


def sim(name: str) -> SimulatedExpert:
    return SimulatedExpert(ExpertProfile(name, default_skill=FamilySkill(1, 1, 1), **STEADY))


def named_pool() -> ExpertPool:
    """The run's experts, keyed by the experts file's names."""
    return ExpertPool([
        Expert("small", "small-model", sim("small-model"), Price(0.1, 0.2)),
        Expert("big", "big-model", sim("big-model"), Price(5.0, 20.0)),
    ])  # fmt: skip


def test_the_mapping_keys_become_the_aliases_sharing_the_named_experts_clients():
    base = named_pool()
    view = base.for_task({"expert-1": "big", "expert-2": "small", "expert-3": "big"}, {})
    assert view.aliases() == ["expert-1", "expert-2", "expert-3"]
    assert view["expert-1"].client is base["big"].client  # no new connection per task
    assert view["expert-3"].client is base["big"].client
    assert (view["expert-2"].model, view["expert-2"].price) == ("small-model", Price(0.1, 0.2))
    assert "big" not in view and base.aliases() == ["small", "big"]  # the base is unchanged


def test_a_task_price_by_model_beats_one_by_name_which_beats_the_experts_own():
    base = named_pool()
    view = base.for_task(
        {"a": "big", "b": "small"},
        {"big-model": Price(1.25, 10.0), "big": Price(7.0, 7.0), "small": Price(0.3, 0.3)},
    )
    assert view["a"].price == Price(1.25, 10.0)  # by model name first
    assert view["b"].price == Price(0.3, 0.3)  # then by expert name
    assert base.for_task({"c": "big"}, {"other": Price(1, 1)})["c"].price == Price(5.0, 20.0)


def test_without_a_mapping_the_names_are_the_aliases_and_prices_still_apply():
    view = named_pool().for_task(None, {"small-model": Price(0.0, 0.0)})
    assert view.aliases() == ["small", "big"]
    assert view["small"].price == Price(0.0, 0.0) and view["big"].price == Price(5.0, 20.0)
    assert named_pool().for_task(None).aliases() == ["small", "big"]


def test_an_alias_naming_an_expert_the_pool_lacks_is_a_key_error_naming_everything():
    with pytest.raises(KeyError) as caught:
        named_pool().for_task({"expert-1": "big", "expert-2": "ghost"}, {})
    message = caught.value.args[0]
    assert "'expert-2'" in message and "'ghost'" in message and "small, big" in message


def test_a_view_charges_its_own_price_on_the_shared_client():
    view = named_pool().for_task({"x": "small"}, {"small-model": Price(1.0, 1.0)})
    completion, cost = asyncio.run(view["x"].complete([{"role": "user", "content": "hi"}]))
    assert cost == pytest.approx((completion.tokens_in + completion.tokens_out) / 1e6)
