"""The training loop's environment suites (`orchestra_jax/train/envs.py`): what a config key
of `world` changes in the suite the loop trains and evaluates on."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from orchestra_jax.envs.toolworld.environment import LAST_TURN_NOTE
from orchestra_jax.rollout.scripted import scripted_episodes
from orchestra_jax.train.config import load_config
from orchestra_jax.train.envs import build_env_suite

REPO = Path(__file__).resolve().parents[2]


def _random_episodes(tmp_path: Path, *overrides: str) -> tuple[list, object]:
    config = load_config(str(REPO / "experiments" / "toolworld_tiny.py"), [
        "--config.world.train_tasks=24", "--config.world.test_tasks=8",
        "--config.world.vocabulary_tasks=40", *overrides])
    suite = build_env_suite(config, tmp_path / "run")
    # The "random" chooser is the format warm start's data source and the evaluation's
    # random policy.
    episodes = asyncio.run(scripted_episodes(
        suite.eval_tasks, suite.make_env, tokenizer=suite.tokenizer,
        executor=suite.make_executor(), choose_for=suite.evaluation.scripted["random"],
        seed=0, max_turns=int(config.rollout.max_turns)))
    return episodes, suite.tokenizer


def _noted(trajectory, tokenizer) -> list[bool]:
    """Per turn: whether the prompt the policy read carries the last-turn note."""
    return [LAST_TURN_NOTE in tokenizer.decode(sample.prompt_ids)
            for sample in trajectory.samples]


@pytest.mark.parametrize("note", [True, False])
def test_world_last_turn_note_reaches_the_prompts_and_the_random_policy(tmp_path, note):
    episodes, tokenizer = _random_episodes(tmp_path, f"--config.world.last_turn_note={note}")
    three_turns = [t for t in episodes if len(t.samples) == 3]
    assert three_turns, "no random episode reached the last turn"
    for t in three_turns:
        assert _noted(t, tokenizer) == [False, False, note]
        if note:  # the warm start's data and the random baseline answer when told to
            assert t.samples[-1].calls and t.samples[-1].calls[0].name == "answer"
    assert all(not any(_noted(t, tokenizer)) for t in episodes if len(t.samples) < 3)


@pytest.mark.parametrize("weight", [0.1, 0.5])
def test_world_efficiency_weight_reaches_every_task_the_reward_reads(tmp_path, weight):
    config = load_config(str(REPO / "experiments" / "toolworld_tiny.py"), [
        "--config.world.train_tasks=40", "--config.world.test_tasks=8",
        "--config.world.vocabulary_tasks=40", f"--config.world.efficiency_weight={weight}",
        "--config.world.preference_mix.minimise_cost=0.1"])  # the recipe trains on none
    suite = build_env_suite(config, tmp_path / "run")
    vectors = {task.preference: suite.preference_of(task)[-3:] for task in suite.tasks}
    assert vectors["neutral"] == vectors["avoid_frontier"] == (1.0, weight, weight)
    assert vectors["minimise_cost"] == (1.0, 1.0, 0.0)  # states its own weights
    assert {suite.preference_of(task)[-3:] for task in suite.eval_tasks} == {(1.0, weight,
                                                                              weight)}


def _suite(tmp_path: Path, *overrides: str):
    config = load_config(str(REPO / "experiments" / "toolworld_tiny.py"), [
        "--config.world.train_tasks=200", "--config.world.test_tasks=8",
        "--config.world.vocabulary_tasks=40", *overrides])
    return build_env_suite(config, tmp_path / "run")


def test_the_recipes_training_tasks_carry_neutral_and_avoid_frontier_only(tmp_path):
    suite = _suite(tmp_path)
    drawn = [task.preference for task in suite.tasks]
    assert set(drawn) == {"neutral", "avoid_frontier"}
    # 0.5 : 0.2 of 200 tasks: about 143 neutral; a binomial sd of 6.4.
    assert 115 < drawn.count("neutral") < 170
    assert {task.preference for task in suite.eval_tasks} == {"neutral"}


def test_world_preference_mix_with_the_default_weights_is_the_default_draw_for_draw(tmp_path):
    from orchestra_jax.envs.toolworld import ToolWorld, WorldConfig

    suite = _suite(tmp_path, *(f"--config.world.preference_mix.{name}=0.1"
                               for name in ("minimise_cost", "minimise_latency", "prefer_open")))
    default = ToolWorld(WorldConfig(seed=0)).tasks("train", 200, preference="mix")
    assert [t.preference for t in suite.tasks] == [t.preference for t in default]
    assert len({t.preference for t in default}) == 5


@pytest.mark.parametrize(("override", "message"), [
    ("--config.world.preference_mix.neutral=-1", "world.preference_mix.neutral"),
    ("--config.world.preference_mix.neutral=nan", "world.preference_mix.neutral"),
])
def test_a_bad_preference_weight_is_a_config_error_naming_the_key(tmp_path, override, message):
    from orchestra_jax.train.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        _suite(tmp_path, override)


def test_an_unknown_preference_or_an_all_zero_mix_is_a_config_error():
    """Checked with the config (`schema.validate_config`), before any suite is built."""
    import ml_collections

    from orchestra_jax.train.config import ConfigError
    from orchestra_jax.train.schema import validate_config

    config = load_config(str(REPO / "experiments" / "toolworld_tiny.py"), [])
    config.world.preference_mix = ml_collections.ConfigDict({"neutral": 1.0, "be_nice": 1.0})
    with pytest.raises(ConfigError, match="unknown preferences \\['be_nice'\\]"):
        validate_config(config)
    config.world.preference_mix = ml_collections.ConfigDict({"neutral": 0.0})
    with pytest.raises(ConfigError, match="positive weight"):
        validate_config(config)
