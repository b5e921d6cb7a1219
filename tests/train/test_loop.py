"""`orchestra train` end to end on the toy recipe, in-process: what a run leaves in its workdir
(config.json, TensorBoard events under the documented tags, a checkpoint, a summary) and the
exit status 2 with a message naming the culprit for a bad override or a missing config file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util import tensor_util

from orchestra_jax.cli import main
from orchestra_jax.train.checkpoint import CheckpointManager
from orchestra_jax.train.config import ConfigError

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "experiments" / "toy_target_call.py"
#: Two tasks x four episodes, two steps, mini-batches of four (two optimizer steps per step).
SMALL = [
    "--config.rollout.prompts_per_step=2",
    "--config.rollout.group_size=4",
    "--config.rollout.max_batch_size=8",
    "--config.data.max_tasks=4",
    "--config.train.steps=2",
    "--config.train.mini_batch_size=4",
    "--config.train.checkpoint_every=1",
]


def _train(workdir: Path, *extra: str) -> int:
    return main(["train", "--config", str(RECIPE), "--workdir", str(workdir), *SMALL, *extra])


def test_train_writes_config_events_checkpoint_and_summary(tmp_path, capsys):
    workdir = tmp_path / "run"
    assert _train(workdir, "--config.train.eval_every=2", "--config.loss.entropy_coef=0.01") == 0

    config = json.loads((workdir / "config.json").read_text())
    assert config["rollout"]["prompts_per_step"] == 2  # the overrides are what was recorded
    assert config["data"]["source"] == "toy_target_call"

    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["step"] == 2 and not summary["preempted"]
    assert summary["checkpoint_step"] == 2
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["step"] == 2

    with CheckpointManager(workdir / "checkpoints") as manager:
        assert manager.latest_step() == 2
        _, data_state, extra = manager.restore(2)
    assert data_state  # the pipeline position travels with the params
    assert [h["step"] for h in extra["history"]] == [1, 2]
    assert extra["history"][-1]["update/optimizer_steps"] == 2.0  # 8 samples / mini-batch 4

    events = EventAccumulator(str(workdir / "tensorboard"), size_guidance={"histograms": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag in ("train/reward", "train/reward_raw_outcome", "train/accuracy", "train/loss",
                "train/entropy",
                "train/grad_norm", "train/episodes", "time/step_s", "eval/accuracy"):
        assert tag in tags, (tag, sorted(tags))
    assert [e.step for e in events.Scalars("train/reward")] == [1, 2]
    assert [e.value for e in events.Scalars("train/episodes")] == [8.0, 8.0]
    assert [e.step for e in events.Scalars("eval/accuracy")] == [2]
    assert "hist/calls_per_episode" in events.Tags()["histograms"]
    assert [e.step for e in events.Histograms("hist/calls_per_episode")] == [1, 2]
    texts = {e.step: tensor_util.make_ndarray(e.tensor_proto).item().decode()
             for e in events.Tensors("text/trajectory")}
    assert sorted(texts) == [1, 2] and "**task**" in texts[1]


def test_unknown_override_key_exits_2_naming_the_key(tmp_path, capsys):
    assert _train(tmp_path / "run", "--config.rollout.prompts_per_stepp=3") == 2
    err = capsys.readouterr().err
    assert "rollout.prompts_per_stepp" in err and "prompts_per_step" in err


def test_wrong_type_override_exits_2_naming_the_key(tmp_path, capsys):
    assert _train(tmp_path / "run", "--config.train.steps=many") == 2
    assert "train.steps" in capsys.readouterr().err


def test_unknown_environment_exits_2_naming_data_source(tmp_path, capsys):
    assert _train(tmp_path / "run", "--config.data.source=nowhere") == 2
    err = capsys.readouterr().err
    assert "data.source" in err and "toy_target_call" in err


def test_unknown_prompt_template_exits_2_naming_the_key(tmp_path, capsys):
    recipe = str(REPO / "experiments" / "toolworld_tiny.py")
    assert main(["train", "--config", recipe, "--workdir", str(tmp_path / "run"),
                 "--config.world.prompt_template=hermes"]) == 2
    err = capsys.readouterr().err
    assert "world.prompt_template" in err and "'hermes'" in err and "compact" in err


def test_bad_sequence_buckets_exit_2_naming_the_key(tmp_path, capsys):
    assert _train(tmp_path / "run", "--config.train.seq_buckets=(0, 64)") == 2
    assert "train.seq_buckets" in capsys.readouterr().err


def test_sequence_buckets_come_from_the_config_and_end_at_the_longest_sequence():
    from orchestra_jax.train.builders import sequence_buckets
    from orchestra_jax.train.config import load_config

    toolworld = load_config(str(REPO / "experiments" / "toolworld_tiny.py"), [])
    # max_prompt_tokens 512 + max_new_tokens 2, rounded up to a multiple of 8.
    assert sequence_buckets(toolworld) == (128, 160, 192, 224, 256, 320, 384, 520)
    plain = load_config(str(REPO / "experiments" / "toolworld_tiny.py"),
                        ["--config.train.seq_buckets=None"])
    assert sequence_buckets(plain) == (128, 256, 512, 520)


def test_missing_config_file_exits_2_naming_the_path(tmp_path, capsys):
    missing = tmp_path / "no_such_recipe.py"
    assert main(["train", "--config", str(missing), "--workdir", str(tmp_path / "run")]) == 2
    assert str(missing) in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing is started for a config that is not there


# --- estimators and sources that need more than the sampler's log-probs ------------------------


def _history(workdir: Path) -> list[dict]:
    with CheckpointManager(workdir / "checkpoints") as manager:
        _, _, extra = manager.restore(manager.latest_step())
    return extra["history"]


def test_gae_trains_the_critic_with_its_clipped_value_loss(tmp_path):
    workdir = tmp_path / "run"
    assert _train(workdir, "--config.advantage.estimator=gae") == 0
    history = _history(workdir)
    for step in history:
        # The value loss is a real, finite term of the step, and the critic's values move.
        assert step["update/loss/value"] is not None and step["update/loss/value"] > 0
        assert step["update/value_mean"] is not None
    assert history[0]["update/value_mean"] != history[1]["update/value_mean"]


def test_kl_in_the_reward_penalises_distance_from_the_reference(tmp_path):
    workdir = tmp_path / "run"
    assert _train(workdir, "--config.loss.kl_in=reward", "--config.loss.kl_coef=0.5",
                  "--config.optimizer.lr=0.01") == 0
    first, second = _history(workdir)
    # Step 1 samples with the reference itself: the estimate is ~0 (sampler vs full forward).
    assert abs(first["train/ref_kl"]) < 1e-3
    # After two optimizer steps at a large lr the policy has moved: k2 > 0 and the reward
    # carries the penalty; no KL term enters the loss.
    assert second["train/ref_kl"] > 1e-4
    assert second["train/reward_kl_penalty"] > 0
    assert "update/loss/kl" not in second


def test_model_path_initialises_the_policy_from_a_checkpoint(tmp_path):
    import jax
    import numpy as np
    from flax import nnx

    from orchestra_jax.models import get_preset, save_hf_checkpoint, sharded_init
    from orchestra_jax.sharding import single_device_mesh
    from orchestra_jax.tokenization import load_tokenizer

    # A first run builds the toy vocabulary; a checkpoint of a fresh model with that
    # vocabulary (and another seed than the run's) becomes model.path.
    first = tmp_path / "first"
    assert _train(first, "--config.train.steps=1") == 0
    tokenizer = load_tokenizer(first / "tokenizer")
    model = sharded_init(get_preset("tiny", vocab_size=tokenizer.vocab_size),
                         single_device_mesh(), seed=1234)
    checkpoint = save_hf_checkpoint(model, tmp_path / "ckpt")
    tokenizer.save(checkpoint)

    workdir = tmp_path / "from_ckpt"
    assert _train(workdir, f"--config.model.path={checkpoint}", "--config.train.steps=1",
                  "--config.optimizer.lr=0.0", "--config.optimizer.weight_decay=0.0") == 0
    with CheckpointManager(workdir / "checkpoints") as manager:
        state, _, _ = manager.restore(1)
    trained = {tuple(str(k.key) for k in path)[:-1]: leaf  # orbax keeps a trailing "value"
               for path, leaf in jax.tree_util.tree_flatten_with_path(state["params"])[0]}
    loaded = {tuple(str(k) for k in path): v.get_value()
              for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    assert trained.keys() == loaded.keys()
    for path, value in loaded.items():  # lr 0: the policy is exactly the checkpoint's
        np.testing.assert_array_equal(np.asarray(trained[path]), np.asarray(value),
                                      err_msg=str(path))


def test_a_missing_model_path_exits_2_naming_the_key(tmp_path, capsys):
    assert _train(tmp_path / "run", f"--config.model.path={tmp_path / 'nowhere'}") == 2
    err = capsys.readouterr().err
    assert "model.path" in err and "nowhere" in err


def test_warm_start_then_rl_then_every_policy_evaluated_into_the_summary(tmp_path):
    workdir = tmp_path / "run"
    assert _train(workdir, "--config.sft.steps=5", "--config.sft.episodes=16",
                  "--config.sft.batch_size=8") == 0
    summary = json.loads((workdir / "summary.json").read_text())
    policies = summary["policies"]
    assert {"trained", "sft", "random", "route:target", "route:search"} <= set(policies)
    # The scripted policies are played for real: only the target route is always right.
    assert policies["route:target"]["accuracy"] == 1.0
    assert policies["route:search"]["accuracy"] == 0.0
    assert 0.0 < policies["random"]["accuracy"] < 1.0
    assert summary["best_fixed_route"] == "route:target"
    assert policies["sft"]["tasks"] == policies["trained"]["tasks"] == 4
    assert summary["wall_time_s"] > 0
    assert (workdir / "pareto.png").stat().st_size > 0
    # The warm start is saved as a checkpoint with its tokenizer, for `orchestra eval`.
    assert (workdir / "sft" / "config.json").is_file()
    events = EventAccumulator(str(workdir / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("sft/loss")] == [1, 2, 3, 4, 5]

    # `orchestra eval` of the finished run reproduces the run's own final evaluation (greedy
    # episodes and scripted policies are deterministic), and reads the sft checkpoint too.
    out = tmp_path / "eval" / "result.json"
    assert main(["eval", "--config", str(RECIPE), "--checkpoint", str(workdir),
                 "--out", str(out), *SMALL]) == 0
    result = json.loads(out.read_text())
    assert result["step"] == 2
    for name in ("trained", "sft", "random", "route:target"):
        assert result["policies"][name]["accuracy"] == policies[name]["accuracy"], name
        assert result["policies"][name]["calls"] == policies[name]["calls"], name
    assert out.with_suffix(".png").is_file()
    assert main(["eval", "--config", str(RECIPE), "--checkpoint", str(workdir / "sft"),
                 "--out", str(tmp_path / "sft.json"), *SMALL]) == 0
    from_sft = json.loads((tmp_path / "sft.json").read_text())
    assert from_sft["policies"]["trained"]["accuracy"] == policies["sft"]["accuracy"]


def test_eval_of_a_directory_without_a_checkpoint_exits_2(tmp_path, capsys):
    assert main(["eval", "--config", str(RECIPE), "--checkpoint", str(tmp_path),
                 "--out", str(tmp_path / "x.json")]) == 2
    assert "--checkpoint" in capsys.readouterr().err


def test_unknown_call_pieces_exits_2_naming_the_key(tmp_path, capsys):
    recipe = str(REPO / "experiments" / "toolworld_tiny.py")
    assert main(["train", "--config", recipe, "--workdir", str(tmp_path / "run"),
                 "--config.world.call_pieces=both"]) == 2
    err = capsys.readouterr().err
    assert "world.call_pieces" in err and "'both'" in err and "split" in err


def test_choice_terms_on_a_world_without_choice_pieces_exit_2_naming_the_key(tmp_path, capsys):
    assert _train(tmp_path / "run", "--config.loss.choice_format_coef=1.0") == 2
    err = capsys.readouterr().err
    assert "loss.choice_format_coef" in err and "toy_target_call" in err


def test_balanced_steps_on_a_world_without_task_kinds_exit_2_naming_the_key(tmp_path, capsys):
    assert _train(tmp_path / "run", "--config.data.balanced=True") == 2
    assert "data.balanced" in capsys.readouterr().err


def test_toolworld_choice_ids_are_its_eighteen_one_piece_calls(tmp_path):
    from orchestra_jax.envs.toolworld.vocabulary import call_texts
    from orchestra_jax.train.builders import choice_groups, choice_ids, strata_of
    from orchestra_jax.train.config import load_config
    from orchestra_jax.train.envs import build_env_suite

    config = load_config(str(REPO / "experiments" / "toolworld_tiny.py"), [
        "--config.world.train_tasks=8", "--config.world.test_tasks=4",
        "--config.world.vocabulary_tasks=40", "--config.loss.choice_entropy_coef=0.5"])
    suite = build_env_suite(config, tmp_path / "run")
    ids = choice_ids(config, suite, suite.tokenizer)
    assert len(set(ids)) == 18
    texts = call_texts(suite.tool_names)
    assert [suite.tokenizer.encode(text) for text in texts] == [[i] for i in ids]
    # loss.choice_entropy_over "group" (the recipe's): the tool of each call (search,
    # enhance_reasoning, answer), six experts each; "choice": no groups.
    config.loss.choice_entropy_over = "choice"
    assert choice_groups(config, suite, ids) == ()
    config.loss.choice_entropy_over = "group"
    assert choice_groups(config, suite, ids) == (0,) * 6 + (1,) * 6 + (2,) * 6
    assert [suite.choice_groups[i] for i in (0, 6, 12)] == [
        next(t for t in ("search", "enhance_reasoning", "answer") if t in texts[i])
        for i in (0, 6, 12)]
    config.loss.choice_entropy_over = "choice"
    config.loss.choice_entropy_coef = config.loss.choice_format_coef = 0.0
    assert choice_ids(config, suite, suite.tokenizer) == ()
    # data.balanced deals the families round-robin: the suite labels each task's family.
    config.data.balanced = True
    labels, weights = strata_of(config, suite)
    assert labels == [task.family for task in suite.tasks]
    assert set(labels) == {"arithmetic", "easy", "lookup", "multihop"}
    assert weights == {"arithmetic": 1, "easy": 1, "lookup": 1, "multihop": 1}
    # data.kind_weights: a kind the world does not have, or a weight below 1, names the key.
    config.data.kind_weights.multihop = 3
    assert strata_of(config, suite)[1]["multihop"] == 3
    config.data.kind_weights.multihop = 0
    with pytest.raises(ConfigError, match=r"data\.kind_weights.*positive integers"):
        strata_of(config, suite)
    config.data.kind_weights = {"algebra": 2}
    with pytest.raises(ConfigError, match=r"data\.kind_weights.*'algebra'.*not task kinds"):
        strata_of(config, suite)


def test_muon_trains_the_toy_recipe_and_an_unknown_optimizer_exits_2(tmp_path, capsys):
    assert _train(tmp_path / "muon", "--config.optimizer.name=muon",
                  "--config.optimizer.muon_embeddings=True") == 0
    summary = json.loads((tmp_path / "muon" / "summary.json").read_text())
    assert summary["step"] == 2
    assert _train(tmp_path / "lion", "--config.optimizer.name=lion") == 2
    err = capsys.readouterr().err
    assert "optimizer.name" in err and "'lion'" in err and "muon" in err


def _params(workdir: Path, step: int) -> dict:
    import jax

    with CheckpointManager(workdir / "checkpoints") as manager:
        state, _, _ = manager.restore(step)
    return {jax.tree_util.keystr(path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(state["params"])[0]}


def test_the_lr_schedule_counts_rl_steps_whatever_the_updates_per_step(tmp_path):
    """Warm-up over two RL steps: step 1's two updates run at lr 0 (the policy is the
    initial one, exactly as after a step at lr 0), step 2's at lr / 2, step 3's at lr -- however
    many mini-batches each step's kept samples make."""
    # The entropy bonus gives every step a gradient, whatever the rewards.
    bonus = "--config.loss.entropy_coef=0.01"
    warm = tmp_path / "warm"
    assert _train(warm, bonus, "--config.train.steps=3", "--config.optimizer.warmup_steps=2",
                  "--config.train.keep_checkpoints=3") == 0
    assert [h["train/lr"] for h in _history(warm)] == pytest.approx([0.0, 0.005, 0.01])
    frozen = tmp_path / "frozen"
    assert _train(frozen, bonus, "--config.train.steps=1", "--config.optimizer.lr=0.0") == 0
    after_warm, after_frozen = _params(warm, 1), _params(frozen, 1)
    assert after_warm.keys() == after_frozen.keys()
    for path, value in after_frozen.items():
        np.testing.assert_array_equal(after_warm[path], value, err_msg=path)
    moved = _params(warm, 2)
    assert any(not np.array_equal(moved[path], value) for path, value in after_warm.items())


def test_a_linear_schedule_falls_by_rl_step_towards_zero_at_train_steps(tmp_path):
    workdir = tmp_path / "linear"
    assert _train(workdir, "--config.train.steps=4", "--config.optimizer.schedule=linear") == 0
    assert [h["train/lr"] for h in _history(workdir)] == pytest.approx(
        [0.01, 0.0075, 0.005, 0.0025])


def test_the_moving_average_advances_each_rl_step_and_is_the_evaluated_policy(tmp_path):
    workdir = tmp_path / "ema"
    assert _train(workdir, "--config.loss.entropy_coef=0.01", "--config.train.ema_decay=0.5",
                  "--config.train.keep_checkpoints=3") == 0
    import jax

    def ema(step: int) -> dict:
        with CheckpointManager(workdir / "checkpoints") as manager:
            state, _, _ = manager.restore(step)
        return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in
                jax.tree_util.tree_flatten_with_path(state["ema_params"])[0]}

    first, second, params = ema(1), ema(2), _params(workdir, 2)
    assert first.keys() == params.keys()
    for path, value in params.items():
        np.testing.assert_allclose(second[path], 0.5 * first[path] + 0.5 * value, rtol=1e-6,
                                   atol=1e-7, err_msg=path)
    assert any(not np.array_equal(second[p], v) for p, v in params.items())
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["trained_params"] == "moving average (decay 0.5)"


def test_the_final_evaluation_and_orchestra_eval_play_the_moving_average(tmp_path,
                                                                         monkeypatch):
    import jax

    from orchestra_jax.eval import runner as evaluation

    played = []
    original = evaluation.model_outcomes

    def spy(run, spec, tasks, step, keep=None):  # the params the sampler holds while a
        played.append([np.asarray(x) for x in jax.tree.leaves(jax.device_get(  # policy plays
            run.sampler._state))])
        return original(run, spec, tasks, step, keep)

    monkeypatch.setattr(evaluation, "model_outcomes", spy)
    workdir = tmp_path / "run"
    ema = ["--config.loss.entropy_coef=0.01", "--config.train.ema_decay=0.5"]
    assert _train(workdir, *ema) == 0
    assert main(["eval", "--config", str(RECIPE), "--checkpoint", str(workdir), "--out",
                 str(tmp_path / "eval.json"), *SMALL, *ema]) == 0
    with CheckpointManager(workdir / "checkpoints") as manager:
        state, _, _ = manager.restore(2)
    average = [np.asarray(x) for x in jax.tree.leaves(state["ema_params"])]
    last = [np.asarray(x) for x in jax.tree.leaves(state["params"])]
    assert len(played) == 2  # the run's final evaluation, then `orchestra eval`
    for held in played:
        assert len(held) == len(average) == len(last)
        for value, avg in zip(held, average, strict=True):
            np.testing.assert_array_equal(value, avg)
        assert any(not np.array_equal(v, p) for v, p in zip(held, last, strict=True))


def test_a_bad_ema_decay_exits_2_naming_the_key(tmp_path, capsys):
    assert _train(tmp_path / "run", "--config.train.ema_decay=1.0") == 2
    assert "train.ema_decay" in capsys.readouterr().err


def test_unknown_chat_template_exits_2_naming_the_key(tmp_path, capsys):
    assert _train(tmp_path / "run", "--config.model.chat_template=hermes") == 2
    err = capsys.readouterr().err
    assert "model.chat_template" in err and "'hermes'" in err and "chatml_tools" in err


def test_chat_template_replaces_the_tokenizers_own_in_the_run(tmp_path):
    from orchestra_jax.tokenization import CHATML_TOOLS_TEMPLATE, named_chat_template
    from orchestra_jax.train.builders import build_run
    from orchestra_jax.train.config import load_config

    config = load_config(str(REPO / "experiments" / "toolworld_tiny.py"), [
        "--config.world.train_tasks=8", "--config.world.test_tasks=4",
        "--config.world.vocabulary_tasks=40", "--config.model.chat_template=chatml_tools"])
    run = build_run(config, tmp_path / "run")
    # The world vocabulary was trained for "compact"; the key wins, so the tool schemas and
    # the Hermes instructions are rendered.
    assert run.tokenizer.chat_template == named_chat_template("chatml_tools")
    assert run.tokenizer.chat_template == CHATML_TOOLS_TEMPLATE
    prompt = run.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Q?"}],
        tools=[{"type": "function", "function": {"name": "search", "parameters": {}}}],
        add_generation_prompt=True)
    assert "<tools>" in prompt and '"name": "search"' in prompt


def test_a_workdir_that_is_a_file_exits_2_and_the_file_is_untouched(tmp_path, capsys):
    target = tmp_path / "f"
    target.write_text("mine\n")
    assert _train(target) == 2
    err = capsys.readouterr().err
    assert "--workdir" in err and "not a directory" in err and "Traceback" not in err
    assert target.read_text() == "mine\n"


def test_a_workdir_that_cannot_be_created_exits_2_naming_it(tmp_path, capsys):
    parent = tmp_path / "plain_file"
    parent.write_text("")
    assert _train(parent / "run") == 2
    err = capsys.readouterr().err
    assert "--workdir" in err and "cannot be created" in err and "Traceback" not in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through file permissions; the "
                    "read-only check is exercised by a non-root user")
def test_a_read_only_workdir_exits_2_naming_it(tmp_path, capsys):
    workdir = tmp_path / "ro"
    workdir.mkdir()
    workdir.chmod(0o500)
    try:
        assert _train(workdir) == 2
        assert "not writable" in capsys.readouterr().err
        assert not any(workdir.iterdir())
    finally:
        workdir.chmod(0o700)


def test_non_finite_updates_are_skipped_counted_and_stop_the_run_after_the_limit(tmp_path):
    """A NaN loss (here: NaN advantages fed to the real update step from step 2 on) leaves
    the params as they were, is counted in TensorBoard, and after
    `train.max_nonfinite_updates` skipped updates in a row the run stops with a message; the
    last checkpoint holds the last good params."""
    import dataclasses

    from orchestra_jax.train.config import load_config
    from orchestra_jax.train.loop import TrainingDiverged, train

    config = load_config(str(RECIPE), [*SMALL, "--config.train.steps=4",
                                       "--config.train.keep_checkpoints=4",
                                       "--config.filter.min_group_std=None",
                                       "--config.train.max_nonfinite_updates=3"])

    def poison_after_step_1(run, result):
        if result.step == 1:
            real = run.update

            def poisoned(state, batch):
                return real(state, dataclasses.replace(batch,
                                                       advantages=batch.advantages * np.nan))

            run.update = poisoned

    workdir = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"train\.max_nonfinite_updates.*step 3"):
        train(config, workdir, observer=poison_after_step_1)
    one, two = _params(workdir, 1), _params(workdir, 2)
    assert all(np.array_equal(one[k], two[k]) for k in one)  # step 2's updates were skipped
    assert all(np.isfinite(v).all() for v in two.values())
    with CheckpointManager(workdir / "checkpoints") as manager:
        assert manager.latest_step() == 2  # step 3 stopped the run before its save
    events = EventAccumulator(str(workdir / "tensorboard"))
    events.Reload()
    skipped = {e.step: e.value for e in events.Scalars("update/skipped_nonfinite")}
    assert skipped == {1: 0.0, 2: 2.0}
