"""Experiment configs: load an `experiments/*.py` file, apply command-line overrides, lock.

Why a loader of our own rather than `ml_collections.config_flags`: the training command is an
`argparse` CLI, not absl, and a run that starts for hours on a TPU pod should die *before* it
starts when a flag is mistyped -- with a message that names the flag, what was given and what
was expected, not a stack trace from deep inside the loop. So:

* ``load_config(path, overrides)`` imports the file (its directory is importable while it runs,
  as for a script, so recipes can ``from base import base_config``), calls ``get_config()``,
  applies ``--config.a.b=value`` overrides, checks the result once against the schema
  (``orchestra_jax.train.schema.validate_config``: every key, type, range and registry name)
  and returns the config locked, so that a typo later in the code raises too.
* ``path`` may be ``FILE:ARG``, as with ``ml_collections.config_flags``: the file's
  ``get_config(arg)`` receives the string ARG (everything after the first colon), so one file
  can hold several variants (big_vision's convention).
* An override must name an existing key; an unknown key is an error listing the close matches.
  The text is parsed to the type of the field it replaces (int, float, bool, str, tuple/list,
  mapping); a field that may be None is declared with ``ml_collections.config_dict.placeholder``
  (its type is known even while it is None) and accepts ``None``.
* A free-form section (the schema's ``mesh.rules``, ``data.kind_weights``,
  ``world.preference_mix``, ``model.overrides``, and any section that is empty in the loaded
  config) has keys not known in advance, so ``--config.mesh.rules.embed=fsdp`` adds one and
  ``--config.mesh.rules="{'embed': 'fsdp'}"`` replaces the whole mapping.

Nothing here imports jax: configs are read and checked on the host before any device work.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import inspect
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections
from ml_collections import config_dict

from orchestra_jax.train.errors import ConfigError, close_matches
from orchestra_jax.train.paths import is_url, run_path
from orchestra_jax.train.schema import free_form_keys, validate_config

__all__ = [
    "ConfigError",
    "apply_overrides",
    "config_to_dict",
    "config_to_json",
    "dump_config",
    "flatten_config",
    "load_config",
    "parse_override",
]

#: Spellings accepted for booleans (case-insensitive).
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")
#: Spellings that set a None-able field to None.
_NONE = ("none", "null")



# ---------------------------------------------------------------------------------------------
# Loading the file


def _config_module_name(path: Path) -> str:
    return f"_orchestra_experiment_{abs(hash(str(path)))}_{path.stem}"


@contextlib.contextmanager
def _script_imports(directory: Path) -> Iterator[None]:
    """Make ``directory`` importable while a config runs, as Python does for a script.

    Modules imported from that directory are dropped afterwards, and a same-named module from
    elsewhere is set aside meanwhile, so that two experiment folders each with a ``base.py`` (or
    a test's temporary folder) never see each other's helpers.
    """
    siblings = {p.stem for p in directory.glob("*.py")}
    set_aside = {name: sys.modules.pop(name) for name in siblings if name in sys.modules}
    before = set(sys.modules)
    sys.path.insert(0, str(directory))
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(directory))
        for name in set(sys.modules) - before:
            origin = getattr(sys.modules[name], "__file__", None)
            if origin and Path(origin).resolve().parent == directory:
                del sys.modules[name]
        sys.modules.update(set_aside)


def split_config_arg(path: str | os.PathLike[str]) -> tuple[Path, str | None]:
    """``'FILE:ARG'`` -> ``(FILE, 'ARG')``; a plain path (or one that exists as written,
    colon and all) -> ``(path, None)``. As ``ml_collections.config_flags``, the argument is
    everything after the first colon."""
    text = os.fspath(path)
    whole = Path(text).expanduser()
    if ":" not in text or whole.exists():
        return whole, None
    file, arg = text.split(":", 1)
    return Path(file).expanduser(), arg


def _call_get_config(get_config: Any, path: Path, arg: str | None) -> Any:
    """``get_config(arg)`` when the recipe was given ``:ARG``, else ``get_config()``; a file
    given an argument it takes no parameter for (or needing one it was not given) is named."""
    try:
        params = list(inspect.signature(get_config).parameters.values())
    except (TypeError, ValueError):  # a builtin or C callable: just call it
        params = None
    if params is not None:
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD,
                                                      p.VAR_POSITIONAL)]
        required = [p for p in positional
                    if p.default is p.empty and p.kind is not p.VAR_POSITIONAL]
        if arg is not None and not positional:
            raise ConfigError(f"config file {str(path)!r} was given the argument {arg!r} "
                              f"(--config FILE:ARG) but its get_config() takes none")
        if arg is None and required:
            raise ConfigError(f"get_config() in {str(path)!r} needs an argument "
                              f"({required[0].name!r}): use --config {path}:ARG")
    try:
        return get_config() if arg is None else get_config(arg)
    except Exception as exc:
        raise ConfigError(
            f"get_config() in {str(path)!r} raised {type(exc).__name__}: {exc}"
        ) from exc


def _run_get_config(path: Path, arg: str | None = None) -> ml_collections.ConfigDict:
    if not path.exists():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    if not path.is_file() or path.suffix != ".py":
        raise ConfigError(f"config file {str(path)!r} is not a Python file")
    name = _config_module_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"config file {str(path)!r} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    with _script_imports(path.parent):
        sys.modules[name] = module  # dataclasses and pickling look the module up by name
        try:
            try:
                spec.loader.exec_module(module)
            except Exception as exc:
                raise ConfigError(
                    f"config file {str(path)!r} failed to import: {type(exc).__name__}: {exc}"
                ) from exc
            get_config = getattr(module, "get_config", None)
            if not callable(get_config):
                raise ConfigError(f"config file {str(path)!r} defines no get_config() function")
            config = _call_get_config(get_config, path, arg)
        finally:
            sys.modules.pop(name, None)
    if isinstance(config, Mapping) and not isinstance(config, ml_collections.ConfigDict):
        config = ml_collections.ConfigDict(dict(config))
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(
            f"get_config() in {str(path)!r} returned {type(config).__name__}, "
            "expected an ml_collections.ConfigDict"
        )
    return config


def load_config(
    path: str | os.PathLike[str], overrides: Sequence[str] = ()
) -> ml_collections.ConfigDict:
    """The config of the experiment file at ``path`` with ``overrides`` applied, checked, locked.

    ``path`` is ``FILE`` or ``FILE:ARG`` (``get_config(ARG)``). ``overrides`` are
    ``--config.a.b=value`` (or ``config.a.b=value`` or ``a.b=value``) strings, applied in
    order; then the whole config is validated once (``schema.validate_config``). Every problem
    -- missing file, no ``get_config``, an exception inside it, an unknown key, a value of the
    wrong type, outside its range or not in its registry -- raises ``ConfigError`` naming the
    path or the key.
    """
    if isinstance(overrides, str):
        raise ConfigError("overrides must be a sequence of 'key=value' strings, not one string")
    file, arg = split_config_arg(path)
    config = _run_get_config(file.resolve(), arg)
    try:
        apply_overrides(config, overrides)
        validate_config(config)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (config {str(path)!r})") from exc
    config.lock()
    return config


# ---------------------------------------------------------------------------------------------
# Overrides


def parse_override(text: str) -> tuple[str, str]:
    """``'--config.a.b=value'`` -> ``('a.b', 'value')``; the value stays text."""
    if not isinstance(text, str):
        raise ConfigError(f"override {text!r} is not a string")
    body = text.strip()
    if body.startswith("--"):
        body = body[2:]
        if not body.startswith("config."):
            raise ConfigError(f"override {text!r} must look like --config.a.b=value")
    if body.startswith("config."):
        body = body[len("config."):]
    key, sep, value = body.partition("=")
    key = key.strip()
    if not sep:
        raise ConfigError(f"override {text!r} has no '=': write --config.{key or 'a.b'}=value")
    parts = key.split(".")
    if not key or any(not p.isidentifier() for p in parts):
        raise ConfigError(f"override {text!r} has a malformed key {key!r}")
    return key, value


def flatten_config(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
    """Every leaf as ``{'a.b': value}``; an empty section appears as one ``{}`` entry."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, ml_collections.ConfigDict):
            if len(value) == 0:
                flat[dotted] = {}
            else:
                flat.update(flatten_config(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def _all_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        keys.append(dotted)
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(_all_keys(value, f"{dotted}."))
    return keys


def _unknown_key(key: str, config: ml_collections.ConfigDict, detail: str = "") -> ConfigError:
    matches = close_matches(key, _all_keys(config))
    hint = (f"; did you mean {', '.join(matches)}?" if matches
            else f"; top-level keys: {', '.join(config.keys())}")
    return ConfigError(f"unknown config key {key!r}{detail}{hint}")


def _is_nullable(section: ml_collections.ConfigDict, name: str) -> bool:
    """None is allowed where the field is None now or was declared with ``placeholder``."""
    if section[name] is None:
        return True
    field = dict(section.items(preserve_field_references=True))[name]
    return isinstance(field, config_dict.FieldReference)


def _literal(key: str, text: str, expected: str) -> Any:
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise ConfigError(
            f"config key {key!r}: got {text!r}, expected {expected} (a Python literal)"
        ) from exc


def _parse_bool(key: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"config key {key!r}: got {text!r}, expected a bool (true/false/1/0)")


def _parse_scalar(key: str, text: str, kind: type) -> Any:
    if kind is bool:
        return _parse_bool(key, text)
    if kind is str:
        return text
    if kind is int:
        try:
            return int(text.strip())
        except ValueError:
            raise ConfigError(f"config key {key!r}: got {text!r}, expected an int") from None
    if kind is float:
        try:
            return float(text.strip())
        except ValueError:
            raise ConfigError(f"config key {key!r}: got {text!r}, expected a float") from None
    value = _literal(key, text, f"a {kind.__name__}")
    if not isinstance(value, kind):
        raise ConfigError(
            f"config key {key!r}: got {text!r}, expected a {kind.__name__}"
        )
    return value


def _element_type(items: Sequence[Any]) -> type | None:
    kinds = {type(x) for x in items}
    return kinds.pop() if len(kinds) == 1 else None


def _coerce_element(key: str, text: str, value: Any, kind: type) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return value
    raise ConfigError(
        f"config key {key!r}: got {text!r}, expected every element to be of type {kind.__name__}"
    )


def _parse_sequence(key: str, text: str, current: Sequence[Any]) -> Any:
    container = type(current)
    expected = f"a {container.__name__} such as (1, 2) or 1,2"
    value = _literal(key, text, expected) if text.strip() else ()
    if not isinstance(value, (tuple, list)):
        value = (value,) if text.strip().endswith(",") else value
    if not isinstance(value, (tuple, list)):
        raise ConfigError(f"config key {key!r}: got {text!r}, expected {expected}")
    kind = _element_type(current)
    if kind is not None:
        value = [_coerce_element(key, text, v, kind) for v in value]
    return container(value)


def _parse_free(text: str) -> Any:
    """A value with no declared type: a Python literal when it is one, else the text."""
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def _parse_for(section: ml_collections.ConfigDict, name: str, key: str, text: str) -> Any:
    current = section[name]
    if text.strip().lower() in _NONE and _is_nullable(section, name):
        return None
    if isinstance(current, ml_collections.ConfigDict):
        value = _literal(key, text, "a mapping such as {'name': value}")
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r} is a section: got {text!r}, expected a dict")
        return value
    if current is None:
        kind = section.get_type(name) if _is_nullable(section, name) else type(None)
        if kind is type(None):
            return _parse_free(text)
        return _parse_scalar(key, text, kind)
    if isinstance(current, (tuple, list)):
        return _parse_sequence(key, text, current)
    return _parse_scalar(key, text, type(current))


def _set_section(
    section: ml_collections.ConfigDict, name: str, key: str, value: dict[str, Any],
    free_form: set[str], text: str,
) -> None:
    if key in free_form:
        with section.ignore_type():
            section[name] = value
        return
    target = section[name]
    for sub, sub_value in value.items():
        sub_key = f"{key}.{sub}"
        if not isinstance(sub, str) or sub not in target:
            raise ConfigError(f"config key {sub_key!r} given in {text!r} does not exist")
        _assign(target, sub, sub_key, repr(sub_value) if not isinstance(sub_value, str)
                else sub_value, free_form)


def _assign(section: ml_collections.ConfigDict, name: str, key: str, text: str,
            free_form: set[str]) -> None:
    value = _parse_for(section, name, key, text)
    if isinstance(value, dict):
        _set_section(section, name, key, value, free_form, text)
        return
    try:
        section[name] = value
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"config key {key!r}: cannot set {text!r} ({type(value).__name__}) on a field of "
            f"type {section.get_type(name).__name__}"
        ) from exc


def _free_form_sections(config: ml_collections.ConfigDict) -> set[str]:
    """The schema's free-form sections, and any section that is empty in ``config``."""
    return free_form_keys() | {k for k, v in flatten_config(config).items() if v == {}}


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Sequence[str]
) -> ml_collections.ConfigDict:
    """Apply ``--config.a.b=value`` strings to ``config`` in place (and return it).

    The config must not be locked against the free-form sections' new keys, so call this
    before ``lock()``; ``load_config`` does.
    """
    free_form = _free_form_sections(config)
    for text in overrides:
        key, raw = parse_override(text)
        *parents, name = key.split(".")
        section = config
        for depth, part in enumerate(parents):
            prefix = ".".join(parents[: depth + 1])
            child = section.get(part) if part in section else None
            if not isinstance(child, ml_collections.ConfigDict):
                detail = f" ({prefix!r} is not a section)" if part in section else ""
                raise _unknown_key(key, config, detail)
            section = child
        parent_key = ".".join(parents)
        if name not in section:
            if parent_key in free_form:
                with section.unlocked():
                    section[name] = _parse_free(raw)
                continue
            raise _unknown_key(key, config)
        _assign(section, name, key, raw, free_form)
    return config


# ---------------------------------------------------------------------------------------------
# Recording the config in the run directory


def config_to_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Plain nested dicts (tuples stay tuples), for logging and JSON."""
    return config.to_dict()


def config_to_json(config: ml_collections.ConfigDict) -> str:
    """The config as indented JSON (tuples become lists), keys in the config's order."""
    try:
        return json.dumps(config_to_dict(config), indent=2)
    except TypeError as exc:
        raise ConfigError(f"config holds a value that JSON cannot store: {exc}") from exc


def dump_config(
    config: ml_collections.ConfigDict, workdir: str | os.PathLike[str],
    name: str = "config.json",
) -> Path:
    """Write the config as JSON into ``workdir`` (created if needed), atomically; the path.

    The run directory then says exactly which settings produced its checkpoints and curves,
    overrides included; a crash mid-write never leaves a half-written file. A URL workdir
    (gs://…) gets one whole-object write, which object stores make atomic themselves.
    """
    text = config_to_json(config) + "\n"
    if is_url(workdir):
        remote = run_path(workdir)
        remote.mkdir(parents=True, exist_ok=True)
        (remote / name).write_text(text)
        return remote / name
    directory = Path(workdir)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / name
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target
