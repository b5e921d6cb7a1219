"""The training room: the loop that wires rollout -> reward -> update, and its configs.

For now it holds the experiment-config loader (`orchestra_jax.train.config`), which imports
no jax so a config can be checked on any host before a run starts.
"""

from orchestra_jax.train.config import (
    ConfigError,
    apply_overrides,
    config_to_dict,
    config_to_json,
    dump_config,
    flatten_config,
    load_config,
    parse_override,
)

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
