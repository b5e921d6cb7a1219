"""`ConfigError`: a config file, key, override or run directory that cannot be used.

A leaf module, so the loader, the schema and the environment registry can all raise it
without importing each other. `orchestra train` and `orchestra eval` turn it into exit
status 2 with its message, which names the path or the key; `close_matches` is how such a
message suggests the key that was meant.
"""

import difflib
from collections.abc import Sequence


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the path or the key."""


def close_matches(key: str, known: Sequence[str]) -> list[str]:
    """The dotted keys of `known` that look like `key`, best first (at most five).

    Two ways to be close: the last part is a near-spelling of an existing field's name anywhere
    (``optimizer.lrr`` or plain ``lr`` -> ``optimizer.lr``), or the whole dotted name is nearly
    an existing one (``optimzer.lr`` -> ``optimizer.lr``).
    """
    leaf = key.rsplit(".", 1)[-1]
    scored: dict[str, float] = {}
    for candidate in known:
        whole = difflib.SequenceMatcher(None, key, candidate).ratio()
        by_leaf = difflib.SequenceMatcher(None, leaf, candidate.rsplit(".", 1)[-1]).ratio()
        if whole >= 0.85 or by_leaf >= 0.75:
            scored[candidate] = max(whole, by_leaf) + whole / 10  # ties go to the nearer path
    return sorted(scored, key=lambda k: -scored[k])[:5]


__all__ = ["ConfigError", "close_matches"]
