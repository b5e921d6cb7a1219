"""Name -> function tables for the RL maths, so a config can say ``"grpo"`` or ``"ppo_clip"``.

One small class serves both registries (advantage estimators and policy losses) so that the
error for a misspelt name is the same everywhere: a ``ValueError`` that lists the known names,
raised on the host when the config is read, long before anything is traced.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

FnT = TypeVar("FnT", bound=Callable)


class Registry(Generic[FnT]):
    """A dict from name to function, filled by a decorator, with a helpful lookup error."""

    def __init__(self, kind: str) -> None:
        self._kind = kind
        self._table: dict[str, FnT] = {}

    def register(self, name: str) -> Callable[[FnT], FnT]:
        """Decorator that files the function under ``name``; a second use of a name is an error,
        because silently replacing an estimator would change a run's maths without a trace."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self._kind} name must be a non-empty string, got {name!r}")

        def decorate(fn: FnT) -> FnT:
            if name in self._table:
                raise ValueError(f"{self._kind} {name!r} is already registered")
            self._table[name] = fn
            return fn

        return decorate

    def get(self, name: str) -> FnT:
        """The function registered as ``name``; unknown names raise ``ValueError`` naming all."""
        try:
            return self._table[name]
        except (KeyError, TypeError):
            known = ", ".join(sorted(self._table))
            raise ValueError(f"unknown {self._kind} {name!r}; known: {known}") from None

    def names(self) -> tuple[str, ...]:
        """The registered names, sorted."""
        return tuple(sorted(self._table))

    def __contains__(self, name: object) -> bool:
        return name in self._table

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
