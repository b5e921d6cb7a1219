"""Logging for the command line: one format, the chosen level, and no library chatter.

Why this is more than `logging.basicConfig`:

- orbax logs through absl at import time, and absl installs Python's default root handler
  (`LEVEL:name:message`) when none exists yet, so a later plain `basicConfig` is a no-op and
  the CLI's format never applies. `force=True` replaces that handler.
- jax probes every platform when it first lists devices; on a machine without a TPU the failed
  probe is logged at INFO by `jax._src.xla_bridge` ("Unable to initialize backend 'tpu' ...
  libtpu.so ..."). That is expected on CPU and GPU hosts, so that logger is held at WARNING:
  its real warnings (a TPU present but unusable, a GPU without CUDA jaxlib) still show, and
  TPU users keep jax's automatic platform choice (`JAX_PLATFORMS` is left alone).
- `bm25s` forces its own logger to DEBUG on import; `orchestra_jax.tools.local_search` hands
  that decision back to the root logger, and this holds it at WARNING for the CLI as well.
"""

from __future__ import annotations

import logging

#: Third-party loggers whose INFO/DEBUG records are routine noise on a normal run.
QUIET_LOGGERS = ("jax._src.xla_bridge", "bm25s")

CLI_FORMAT = "%(asctime)s %(name)s %(message)s"


def configure_cli_logging(level: int = logging.WARNING) -> None:
    """Send records at `level` and above to stderr in the CLI's format; hold the
    `QUIET_LOGGERS` at WARNING (never below what `level` already shows)."""
    logging.basicConfig(level=level, format=CLI_FORMAT, force=True)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
