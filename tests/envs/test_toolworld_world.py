"""toolworld's world: the encyclopedia, the task families and their verifiers, the split,
preferences and augmentations -- all deterministic in the seed, none of it importing jax."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest

from orchestra_jax.envs.toolworld import FAMILIES, ToolWorld, WorldConfig, verify
from orchestra_jax.envs.toolworld.preferences import Augmentation, get_preference
from orchestra_jax.envs.toolworld.tasks import fact_verifier, numeric_verifier, split_of_text
from orchestra_jax.tools.answers import normalize_answer


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> ToolWorld:
    return ToolWorld(WorldConfig(seed=0, cache_dir=str(tmp_path_factory.mktemp("tw"))))


def test_train_and_test_tasks_share_no_id_and_no_question(world: ToolWorld) -> None:
    train, test = world.tasks("train", 400), world.tasks("test", 400)
    assert not {t.id for t in train} & {t.id for t in test}
    assert not {t.question for t in train} & {t.question for t in test}
    assert all(split_of_text(t.question) == "train" for t in train)
    assert all(split_of_text(t.question) == "test" for t in test)


def test_splits_are_balanced_over_the_four_families(world: ToolWorld) -> None:
    counts = Counter(t.family for t in world.tasks("test", 400))
    assert counts == dict.fromkeys(FAMILIES, 100)


def test_same_seed_gives_the_same_world_and_tasks(world: ToolWorld, tmp_path) -> None:
    again = ToolWorld(WorldConfig(seed=0, cache_dir=str(tmp_path)))
    assert again.encyclopedia.rows() == world.encyclopedia.rows()
    assert again.tasks("test", 60) == world.tasks("test", 60)
    assert again.tasks("train", 20, start=100) == world.tasks("train", 120)[100:]
    other = ToolWorld(WorldConfig(seed=1, cache_dir=str(tmp_path)))
    assert other.encyclopedia.rows() != world.encyclopedia.rows()
    assert [t.question for t in other.tasks("test", 40)] != [
        t.question for t in world.tasks("test", 40)
    ]


@pytest.mark.parametrize("family", FAMILIES)
def test_each_familys_gold_passes_its_verifier_and_wrong_answers_fail(
    world: ToolWorld, family: str
) -> None:
    tasks = [t for t in world.tasks("test", 200) if t.family == family]
    assert tasks
    for task in tasks:
        assert verify(task, task.answer), task
        assert verify(task, f"  {task.answer.upper()}. "), task  # form does not matter
        assert not verify(task, None)
        assert not verify(task, "")
        assert len(task.spec.distractors) == 4
        for wrong in task.spec.distractors:
            assert not verify(task, wrong), (task.question, wrong)


def test_numeric_answers_are_checked_as_numbers() -> None:
    assert numeric_verifier("1,342", "1342") and numeric_verifier("1342.0", "1342")
    assert not numeric_verifier("1343", "1342") and not numeric_verifier("about 1342", "1342")
    assert fact_verifier("Velmere", "velmere") and not fact_verifier("Velmore", "Velmere")


def test_lookup_gold_is_stated_by_its_supporting_document(world: ToolWorld) -> None:
    docs = {d.doc_id: d.text for d in world.encyclopedia.documents}
    lookups = [t for t in world.tasks("test", 200) if t.family == "lookup"]
    for task in lookups:
        (doc,) = task.spec.support
        assert normalize_answer(task.answer) in normalize_answer(docs[doc]), task


def test_multihop_gold_combines_two_documents(world: ToolWorld) -> None:
    docs = {d.doc_id: d.text for d in world.encyclopedia.documents}
    for task in [t for t in world.tasks("test", 200) if t.family == "multihop"]:
        assert len(set(task.spec.support)) == 2
        assert int(task.answer) > 0
        # the program that computes it uses numbers found in the two documents
        numbers = [tok for tok in task.spec.code.replace("(", " ").split() if tok.isdigit()]
        text = " ".join(docs[d] for d in task.spec.support)
        assert numbers and all(n in text for n in numbers), task


def test_families_read_differently(world: ToolWorld) -> None:
    """The policy routes on the surface: arithmetic has digits, look-ups name invented
    entities with a kind, multi-hop questions name two, easy ones have neither."""
    for task in world.tasks("test", 200):
        has_digits = any(c.isdigit() for c in task.question)
        assert has_digits == (task.family == "arithmetic"), task.question


def test_avoid_frontier_gives_the_same_tasks_under_an_instruction(world: ToolWorld) -> None:
    plain = world.tasks("test", 8)
    avoid = world.tasks("test", 8, preference="avoid_frontier")
    frontier = world.aliases.index(world.frontier_alias)
    for a, b in zip(plain, avoid, strict=True):
        assert (a.question, a.answer, a.spec) == (b.question, b.answer, b.spec)
        assert a.instruction is None and a.preference == "neutral"
        assert b.instruction == f"Avoid {world.frontier_alias}."
        assert b.id == f"{a.id}@avoid_frontier"
        assert len(b.preference_vector) == len(world.aliases) + 3
        assert b.preference_vector[frontier] < 0
        assert all(b.preference_vector[i] == 0 for i in range(6) if i != frontier)
        assert a.preference_vector == (0.0,) * 6 + (1.0, 0.5, 0.5)


def test_mixed_preferences_follow_the_mixture(world: ToolWorld) -> None:
    tasks = world.tasks("train", 400, preference="mix")
    counts = Counter(t.preference for t in tasks)
    assert set(counts) == {name for name, _ in world.config.preference_mix}
    assert counts["neutral"] > counts["prefer_open"]
    for task in tasks:
        pref = get_preference(task.preference)
        assert task.instruction == pref.text(world.frontier_alias)
    open_task = next(t for t in tasks if t.preference == "prefer_open")
    for alias, weight in zip(world.aliases, open_task.preference_vector, strict=False):
        assert (weight < 0) == (alias in world.api_aliases)


def test_efficiency_weight_sets_cost_and_latency_of_preferences_that_state_none(
        tmp_path) -> None:
    light = ToolWorld(WorldConfig(seed=0, efficiency_weight=0.1, cache_dir=str(tmp_path)))
    by_name = {name: light.tasks("test", 1, preference=name)[0].preference_vector[-3:]
               for name in ("neutral", "avoid_frontier", "prefer_open", "minimise_cost",
                            "minimise_latency")}
    assert by_name == {"neutral": (1.0, 0.1, 0.1), "avoid_frontier": (1.0, 0.1, 0.1),
                       "prefer_open": (1.0, 0.1, 0.1), "minimise_cost": (1.0, 1.0, 0.0),
                       "minimise_latency": (1.0, 0.0, 1.0)}
    with pytest.raises(ValueError, match="efficiency_weight"):
        WorldConfig(efficiency_weight=1.5)


def test_unknown_preference_and_bad_arguments_are_named(world: ToolWorld) -> None:
    with pytest.raises(ValueError, match="unknown preference 'be_nice'"):
        world.tasks("test", 2, preference="be_nice")
    with pytest.raises(ValueError, match="split must be one of"):
        world.tasks("validation", 2)
    with pytest.raises(ValueError, match="n and start"):
        world.tasks("test", -1)
    with pytest.raises(ValueError, match="families"):
        WorldConfig(families=("poetry",))
    with pytest.raises(ValueError, match="alias_keep"):
        Augmentation(alias_keep=0.0)
    with pytest.raises(ValueError, match="schema style"):
        WorldConfig(schema_style="xml")
    with pytest.raises(ValueError, match="unknown preference 'polite'"):
        WorldConfig(preference_mix=(("polite", 1.0),))


def test_augmentations_give_tool_subsets_and_price_schedules(world: ToolWorld) -> None:
    tasks = world.tasks("train", 200, tool_subsets=True, price_schedules=True)
    assert tasks == world.tasks("train", 200, tool_subsets=True, price_schedules=True)
    subsets = {t.aliases for t in tasks}
    assert len(subsets) > 10
    for task in tasks:
        assert task.aliases is not None and len(task.aliases) >= 2
        assert set(task.aliases) <= set(world.aliases)
        assert "answer" in task.tools
        schedule = task.price_schedule
        assert schedule is not None and set(schedule) == set(world.aliases)
    frontier_prices = {t.price_schedule[world.frontier_alias].output_usd_per_mtok for t in tasks}
    assert len(frontier_prices) > 100
    assert min(frontier_prices) >= 10.0 * 0.25 - 1e-9 and max(frontier_prices) <= 40.0 + 1e-9
    assert any(len(t.tools) < 3 for t in tasks)
    plain = world.tasks("train", 5)
    assert all(t.aliases is None and t.prices is None and len(t.tools) == 3 for t in plain)


def test_the_world_never_imports_jax(tmp_path) -> None:
    code = (
        "import sys, asyncio\n"
        "from orchestra_jax.envs.toolworld import ToolWorld, WorldConfig\n"
        f"w = ToolWorld(WorldConfig(cache_dir={str(tmp_path)!r}))\n"
        "t = w.tasks('test', 8)\n"
        "w.evaluate(w.routes()['route:frontier-all'], t)\n"
        "w.evaluate(w.random_policy(0), t)\n"
        "assert 'jax' not in sys.modules, 'jax was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
