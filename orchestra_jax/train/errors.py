"""`ConfigError`: a config file, key, override or run directory that cannot be used.

A leaf module, so the loader, the schema and the environment registry can all raise it
without importing each other. `orchestra train` and `orchestra eval` turn it into exit
status 2 with its message, which names the path or the key.
"""


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the path or the key."""


__all__ = ["ConfigError"]
