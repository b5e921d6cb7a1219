"""The shared defaults every recipe starts from: `base_config()`; not a runnable recipe.

A recipe imports this (`from base import base_config`; the loader makes the experiments folder
importable), changes what differs, and returns the result from its `get_config()`.

Every key -- its type, its default, the values it may take and what it means -- is declared
once, in `orchestra_jax/train/schema.py` (`SCHEMA`); this file only hands its defaults to the
recipes. The loader checks a recipe's result, overrides included, against that schema
(`validate_config`), so a mistyped `--config.a.b=value` or a value out of range stops the
command before anything starts.

The defaults are a small CPU-sized run on the embedded toolworld; the method's own numbers
live in `orchestrator_qwen3_8b.py`.
"""

from __future__ import annotations

import ml_collections

from orchestra_jax.train.schema import default_config


def base_config() -> ml_collections.ConfigDict:
    """A fresh, unlocked config holding every field the training loop reads."""
    return default_config()
