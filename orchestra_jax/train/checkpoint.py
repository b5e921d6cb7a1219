"""Orbax checkpoints of a training run: device state, data-iterator position, host metadata.

One step directory holds three items so that a resume is exact and self-describing:
  - `state`: a pytree of jax arrays (params, optimizer state, step, rng key data). Restored
    onto the shardings of an abstract target, so a resumed run lands on its mesh directly.
  - `data`: the grain iterator state (`DatasetIterator.get_state()`), as JSON.
  - `extra`: a JSON dict for the host side (config, metrics history, ...).

Saves are asynchronous by default: orbax copies device arrays to host memory before `save`
returns and writes in a background thread into a temporary directory that is renamed to the
step's name only once every item is written. A run killed mid-write therefore leaves a
temporary directory that is never listed as a step (and is removed the next time a manager
opens the directory), never a half checkpoint that `latest_step` would pick up.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import orbax.checkpoint as ocp

_ITEMS = ("state", "data", "extra")


class CheckpointError(RuntimeError):
    """A checkpoint directory or step is missing, unreadable, or was given bad content."""


def _json_safe(value: Any, where: str) -> Any:
    """Plain-JSON copy of `value` (numpy scalars and arrays become Python numbers and lists).

    Checked at save time, on the caller's thread, so a bad value fails with a message naming
    the item instead of dying later inside orbax's background writer."""
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise CheckpointError(f"{where}: keys must be strings, got {key!r}")
            out[key] = _json_safe(item, f"{where}.{key}")
        return out
    if isinstance(value, list | tuple):
        return [_json_safe(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise CheckpointError(f"{where} is not JSON-serializable: {type(value).__name__}")


class CheckpointManager:
    """Keeps the last `keep` checkpoints of a run under `directory`, one per `save_every` steps.

    A thin layer over `orbax.checkpoint.CheckpointManager` that fixes the item layout, checks
    inputs before the background writer sees them, and turns orbax's failures on a missing or
    damaged directory into a `CheckpointError` that names it.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        keep: int = 3,
        save_every: int = 1,
        async_save: bool = True,
    ) -> None:
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise CheckpointError(f"keep must be a positive integer, got {keep!r}")
        if isinstance(save_every, bool) or not isinstance(save_every, int) or save_every < 1:
            raise CheckpointError(f"save_every must be a positive integer, got {save_every!r}")
        self.directory = Path(directory).absolute()
        if self.directory.exists() and not self.directory.is_dir():
            raise CheckpointError(f"checkpoint directory {self.directory} is not a directory")
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            save_interval_steps=save_every,
            enable_async_checkpointing=async_save,
            create=True,
            cleanup_tmp_directories=True,
        )
        try:
            self._manager = ocp.CheckpointManager(
                self.directory, options=options, item_names=_ITEMS
            )
        except (OSError, ValueError) as exc:
            raise CheckpointError(
                f"cannot open checkpoint directory {self.directory}: {exc}"
            ) from exc

    def save(
        self,
        step: int,
        state: Any,
        data_state: Mapping[str, Any],
        extra: Mapping[str, Any] | None = None,
        *,
        force: bool = False,
    ) -> bool:
        """Start saving `step` (returns at once when async); False when `save_every` skips it.

        Saved are: the first step saved into an empty directory (so a fresh run always has a
        baseline), every step divisible by `save_every`, and any step with `force=True`.
        `force=True` is what a preempted run uses on its way out. The arrays of `state` may
        be donated or overwritten once this returns: orbax has already copied them to host
        memory."""
        if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 0:
            raise CheckpointError(f"step must be a non-negative integer, got {step!r}")
        data_json = _json_safe(dict(data_state), "data_state")
        extra_json = _json_safe(dict(extra or {}), "extra")
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(data_json),
            extra=ocp.args.JsonSave(extra_json),
        )
        return bool(self._manager.save(int(step), args=args, force=force))

    def latest_step(self) -> int | None:
        """The newest finalized step, or None when the directory holds no checkpoint."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """Every finalized step still kept, oldest first."""
        return sorted(self._manager.all_steps())

    def restore(
        self, step: int | None = None, *, abstract_state: Any = None
    ) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """Load `(state, data_state, extra)` of `step` (default: the latest).

        `abstract_state` is a pytree of `jax.ShapeDtypeStruct` with `sharding=` set (e.g.
        `jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
        state)`), and the arrays come back on exactly those shardings; None restores onto
        the shardings recorded at save time, which only works on the same topology."""
        self._manager.wait_until_finished()
        self._manager.reload()
        steps = self.all_steps()
        if step is None:
            if not steps:
                raise CheckpointError(f"no checkpoint found in {self.directory}")
            step = steps[-1]
        elif step not in steps:
            raise CheckpointError(
                f"no checkpoint for step {step} in {self.directory}; available steps: {steps}"
            )
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=ocp.args.JsonRestore(),
            extra=ocp.args.JsonRestore(),
        )
        try:
            restored = self._manager.restore(step, args=args)
        except Exception as exc:  # orbax raises many types for a damaged step directory
            raise CheckpointError(
                f"cannot restore step {step} from {self.directory / str(step)}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if restored.data is None or restored.state is None:
            raise CheckpointError(
                f"checkpoint {self.directory / str(step)} lacks its state or data item"
            )
        return restored.state, dict(restored.data), dict(restored.extra or {})

    def wait_until_finished(self) -> None:
        """Block until every pending async save is finalized (renamed into place)."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Finish pending saves and release orbax's background threads."""
        self._manager.close()

    def __enter__(self) -> CheckpointManager:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def abstract_like(state: Any) -> Any:
    """Shape, dtype and sharding of every array of `state`: the target `restore` needs."""
    import jax

    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
    )


__all__ = ["CheckpointError", "CheckpointManager", "abstract_like"]
