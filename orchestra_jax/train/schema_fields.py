"""The schema's vocabulary: how a field is declared, and the checks a field may carry.

`train/schema.py` declares every config key with these (`Field`, `FreeForm`, `section`) and
the checks below (ranges, choices, registry names, the free-form sections' entries). The
registries that live with jax code are looked up only when a check runs, so importing this
imports no jax.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestra_jax.train.errors import ConfigError

#: A value check: given the value and the noun of its type ("an int"), None when the value
#: is allowed, else the phrase of what was expected ("an int >= 1").
Check = Callable[[Any, str], "str | None"]


@dataclass(frozen=True)
class Field:
    """One leaf: its default, its one-line meaning, and what it may hold."""

    default: Any
    doc: str
    kind: type | None = None  # the type when the default is None; else the default's
    nullable: bool = False  # None allowed (always so when the default is None)
    check: Check | None = None  # allowed values beyond the type

    @property
    def type(self) -> type:
        return self.kind if self.kind is not None else type(self.default)

    @property
    def may_be_none(self) -> bool:
        return self.nullable or self.default is None


@dataclass(frozen=True)
class FreeForm:
    """A mapping whose keys are the user's (`--config.mesh.rules.embed=fsdp` adds one).

    ``check(key, mapping)`` raises ``ConfigError`` for a bad entry; ``optional`` keys are
    absent from the defaults and may be added by a recipe."""

    doc: str
    check: Callable[[str, dict[str, Any]], None] | None = None
    optional: bool = False


@dataclass(frozen=True)
class Section:
    doc: str
    fields: Mapping[str, Field | FreeForm | Section] = field(default_factory=dict)


def section(doc: str, **fields: Field | FreeForm | Section) -> Section:
    """A section from keyword fields, in the order written (the config keeps that order)."""
    return Section(doc, fields)


# ---------------------------------------------------------------------------------------------
# Value checks


def at_least(low: float) -> Check:
    return lambda v, noun: None if v >= low else f"{noun} >= {low}"


def above(low: float) -> Check:
    return lambda v, noun: None if v > low else f"{noun} > {low}"


def within(low: float, high: float, *, high_open: bool = False, low_open: bool = False) -> Check:
    """``low <= v <= high``, either end open on request; NaN never passes."""

    def check(v: Any, noun: str) -> str | None:
        ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
        if ok:
            return None
        return f"{noun} in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"

    return check


def one_of(*choices: Any) -> Check:
    return lambda v, noun: None if v in choices else f"one of {choices}"


def registered(names: Callable[[], Sequence[str]], what: str) -> Check:
    """``v`` is one of ``names()`` (imported only when a config is checked)."""

    def check(v: Any, noun: str) -> str | None:
        known = sorted(names())
        return None if v in known else f"{what}, one of {known}"

    return check


def positive_ints(v: Any, noun: str) -> str | None:
    ok = len(v) > 0 and all(isinstance(b, int) and not isinstance(b, bool) and b >= 1
                            for b in v)
    return None if ok else "a non-empty tuple of positive ints (or None)"


def mesh_shape(v: Any, noun: str) -> str | None:
    """(data, fsdp, tensor): each >= 1, or -1 ("the rest of the devices") once at most."""
    ok = (len(v) == 3 and all(isinstance(d, int) and not isinstance(d, bool)
                              and (d >= 1 or d == -1) for d in v)
          and list(v).count(-1) <= 1)
    return None if ok else "3 ints (data, fsdp, tensor), each >= 1 or -1, at most one -1"


# Registries, imported when a config is checked (they live with jax code).


def advantages() -> Sequence[str]:
    from orchestra_jax.rl.advantages import ADVANTAGES

    return ADVANTAGES.names()


def policy_losses() -> Sequence[str]:
    from orchestra_jax.rl.losses import POLICY_LOSSES

    return POLICY_LOSSES.names()


def kl_estimators() -> Sequence[str]:
    from orchestra_jax.rl.losses import KL_ESTIMATORS

    return KL_ESTIMATORS.names()


def agg_modes() -> Sequence[str]:
    from orchestra_jax.rl.losses import AGG_MODES

    return AGG_MODES


def optimizers() -> Sequence[str]:
    from orchestra_jax.rl.optimizer import OPTIMIZERS

    return OPTIMIZERS


def named_template(v: Any, noun: str) -> str | None:
    """A name `tokenization.named_chat_template` resolves."""
    from orchestra_jax.tokenization import named_chat_template
    from orchestra_jax.tokenization.templates import NAMED_CHAT_TEMPLATES

    try:
        named_chat_template(v)
    except ValueError:
        return f"a named chat template, one of {sorted(NAMED_CHAT_TEMPLATES)}"
    return None


def call_pieces() -> Sequence[str]:
    from orchestra_jax.envs.toolworld.vocabulary import CALL_PIECES

    return CALL_PIECES


#: Environment families that recipes and the design name but that are not registered yet
#: (`orchestra_jax.train.envs.register_env`): they pass validation so that a recipe naming
#: one still loads and can be inspected; the run
#: stops when its suite is built. Delete a name here when its environment is registered.
PLANNED_SOURCES = ("tau2",)


def sources() -> Sequence[str]:
    from orchestra_jax.train.envs import ENVS

    return list(ENVS)


# Free-form sections' entries.


def mesh_rules(key: str, rules: dict[str, Any]) -> None:
    from orchestra_jax.sharding.mesh import MESH_AXES

    for name, axes in rules.items():
        names = (axes,) if isinstance(axes, str) else axes
        if axes is None or (isinstance(names, Sequence) and names
                            and all(isinstance(a, str) and a in MESH_AXES for a in names)):
            continue
        raise ConfigError(f"config key '{key}.{name}' is {axes!r}; expected None, a mesh axis "
                          f"or a tuple of mesh axes from {MESH_AXES}")


def kind_weights(key: str, weights: dict[str, Any]) -> None:
    from orchestra_jax.data.pipeline import strata_weight_problems

    _, bad = strata_weight_problems(weights, weights)  # the kinds are checked once built
    if bad:
        name, weight = next(iter(bad.items()))
        raise ConfigError(f"config key '{key}.{name}' is {weight!r}; expected a positive int")


def preference_mix(key: str, mix: dict[str, Any]) -> None:
    """Names from the toolworld's preference catalogue, weights >= 0 with a positive sum
    (one rule with the world's own draw: `preference_mix_problems`)."""
    if not mix:
        return  # the world's default mixture
    from orchestra_jax.envs.toolworld.preferences import PREFERENCES, preference_mix_problems

    unknown, bad = preference_mix_problems(list(mix.items()))
    if unknown:
        raise ConfigError(f"config key '{key}' names unknown preferences {sorted(unknown)}; "
                          f"known: {', '.join(PREFERENCES)}")
    if bad:
        name, weight = next(iter(bad.items()))
        raise ConfigError(f"config key '{key}.{name}' is {weight!r}; expected a number >= 0")
    if sum(mix.values()) <= 0:
        raise ConfigError(f"config key '{key}' needs a positive weight somewhere, got {mix}")
