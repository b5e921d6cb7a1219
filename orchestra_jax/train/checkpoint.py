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

A finalized step can still be damaged afterwards (a disk that filled up, a copy cut short, a
truncated file). `restore_latest` is the resume path: it tries the steps newest first, moves a
damaged one aside to `damaged-<step>` (outside orbax's step naming, so it is no longer listed
and never pruned or deleted) and restores the newest one that is whole.

Every step is checked file by file before orbax reads it (`_step_damage`). The reason is not
speed but orbax's failure mode: its restore opens all arrays concurrently on a fresh asyncio
loop, and when one open fails it closes that loop while the other TensorStore operations are
still in flight; each of those later tries to deliver its result to the closed loop and
TensorStore prints a `RuntimeError: Event loop is closed` traceback from its own thread. The
check uses TensorStore's blocking futures, which involve no event loop, so a damaged step is
turned down before orbax ever starts on it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import orbax.checkpoint as ocp

from orchestra_jax.sharding.multihost import barrier, is_primary
from orchestra_jax.train.paths import is_url, run_path

_ITEMS = ("state", "data", "extra")
# The JSON files orbax writes into a step directory: a damaged one fails the file check.
_JSON_FILES = ("_CHECKPOINT_METADATA", "metadata", "_METADATA", "_sharding")
# Bytes of array data the file check holds in memory at once.
_CHECK_BYTES_IN_FLIGHT = 256 << 20


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
        reader: bool = False,
    ) -> None:
        """`reader=True` opens the directory only to restore (`orchestra eval`, `export`,
        `serve --model WORKDIR`): it creates nothing and leaves orbax's temporary folders
        alone, which may be a still-training run's checkpoint being written."""
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise CheckpointError(f"keep must be a positive integer, got {keep!r}")
        if isinstance(save_every, bool) or not isinstance(save_every, int) or save_every < 1:
            raise CheckpointError(f"save_every must be a positive integer, got {save_every!r}")
        # A URL (gs://…) stays a URL for orbax; a local path becomes absolute.
        self.directory = run_path(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise CheckpointError(f"checkpoint directory {self.directory} is not a directory")
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            save_interval_steps=save_every,
            enable_async_checkpointing=async_save,
            create=not reader,
            cleanup_tmp_directories=not reader,
        )
        try:
            self._manager = ocp.CheckpointManager(
                self.directory, options=options, item_names=_ITEMS
            )
        except (OSError, ValueError) as exc:
            raise CheckpointError(
                f"cannot open checkpoint directory {self.directory}: {exc}"
            ) from exc
        except ImportError as exc:  # orbax reads gs:// buckets with google-cloud-storage
            raise CheckpointError(
                f"cannot open checkpoint directory {self.directory}: {exc}; cloud storage "
                "needs the [gcs] extra (pip install 'orchestra_jax[gcs]')"
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
        damage = self._damage(step)
        if damage is not None:
            raise CheckpointError(
                f"cannot restore step {step} from {self._step_dir(step)}: {damage}"
            )
        return self._orbax_restore(step, abstract_state)

    def restore_latest(
        self, abstract_state: Any, log: Callable[[str], None] | None = None
    ) -> tuple[int, Any, dict[str, Any], dict[str, Any]] | None:
        """`(step, state, data_state, extra)` of the newest step that restores; None when the
        directory holds no checkpoint.

        Steps are tried newest first. A step whose files are damaged (truncated, missing,
        unparsable) is renamed to `damaged-<step>` in the checkpoint directory (kept, never
        deleted, no longer listed) and `log` gets one line per such step: which step, why,
        where it went and which step is restored instead. A step whose files look whole but
        that orbax still cannot restore is treated the same way only once an older step has
        restored with the same `abstract_state`, which shows the target was right and the step
        was at fault. When no step restores, nothing is moved (a target that matches none of
        them, e.g. after a config change, must not make the next run start from scratch) and
        a `CheckpointError` names the directory and every step tried with its reason."""
        self._manager.wait_until_finished()
        self._manager.reload()
        steps = self.all_steps()
        if not steps:
            return None
        failures: list[tuple[int, str]] = []
        for step in reversed(steps):
            reason = self._damage(step)
            if reason is None:
                try:
                    state, data_state, extra = self._orbax_restore(step, abstract_state)
                except CheckpointError as exc:
                    reason = _short(exc.__cause__ or exc)
                else:
                    self._set_aside(failures, restored=step, log=log)
                    return step, state, data_state, extra
            failures.append((step, reason))
        tried = "; ".join(f"step {step}: {reason}" for step, reason in failures)
        raise CheckpointError(
            f"no checkpoint in {self.directory} restores (steps tried, newest first: {tried}); "
            "nothing was moved"
        )

    def _step_dir(self, step: int) -> Any:
        return self.directory / str(step)

    def _damage(self, step: int) -> str | None:
        """`_step_damage` of a local step; None for one in cloud storage, whose files orbax
        alone reads (the file check opens local files)."""
        if is_url(self.directory):
            return None
        return _step_damage(Path(str(self._step_dir(step))))

    def _orbax_restore(
        self, step: int, abstract_state: Any
    ) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=ocp.args.JsonRestore(),
            extra=ocp.args.JsonRestore(),
        )
        try:
            restored = self._manager.restore(step, args=args)
        except Exception as exc:  # orbax raises many types for a damaged step directory
            raise CheckpointError(
                f"cannot restore step {step} from {self._step_dir(step)}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if restored.data is None or restored.state is None:
            raise CheckpointError(
                f"checkpoint {self._step_dir(step)} lacks its state or data item"
            )
        return restored.state, dict(restored.data), dict(restored.extra or {})

    def _set_aside(
        self,
        failures: list[tuple[int, str]],
        *,
        restored: int,
        log: Callable[[str], None] | None,
    ) -> None:
        """Rename each failed step out of orbax's view and tell `log`; then make orbax's
        manager forget them, so its step list, pruning and later saves see only real steps."""
        for step, reason in failures:
            target = self._aside_path(step)
            if not is_primary():  # every process found the same damage; process 0 moves it
                continue
            try:
                self._step_dir(step).rename(target)
            except OSError as exc:
                raise CheckpointError(
                    f"checkpoint step {step} in {self.directory} is damaged ({reason}) and "
                    f"cannot be moved aside to {target}: {exc}"
                ) from exc
            if log is not None:
                log(f"checkpoint step {step} in {self.directory} is damaged ({reason}); "
                    f"moved it to {target}; restored step {restored} instead")
        if failures:
            barrier("checkpoint:set-aside")
            self._manager.reload()

    def _aside_path(self, step: int) -> Path:
        target = self.directory / f"damaged-{step}"
        n = 1
        while target.exists():  # the same step number damaged again in a later attempt
            target = self.directory / f"damaged-{step}.{n}"
            n += 1
        return target

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


def _short(exc: BaseException, limit: int = 200) -> str:
    """One line of an exception for a log line (TensorStore's messages run to many lines)."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    line = first if isinstance(exc, CheckpointError) else f"{type(exc).__name__}: {first}"
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _step_damage(step_dir: Path) -> str | None:
    """Why the files of a step directory cannot be restored, or None when they look whole.

    Checked: the three item directories exist, orbax's JSON files parse, every array orbax
    recorded as written is there, and every array of the `state` item opens and reads in full.
    Uses TensorStore's blocking API only, so a failure leaves no operation behind that
    outlives an event loop (see the module note)."""
    if not step_dir.is_dir():
        return f"{step_dir} is not a directory"
    for item in _ITEMS:
        if not (step_dir / item).is_dir():
            return f"item directory {item}/ is missing"
    parsed: dict[Path, Any] = {}
    for path in sorted(step_dir.rglob("*")):
        if path.is_file() and (path.name in _JSON_FILES or path.parent.name == "array_metadatas"):
            try:
                parsed[path.relative_to(step_dir)] = json.loads(path.read_bytes())
            except (OSError, ValueError) as exc:
                return f"{path.relative_to(step_dir)}: {_short(exc)}"
    state_dir = step_dir / "state"
    metadata = parsed.get(Path("state", "_METADATA"))
    if isinstance(metadata, dict) and "use_ocdbt" in metadata:
        use_ocdbt = bool(metadata["use_ocdbt"])
    else:
        use_ocdbt = (state_dir / "manifest.ocdbt").is_file()
    # The names orbax wrote, one file per writing process (absent in older layouts).
    expected: set[str] = set()
    for path, content in parsed.items():
        if path.parent.name == "array_metadatas" and isinstance(content, dict):
            for entry in content.get("array_metadatas", []):
                name = (entry.get("array_metadata") or {}).get("param_name")
                if isinstance(name, str):
                    expected.add(name)
    try:
        found = _read_every_array(state_dir, use_ocdbt=use_ocdbt)
    except Exception as exc:  # TensorStore reports every storage failure as ValueError
        return _short(exc)
    missing = sorted(expected - found)
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        return f"{len(missing)} of {len(expected)} arrays of state/ are missing ({shown})"
    return None


def _read_every_array(state_dir: Path, *, use_ocdbt: bool) -> set[str]:
    """Open and fully read each zarr array under `state_dir` (an OCDBT database, or plain
    files), at most `_CHECK_BYTES_IN_FLIGHT` bytes at a time; returns the arrays' names."""
    import tensorstore as ts

    if use_ocdbt:
        if not (state_dir / "manifest.ocdbt").is_file():
            raise CheckpointError("state/manifest.ocdbt is missing")
        base = {"driver": "file", "path": f"{state_dir}/"}
        kvstore: dict[str, Any] = {"driver": "ocdbt", "base": base}
    else:
        kvstore = {"driver": "file", "path": f"{state_dir}/"}
    context = ts.Context()
    keys = ts.KvStore.open(kvstore, context=context).result().list().result()
    drivers = {b"/.zarray": "zarr", b"/zarr.json": "zarr3"}
    arrays = [
        (key[: -len(suffix)].decode(), driver)
        for key in keys
        for suffix, driver in drivers.items()
        if key.endswith(suffix)
    ]
    in_flight: list[tuple[Any, int]] = []
    for name, driver in arrays:
        # An OCDBT kvstore's path is a key prefix inside the database; a file one's, a folder.
        where = {**kvstore, "path": f"{kvstore.get('path', '')}{name}/"}
        array = ts.open({"driver": driver, "kvstore": where}, open=True, context=context).result()
        nbytes = int(array.size) * array.dtype.numpy_dtype.itemsize
        while in_flight and sum(n for _, n in in_flight) + nbytes > _CHECK_BYTES_IN_FLIGHT:
            in_flight.pop(0)[0].result()
        in_flight.append((array.read(), nbytes))
    for future, _ in in_flight:
        future.result()
    return {name for name, _ in arrays}


def abstract_like(state: Any) -> Any:
    """Shape, dtype and sharding of every array of `state`: the target `restore` needs."""
    import jax

    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
    )


__all__ = ["CheckpointError", "CheckpointManager", "abstract_like"]
