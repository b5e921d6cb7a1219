"""The config schema (`orchestra_jax/train/schema.py`): the defaults it builds are the old base
config's, every recipe still loads and validates, the command line follows
`ml_collections.config_flags` (`--config FILE`, `FILE:ARG`, `--config.a.b=v`,
`--config.a.b v`), and a bad value stops the run -- exit status 2, the key named -- before
its workdir exists."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import ml_collections
import pytest
from ml_collections import config_dict

from orchestra_jax.cli import main
from orchestra_jax.train.config import ConfigError, load_config
from orchestra_jax.train.schema import (
    SCHEMA,
    Field,
    FreeForm,
    Section,
    default_config,
    validate_config,
)

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = REPO / "experiments"
RECIPES = sorted(p for p in EXPERIMENTS.glob("*.py") if p.name != "base.py")
TOY = EXPERIMENTS / "toy_target_call.py"
TINY = EXPERIMENTS / "toolworld_tiny.py"
HERE = Path(__file__).resolve().parent
OLD_BASE = HERE / "old_base_config.py"
ARG_RECIPE = HERE / "recipe_with_arg.py"
#: The keys the schema added to the old base config, with their defaults.
NEW_KEYS = {("optimizer", "decay_biases_and_norms"): False,
            ("train", "skip_nonfinite_updates"): True,
            ("train", "max_nonfinite_updates"): 3,
            ("data", "bad_rows"): "fail"}
#: Sections added with the qa setting (issue 24), absent from the old base config.
NEW_SECTIONS = ("experts", "search", "judge", "qa")


def _typed(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Every key with its value and how it is declared: a plain value (and its type), a
    `placeholder` reference (and its declared type), or a section."""
    out: dict[str, Any] = {}
    for key, value in config.items(preserve_field_references=True):
        if isinstance(value, ml_collections.ConfigDict):
            out[key] = ("section", _typed(value))
        elif isinstance(value, config_dict.FieldReference):
            out[key] = ("placeholder", value.get(), value.get_type().__name__)
        else:
            out[key] = ("plain", value, type(value).__name__)
    return out


def _old_base_config() -> ml_collections.ConfigDict:
    spec = importlib.util.spec_from_file_location("_old_base_config", OLD_BASE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.base_config()


# --- the defaults ----------------------------------------------------------------------------


def test_default_config_is_the_old_base_config_plus_the_new_keys() -> None:
    new = _typed(default_config())
    old = _typed(_old_base_config())
    for (section, key), default in NEW_KEYS.items():
        assert new[section][1].pop(key) == ("plain", default, type(default).__name__)
    for section in NEW_SECTIONS:
        assert new.pop(section)[0] == "section"
    assert new == old
    # The same order too, so config.json reads as before.
    flat_new = [k for k in _flat_keys(default_config()) if tuple(k.split(".")) not in NEW_KEYS
                and k.split(".")[0] not in NEW_SECTIONS]
    assert flat_new == _flat_keys(_old_base_config())


def _flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in config.items():
        keys.append(f"{prefix}{key}")
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(_flat_keys(value, f"{prefix}{key}."))
    return keys


def test_base_py_hands_out_the_schemas_defaults_fresh_and_unlocked() -> None:
    spec = importlib.util.spec_from_file_location("_experiments_base", EXPERIMENTS / "base.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    first, second = module.base_config(), module.base_config()
    assert _typed(first) == _typed(default_config()) and not first.is_locked
    first.train.steps = 7
    assert second.train.steps == 100


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_recipe_is_the_config_it_was_over_the_old_base(recipe: Path, tmp_path: Path,
                                                             ) -> None:
    """Each recipe rebuilt over the old base (plus only the new keys) gives exactly the
    config it gives over the schema's defaults -- and both validate."""
    for path in EXPERIMENTS.glob("*.py"):
        shutil.copy(path, tmp_path / path.name)
    shutil.copy(OLD_BASE, tmp_path / "old_base.py")
    (tmp_path / "base.py").write_text(
        "from old_base import base_config as _old\n\n\n"
        "def base_config():\n"
        "    from orchestra_jax.train.schema import default_config\n"
        "    config = _old()\n"
        + "".join(f"    config.{s}.{k} = {v!r}\n" for (s, k), v in NEW_KEYS.items())
        + "".join(f"    config.{s} = default_config().{s}\n" for s in NEW_SECTIONS)
        + "    return config\n")
    assert _typed(load_config(tmp_path / recipe.name)) == _typed(load_config(recipe))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_recipe_loads_and_validates(recipe: Path) -> None:
    config = load_config(recipe)
    assert config.is_locked
    validate_config(config)


def test_every_field_has_a_one_line_meaning_and_its_default_passes_its_own_check() -> None:
    def walk(section: Section, prefix: str) -> list[tuple[str, Any]]:
        items = []
        for name, item in section.fields.items():
            items.append((f"{prefix}{name}", item))
            if isinstance(item, Section):
                items.extend(walk(item, f"{prefix}{name}."))
        return items

    items = walk(SCHEMA, "")
    assert {key for key, _ in items} >= {"model.preset", "mesh.rules", "world.preference_mix",
                                         "data.kind_weights", "optimizer.decay_biases_and_norms",
                                         "train.max_nonfinite_updates"}
    for key, item in items:
        assert item.doc.strip() and "\n" not in item.doc, key
        if isinstance(item, Field) and item.check is not None and item.default is not None:
            assert item.check(item.default, "it") is None, key
        if isinstance(item, Field) and item.default is None:
            assert item.kind is not None, key  # a placeholder needs its type
    assert isinstance(SCHEMA.fields["mesh"].fields["rules"], FreeForm)
    validate_config(default_config())


def test_the_config_modules_import_no_jax() -> None:
    code = ("import sys; import orchestra_jax.train.config, orchestra_jax.train.schema; "
            "print(sorted(m for m in ('jax', 'optax', 'flax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


# --- validation errors name the key, the value and what was expected --------------------------


@pytest.mark.parametrize(("recipe", "override", "message"), [
    (TOY, "model.dtype=int8", r"'model\.dtype' is 'int8'; expected one of \('float32'"),
    (TOY, "model.param_dtype=float8", r"'model\.param_dtype' is 'float8'"),
    (TOY, "model.chat_template=hermes", r"'model\.chat_template' is 'hermes'.*chatml_tools"),
    (TOY, "model.preset=huge", r"'model\.preset' is 'huge'; expected one of .*'tiny'"),
    (TOY, "model.overrides.num_layerz=2", r"'model\.overrides'.*num_layerz"),
    (TOY, "mesh.shape=(1, -1, -1)", r"'mesh\.shape' is \(1, -1, -1\); expected 3 ints.*one -1"),
    (TOY, "mesh.shape=(1, 2)", r"'mesh\.shape' is \(1, 2\); expected 3 ints"),
    (TOY, "mesh.shape=(0, 1, 1)", r"'mesh\.shape' is \(0, 1, 1\)"),
    (TOY, "mesh.rules.embed=fsdpp", r"'mesh\.rules\.embed' is 'fsdpp'; expected None, a mesh"),
    (TOY, "rollout.group_size=0", r"'rollout\.group_size' is 0; expected an int >= 1"),
    (TOY, "rollout.max_new_tokens=0", r"'rollout\.max_new_tokens' is 0"),
    (TOY, "rollout.top_p=0", r"'rollout\.top_p' is 0\.0; expected a number in \(0\.0, 1\.0\]"),
    (TOY, "reward.preference.cost=1.5", r"'reward\.preference\.cost' is 1\.5"),
    (TOY, "filter.min_group_std=-0.1", r"'filter\.min_group_std' is -0\.1; expected a number"),
    (TOY, "advantage.estimator=ppo", r"'advantage\.estimator' is 'ppo'.*'grpo'"),
    (TOY, "advantage.std=pop", r"'advantage\.std' is 'pop'; expected one of \('sample'"),
    (TOY, "loss.kl_in=both", r"'loss\.kl_in' is 'both'; expected one of \('loss', 'reward'\)"),
    (TOY, "loss.policy_loss=dpo", r"'loss\.policy_loss' is 'dpo'.*'ppo_clip'"),
    (TOY, "loss.agg_mode=sum", r"'loss\.agg_mode' is 'sum'.*'token-mean'"),
    (TOY, "loss.kl_estimator=k9", r"'loss\.kl_estimator' is 'k9'.*'k2'"),
    (TOY, "loss.choice_entropy_over=tools", r"'loss\.choice_entropy_over' is 'tools'"),
    (TOY, "loss.choice_entropy_coef=-1", r"'loss\.choice_entropy_coef' is -1\.0; expected"),
    (TOY, "loss.dual_clip=0.5", r"'loss\.dual_clip' is 0\.5; expected a number \(or None\) > 1"),
    (TOY, "optimizer.name=lion", r"'optimizer\.name' is 'lion'.*'muon'"),
    (TOY, "optimizer.schedule=step", r"'optimizer\.schedule' is 'step'.*cosine"),
    (TOY, "optimizer.lr=nan", r"'optimizer\.lr' is nan; expected a number"),
    (TOY, "optimizer.b2=1.0", r"'optimizer\.b2' is 1\.0; expected a number in \[0\.0, 1\.0\)"),
    (TOY, "train.steps=-3", r"'train\.steps' is -3; expected an int >= 1"),
    (TOY, "train.micro_batches=0", r"'train\.micro_batches' is 0; expected an int >= 1"),
    (TOY, "train.ema_decay=1.0", r"'train\.ema_decay' is 1\.0; expected a number in \[0\.0, 1"),
    (TOY, "train.seq_buckets=(0, 64)", r"'train\.seq_buckets' is \(0, 64\); expected a non-emp"),
    (TOY, "train.max_nonfinite_updates=0", r"'train\.max_nonfinite_updates' is 0"),
    (TOY, "sft.lm_steps=-1", r"'sft\.lm_steps' is -1; expected an int >= 0"),
    (TOY, "sft.lr=0", r"'sft\.lr' is 0\.0; expected a number > 0"),
    (TOY, "sft.batch_size=0", r"'sft\.batch_size' is 0"),
    (TOY, "eval.max_tasks=0", r"'eval\.max_tasks' is 0; expected an int \(or None\) >= 1"),
    (TOY, "data.source=nowhere", r"'data\.source' is 'nowhere'.*'toy_target_call'"),
    (TOY, "data.kind_weights.easy=2", r"'data\.kind_weights' needs 'data\.balanced' True"),
    (TINY, "data.kind_weights.easy=0", r"'data\.kind_weights\.easy' is 0; expected a positive"),
    (TINY, "world.preference_mix.neutral=-1", r"'world\.preference_mix\.neutral' is -1\.0"),
    (TINY, "world.preference_mix.be_nice=1", r"'world\.preference_mix' names unknown pref"),
    (TINY, "world.prompt_template=hermes", r"'world\.prompt_template' is 'hermes'.*compact"),
    (TINY, "world.call_pieces=both", r"'world\.call_pieces' is 'both'.*'split'"),
    (TINY, "world.train_preference=avoid", r"'world\.train_preference' is 'avoid'; expected"),
    (TINY, "world.efficiency_weight=2", r"'world\.efficiency_weight' is 2\.0"),
    (TINY, "world.search_k=0", r"'world\.search_k' is 0"),
    (TOY, "logging.log_every=0", r"'logging\.log_every' is 0; expected an int >= 1"),
])
def test_a_bad_value_names_the_key_what_was_given_and_what_was_expected(
    recipe: Path, override: str, message: str,
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(recipe, [f"--config.{override}"])


@pytest.mark.parametrize(("overrides", "message"), [
    (["advantage.estimator=gae", "loss.value_coef=0"],
     r"'loss\.value_coef' is 0\.0; expected > 0 with advantage\.estimator 'gae'"),
    (["optimizer.schedule=cosine", "optimizer.warmup_steps=40"],
     r"'optimizer\.warmup_steps' is 40: schedule 'cosine' needs total_steps > warmup_steps"),
    (["optimizer.lr=-1"], r"'optimizer\.lr' is -1\.0: learning rate must be >= 0"),
])
def test_rules_between_fields_name_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(TOY, [f"--config.{o}" for o in overrides])


def test_the_schemas_free_form_sections_take_new_keys_even_when_a_recipe_filled_them() -> None:
    config = load_config(TINY, ["--config.data.kind_weights.multihop=3",
                                "--config.world.preference_mix.prefer_open=0.1"])
    assert config.data.kind_weights.multihop == 3
    assert config.world.preference_mix.prefer_open == 0.1
    toy = load_config(TOY, ["--config.model.overrides.num_layers=3"])
    assert toy.model.overrides.num_layers == 3


def _recipe(tmp_path: Path, body: str, name: str = "recipe.py") -> Path:
    path = tmp_path / name
    path.write_text("from orchestra_jax.train.schema import default_config\n\n\n"
                    "def get_config():\n    config = default_config()\n"
                    + "".join(f"    {line}\n" for line in body.splitlines())
                    + "    return config\n")
    return path


def test_a_recipe_that_adds_an_unknown_key_or_drops_one_is_named(tmp_path: Path) -> None:
    typo = _recipe(tmp_path, "config.rollout.max_turn = 3", "typo.py")
    with pytest.raises(ConfigError, match=r"unknown config key 'rollout\.max_turn'.*did you "
                                          r"mean rollout\.max_turns"):
        load_config(typo)
    dropped = _recipe(tmp_path, "del config.rollout['top_p']", "dropped.py")
    with pytest.raises(ConfigError, match=r"'rollout\.top_p' is missing"):
        load_config(dropped)
    wrong = _recipe(tmp_path, "config.train.steps = True", "wrong.py")
    with pytest.raises(ConfigError, match=r"'train\.steps' is True \(bool\); expected an int"):
        load_config(wrong)
    none = _recipe(tmp_path, "config.train.seed = None", "none.py")
    with pytest.raises(ConfigError, match=r"'train\.seed' is None; expected an int"):
        load_config(none)


# --- FILE:ARG --------------------------------------------------------------------------------


def test_file_arg_passes_the_text_after_the_colon_to_get_config() -> None:
    assert load_config(f"{ARG_RECIPE}:5").data.max_tasks == 5
    assert load_config(ARG_RECIPE).data.max_tasks == 2  # get_config() and its default


def test_an_argument_for_a_get_config_that_takes_none_is_an_error_naming_the_file() -> None:
    with pytest.raises(ConfigError, match=r"toy_target_call\.py.*given the argument 'x'.*"
                                          r"takes none"):
        load_config(f"{TOY}:x")


def test_a_get_config_that_needs_an_argument_says_so(tmp_path: Path) -> None:
    path = tmp_path / "needs.py"
    path.write_text("from orchestra_jax.train.schema import default_config\n\n\n"
                    "def get_config(arg):\n    return default_config()\n")
    with pytest.raises(ConfigError, match=r"needs\.py.*needs an argument \('arg'\).*:ARG"):
        load_config(path)
    assert load_config(f"{path}:anything").train.steps == 100


# --- the command line ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path]:
    """One real run: FILE:ARG, an `=` override and a next-element override."""
    workdir = tmp_path_factory.mktemp("cli") / "run"
    code = main(["train", "--config", f"{ARG_RECIPE}:3", "--workdir", str(workdir),
                 "--config.train.seed=5", "--config.optimizer.lr", "0.005"])
    return code, workdir


def test_train_takes_file_arg_and_both_override_spellings(trained: tuple[int, Path]) -> None:
    code, workdir = trained
    assert code == 0
    recorded = json.loads((workdir / "config.json").read_text())
    assert recorded["data"]["max_tasks"] == 3  # from ARG
    assert recorded["train"]["seed"] == 5  # --config.train.seed=5
    assert recorded["optimizer"]["lr"] == 0.005  # --config.optimizer.lr 0.005
    assert json.loads((workdir / "summary.json").read_text())["step"] == 1


def test_eval_takes_a_plain_config_file(trained: tuple[int, Path], tmp_path: Path) -> None:
    code, workdir = trained
    assert code == 0
    out = tmp_path / "eval" / "result.json"
    assert main(["eval", "--config", str(ARG_RECIPE), "--checkpoint", str(workdir),
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["step"] == 1
    assert result["policies"]["trained"]["tasks"] == 2  # get_config()'s default, not ARG's 3


@pytest.mark.parametrize(("overrides", "key"), [
    (["--config.data.source=nowhere"], "'data.source'"),
    (["--config.train.steps=-3"], "'train.steps'"),
    (["--config.train.steps", "-3"], "'train.steps'"),
    (["--config.rollout.group_sise=4"], "'rollout.group_sise'"),
])
def test_a_bad_override_exits_2_naming_the_key_before_the_workdir_exists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], overrides: list[str], key: str,
) -> None:
    workdir = tmp_path / "run"
    assert main(["train", "--config", str(TOY), "--workdir", str(workdir), *overrides]) == 2
    assert key in capsys.readouterr().err
    assert not workdir.exists()


def test_eval_rejects_a_bad_override_before_writing_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "eval" / "result.json"
    assert main(["eval", "--config", str(TOY), "--checkpoint", str(tmp_path / "run"),
                 "--out", str(out), "--config.data.source", "nowhere"]) == 2
    assert "'data.source'" in capsys.readouterr().err
    assert not out.parent.exists()


def test_a_file_arg_the_recipe_cannot_take_exits_2_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    workdir = tmp_path / "run"
    assert main(["train", "--config", f"{TOY}:small", "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err
    assert "toy_target_call.py" in err and "'small'" in err
    assert not workdir.exists()


def test_an_override_without_a_value_exits_2(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    workdir = tmp_path / "run"
    for tail in (["--config.train.steps"], ["--config.train.steps", "--config.train.seed=1"]):
        assert main(["train", "--config", str(TOY), "--workdir", str(workdir), *tail]) == 2
        assert "--config.train.steps has no value" in capsys.readouterr().err
    assert not workdir.exists()


def test_overrides_belong_to_train_and_eval_only() -> None:
    with pytest.raises(SystemExit) as info:
        main(["models", "--config.train.steps=3"])
    assert info.value.code == 2
