"""The training room: config -> components -> the loop that wires rollout -> reward -> update.

`schema` declares every config key and validates a config once; `config` loads recipes and
overrides (neither imports jax, so a config can be checked on any host before a run starts);
`builders` turns a config into a `run.Run`; `sft` is the warm start; `loop.train` drives the
steps; `eval_command` is `orchestra eval`. Importing this package imports only the loader.
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
