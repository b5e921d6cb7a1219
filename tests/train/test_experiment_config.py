"""The experiment-config loader: typed overrides, clear errors, locking, and the recipes."""

from __future__ import annotations

import ast
import json
import textwrap
from pathlib import Path

import ml_collections
import pytest

from orchestra_jax.train.config import (
    ConfigError,
    config_to_dict,
    dump_config,
    flatten_config,
    load_config,
    parse_override,
)

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
BASE = EXPERIMENTS / "base.py"
QWEN3_8B = EXPERIMENTS / "orchestrator_qwen3_8b.py"
RECIPES = sorted(p for p in EXPERIMENTS.glob("*.py") if p.name != "base.py")


def _write(directory: Path, name: str, body: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(body))
    return path


@pytest.fixture
def base_recipe(tmp_path: Path) -> Path:
    """A recipe over the real base config, in a folder of its own."""
    (tmp_path / "base.py").write_text(BASE.read_text())
    return _write(tmp_path, "small.py", """\
        from base import base_config

        def get_config():
            return base_config()
        """)


# --- overrides of each type ------------------------------------------------------------------


def test_overrides_are_parsed_to_the_fields_types(base_recipe: Path) -> None:
    config = load_config(base_recipe, [
        "--config.rollout.group_size=16",            # int
        "--config.optimizer.lr=3e-6",                # float
        "--config.loss.kl_coef=1",                   # int text into a float field
        "--config.model.remat=true",                 # bool
        "config.model.scan_layers=1",                # bool, 'config.' prefix
        "logging.tensorboard=False",                 # bool, bare key
        "--config.model.preset=qwen3_0p6b",          # str
        "--config.mesh.shape=(2, 2, 2)",             # tuple literal
        "--config.advantage.clip=3.0",               # None-able float, set
        "--config.optimizer.grad_clip=None",         # None-able float, unset
        "--config.model.path=/ckpt/q3",              # None-able str
        "--config.rollout.max_concurrent_episodes=32",  # None-able int
    ])
    assert config.rollout.group_size == 16 and type(config.rollout.group_size) is int
    assert config.optimizer.lr == 3e-6
    assert config.loss.kl_coef == 1.0 and type(config.loss.kl_coef) is float
    assert config.model.remat is True and config.model.scan_layers is True
    assert config.logging.tensorboard is False
    assert config.model.preset == "qwen3_0p6b"
    assert config.mesh.shape == (2, 2, 2) and isinstance(config.mesh.shape, tuple)
    assert config.advantage.clip == 3.0
    assert config.optimizer.grad_clip is None
    assert config.model.path == "/ckpt/q3"
    assert config.rollout.max_concurrent_episodes == 32


def test_tuple_override_accepts_bare_commas_and_later_overrides_win(base_recipe: Path) -> None:
    config = load_config(base_recipe, ["--config.mesh.shape=1,8,1",
                                       "--config.train.steps=5", "--config.train.steps=7"])
    assert config.mesh.shape == (1, 8, 1)
    assert config.train.steps == 7


def test_a_nullable_field_set_to_none_can_be_set_again_with_its_type(base_recipe: Path) -> None:
    config = load_config(base_recipe, ["--config.loss.dual_clip=None",
                                       "--config.loss.dual_clip=10"])
    assert config.loss.dual_clip == 10.0 and type(config.loss.dual_clip) is float


def test_free_form_rules_take_new_keys_and_whole_mappings(base_recipe: Path) -> None:
    config = load_config(base_recipe, ["--config.mesh.rules.embed=fsdp",
                                       "--config.mesh.rules.mlp=('fsdp', 'tensor')",
                                       "--config.mesh.rules.vocab=None"])
    assert config.mesh.rules.to_dict() == {"embed": "fsdp", "mlp": ("fsdp", "tensor"),
                                           "vocab": None}
    replaced = load_config(base_recipe, ["--config.mesh.rules={'heads': None}"])
    assert replaced.mesh.rules.to_dict() == {"heads": None}


def test_a_section_override_merges_known_keys_only(base_recipe: Path) -> None:
    config = load_config(base_recipe, ["--config.reward.preference={'cost': 0.5}"])
    assert config.reward.preference.cost == 0.5 and config.reward.preference.outcome == 1.0
    with pytest.raises(ConfigError, match=r"reward\.preference\.costs"):
        load_config(base_recipe, ["--config.reward.preference={'costs': 0.5}"])


def test_parse_override_spellings() -> None:
    assert parse_override("--config.a.b=1") == ("a.b", "1")
    assert parse_override("config.a.b=x=y") == ("a.b", "x=y")
    assert parse_override("a=") == ("a", "")
    for bad in ("--config.a.b", "--other.a=1", "--config.a..b=1", "--config.=1"):
        with pytest.raises(ConfigError, match="override"):
            parse_override(bad)


# --- errors that name the key, the text and the type ------------------------------------------


def test_unknown_key_names_the_full_key_and_close_matches(base_recipe: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(base_recipe, ["--config.optimizer.lrr=1e-6"])
    message = str(info.value)
    assert "'optimizer.lrr'" in message and "did you mean optimizer.lr" in message
    with pytest.raises(ConfigError, match=r"'lr'; did you mean (sft\.lr, )?optimizer\.lr"):
        load_config(base_recipe, ["--config.lr=1e-6"])
    with pytest.raises(ConfigError, match=r"'optimzer\.lr'; did you mean optimizer\.lr"):
        load_config(base_recipe, ["--config.optimzer.lr=1e-6"])
    with pytest.raises(ConfigError, match=r"'rollout\.group_sise'.*rollout\.group_size"):
        load_config(base_recipe, ["--config.rollout.group_sise=4"])
    with pytest.raises(ConfigError, match=r"'zzz'; top-level keys: advantage, data, .*model"):
        load_config(base_recipe, ["--config.zzz=1"])


def test_a_key_below_a_leaf_is_unknown(base_recipe: Path) -> None:
    with pytest.raises(ConfigError, match=r"'optimizer\.lr\.x' \('optimizer\.lr' is not a sec"):
        load_config(base_recipe, ["--config.optimizer.lr.x=1"])


@pytest.mark.parametrize(("override", "expected"), [
    ("--config.rollout.group_size=2.5", "expected an int"),
    ("--config.rollout.group_size=eight", "expected an int"),
    ("--config.optimizer.lr=fast", "expected a float"),
    ("--config.model.remat=maybe", "expected a bool"),
    ("--config.mesh.shape=(1, 2.5, 4)", "element to be of type int"),
    ("--config.mesh.shape=[1, 2", "expected a tuple"),
    ("--config.mesh.shape=7", "expected a tuple"),
    ("--config.train.steps=None", "expected an int"),
    ("--config.advantage.clip=big", "expected a float"),
    ("--config.model=3", "is a section"),
])
def test_wrong_type_names_the_key_the_text_and_the_type(
    base_recipe: Path, override: str, expected: str
) -> None:
    key, text = parse_override(override)
    with pytest.raises(ConfigError) as info:
        load_config(base_recipe, [override])
    message = str(info.value)
    assert repr(key) in message and expected in message
    if "section" not in expected:
        assert repr(text) in message


def test_a_value_outside_its_choices_is_an_error(base_recipe: Path) -> None:
    with pytest.raises(ConfigError, match=r"'loss\.kl_in' is 'both'; expected one of"):
        load_config(base_recipe, ["--config.loss.kl_in=both"])


# --- files ------------------------------------------------------------------------------------


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.py"
    with pytest.raises(ConfigError, match=r"nope\.py.*does not exist"):
        load_config(missing)


def test_a_file_without_get_config_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, "empty.py", "X = 1\n")
    with pytest.raises(ConfigError, match=r"empty\.py.*no get_config\(\)"):
        load_config(path)


def test_a_get_config_that_raises_or_a_broken_file_is_named(tmp_path: Path) -> None:
    raising = _write(tmp_path, "raising.py", """\
        def get_config():
            raise KeyError("model")
        """)
    with pytest.raises(ConfigError, match=r"get_config\(\) in .*raising\.py.* raised KeyError"):
        load_config(raising)
    broken = _write(tmp_path, "broken.py", "def get_config(:\n")
    with pytest.raises(ConfigError, match=r"broken\.py.*failed to import: SyntaxError"):
        load_config(broken)
    wrong = _write(tmp_path, "wrong.py", "def get_config():\n    return 3\n")
    with pytest.raises(ConfigError, match=r"wrong\.py.*returned int"):
        load_config(wrong)


def test_sibling_helpers_of_different_folders_do_not_leak(tmp_path: Path) -> None:
    for name, value in (("one", 1), ("two", 2)):
        folder = tmp_path / name
        folder.mkdir()
        _write(folder, "base.py", f"VALUE = {value}\n")
        _write(folder, "recipe.py", """\
            from base import VALUE

            from orchestra_jax.train.schema import default_config

            def get_config():
                config = default_config()
                config.train.seed = VALUE
                return config
            """)
    assert load_config(tmp_path / "one" / "recipe.py").train.seed == 1
    assert load_config(tmp_path / "two" / "recipe.py").train.seed == 2


# --- locking and the run-directory record ------------------------------------------------------


def test_the_loaded_config_is_locked(base_recipe: Path) -> None:
    config = load_config(base_recipe)
    assert config.is_locked
    with pytest.raises(AttributeError, match="kl_cof"):
        config.loss.kl_cof = 1.0
    with pytest.raises(AttributeError):
        config.new_section = ml_collections.ConfigDict()
    config.loss.kl_coef = 2e-4  # existing fields stay writable, with their types
    with pytest.raises(TypeError):
        config.train.steps = "many"


def test_dump_config_writes_json_that_round_trips(base_recipe: Path, tmp_path: Path) -> None:
    config = load_config(base_recipe, ["--config.mesh.shape=(1, 4, 2)"])
    path = dump_config(config, tmp_path / "run" / "nested")
    assert path == tmp_path / "run" / "nested" / "config.json"
    saved = json.loads(path.read_text())
    assert saved["mesh"]["shape"] == [1, 4, 2]
    assert saved["model"]["path"] is None
    assert saved == json.loads(json.dumps(config_to_dict(config)))
    assert [p.name for p in path.parent.iterdir()] == ["config.json"]  # no temp file left


# --- the recipes -------------------------------------------------------------------------------


def test_base_config_names_every_section_the_loop_reads(base_recipe: Path) -> None:
    flat = flatten_config(load_config(base_recipe))
    for key in ("model.preset", "model.path", "model.chat_template", "model.dtype",
                "model.param_dtype", "model.remat", "model.scan_layers", "mesh.shape",
                "mesh.rules", "rollout.prompts_per_step",
                "rollout.group_size", "rollout.max_turns", "rollout.max_new_tokens",
                "rollout.temperature", "rollout.top_p", "rollout.episode_timeout_s",
                "rollout.max_batch_size", "reward.alias_min_over_users",
                "advantage.estimator", "advantage.std", "advantage.clip", "advantage.boost",
                "loss.policy_loss", "loss.clip_low", "loss.clip_high", "loss.dual_clip",
                "loss.agg_mode", "loss.kl_coef", "loss.kl_estimator", "loss.kl_in",
                "loss.entropy_coef", "loss.value_coef", "loss.value_clip", "optimizer.lr",
                "optimizer.schedule", "optimizer.warmup_steps", "optimizer.b1", "optimizer.b2",
                "optimizer.weight_decay", "optimizer.grad_clip", "train.steps",
                "train.mini_batch_size", "train.ppo_epochs", "train.micro_batches", "train.seed",
                "train.eval_every", "train.checkpoint_every", "train.keep_checkpoints",
                "data.source", "logging.tensorboard", "logging.log_every"):
        assert key in flat, key


def test_qwen3_8b_recipe_holds_the_papers_numbers() -> None:
    c = load_config(QWEN3_8B)
    assert c.model.preset == "qwen3_8b" and c.model.path == "/checkpoints/Qwen3-8B"
    assert (c.model.dtype, c.model.param_dtype, c.model.remat) == ("bfloat16", "float32", True)
    assert c.mesh.shape == (1, 16, 4)
    assert (c.rollout.prompts_per_step, c.rollout.group_size) == (16, 8)
    assert (c.rollout.max_prompt_tokens, c.rollout.max_new_tokens) == (24000, 8768)
    assert (c.rollout.temperature, c.rollout.top_p) == (1.0, 1.0)
    assert c.rollout.max_turns == 30
    assert c.filter.min_group_std == 0.1
    assert (c.advantage.estimator, c.advantage.std, c.advantage.eps) == ("grpo", "sample", 1e-6)
    assert c.advantage.clip is None and c.advantage.boost is None
    assert c.loss.policy_loss == "ppo_clip"
    assert (c.loss.clip_low, c.loss.clip_high, c.loss.dual_clip) == (0.2, 0.28, 10.0)
    assert (c.loss.kl_coef, c.loss.kl_estimator, c.loss.kl_in) == (1e-4, "k2", "loss")
    assert c.loss.agg_mode == "token-mean" and c.loss.entropy_coef == 0.0
    o = c.optimizer
    assert (o.name, o.lr, o.schedule, o.warmup_steps) == ("adamw", 1e-6, "constant", 0)
    assert (o.b1, o.b2, o.weight_decay, o.grad_clip) == (0.9, 0.999, 0.01, 1.0)
    assert (c.train.ppo_epochs, c.train.mini_batch_size) == (1, 16)
    assert c.train.checkpoint_every == 1
    # 16 x 8 rollouts fit in one sampler call.
    assert c.rollout.max_batch_size >= c.rollout.prompts_per_step * c.rollout.group_size


def test_qwen3_8b_mesh_divides_the_models_heads() -> None:
    """The tensor axis must divide Qwen3-8B's 8 KV heads and 32 query heads."""
    tensor = load_config(QWEN3_8B).mesh.shape[2]
    assert 8 % tensor == 0 and 32 % tensor == 0


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_recipe_loads_and_its_docstring_opens_with_its_command(recipe: Path) -> None:
    config = load_config(recipe)
    assert isinstance(config, ml_collections.ConfigDict) and config.is_locked
    docstring = ast.get_docstring(ast.parse(recipe.read_text()))
    assert docstring, f"{recipe.name} has no docstring"
    first_line = docstring.splitlines()[0]
    assert first_line.startswith(f"orchestra train --config experiments/{recipe.name}")
    assert "--workdir" in first_line


def test_there_is_at_least_one_recipe() -> None:
    assert QWEN3_8B in RECIPES
