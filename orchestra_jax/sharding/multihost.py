"""JAX's multi-controller runtime: one process per host, every host runs the same program.

Where a process learns its place (`ProcessPlace.from_environment`), first match wins:

1. `--coordinator/--num_processes/--process_id` (`orchestra train` flags);
2. `ORCHESTRA_COORDINATOR`, `ORCHESTRA_NUM_PROCESSES`, `ORCHESTRA_PROCESS_ID` (what
   `launch/local.sh`, `launch/slurm.sh` and the GPU JobSet set);
3. `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID` (JAX's own names);
4. a TPU pod slice on GKE (`TPU_WORKER_HOSTNAMES` lists more than one worker) or a Cloud TPU
   VM (its `/dev/accel*` or `/dev/vfio/*` devices; the slice is described in the VM's metadata,
   not its environment): JAX reads the slice's layout itself, `jax.distributed.initialize()`
   with no arguments (on a one-host slice that makes a run of one process);
5. otherwise one process, and `jax.distributed` is never touched.

On a CPU the cross-process collectives go through gloo (`jax_cpu_collectives_implementation`),
which is how multi-host is tested on one machine: N processes on 127.0.0.1, each with
`--xla_force_host_platform_device_count` fake devices.

The rest of this module is what the training loop needs on top of the runtime: whether this
process writes (`is_primary`: process 0 alone writes logs, summaries, plots and configs), a
barrier (`barrier`), the gather of host objects such as trajectories (`allgather_objects`), this
host's block of a list (`local_block`), and the process-local mesh the rollout sampler runs on
with the parameters copied onto it (`local_mesh`, `params_to_local`).
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import jax
import numpy as np

T = TypeVar("T")

ENV_COORDINATOR = "ORCHESTRA_COORDINATOR"
ENV_NUM_PROCESSES = "ORCHESTRA_NUM_PROCESSES"
ENV_PROCESS_ID = "ORCHESTRA_PROCESS_ID"
_JAX_NAMES = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


class PlacementError(ValueError):
    """The coordinator settings are incomplete or malformed (the message names the input)."""


@dataclasses.dataclass(frozen=True)
class ProcessPlace:
    """This process's place in a multi-process run. `coordinator` None with
    `num_processes` None: let JAX discover the cluster (a TPU pod slice)."""

    coordinator: str | None
    num_processes: int | None
    process_id: int | None
    source: str  # where the settings came from, for messages

    @staticmethod
    def from_environment(
        coordinator: str | None = None,
        num_processes: int | None = None,
        process_id: int | None = None,
        environ: Mapping[str, str] | None = None,
        tpu_vm: bool | None = None,
    ) -> ProcessPlace | None:
        """The place from flags, then the environment (module docstring); None for a
        single-process run. PlacementError when a source gives some settings but not all."""
        env = os.environ if environ is None else environ
        sources = [
            ("--coordinator/--num_processes/--process_id", (coordinator, num_processes,
                                                            process_id)),
            (f"{ENV_COORDINATOR}/{ENV_NUM_PROCESSES}/{ENV_PROCESS_ID}",
             (env.get(ENV_COORDINATOR), env.get(ENV_NUM_PROCESSES), env.get(ENV_PROCESS_ID))),
            ("/".join(_JAX_NAMES), tuple(env.get(n) for n in _JAX_NAMES)),
        ]
        for source, values in sources:
            given = [v not in (None, "") for v in values]
            if not any(given):
                continue
            if not all(given):
                names = source.split("/")
                missing = [n for n, g in zip(names, given, strict=True) if not g]
                raise PlacementError(f"multi-process settings from {source}: {missing} "
                                     "not given (all three or none)")
            return _checked_place(source, *values)
        hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
        if len(hosts) > 1:
            return ProcessPlace(None, None, None, "the TPU pod slice (TPU_WORKER_HOSTNAMES)")
        if on_cloud_tpu_vm() if tpu_vm is None else tpu_vm:
            return ProcessPlace(None, None, None, "the Cloud TPU VM's metadata")
        return None


def on_cloud_tpu_vm() -> bool:
    """Whether this host has TPU chips attached (a Cloud TPU VM or a TPU node pool)."""
    import glob

    return bool(glob.glob("/dev/accel[0-9]*") or glob.glob("/dev/vfio/[0-9]*"))


def _checked_place(source: str, coordinator: Any, num_processes: Any,
                   process_id: Any) -> ProcessPlace | None:
    try:
        n, i = int(num_processes), int(process_id)
    except (TypeError, ValueError):
        raise PlacementError(f"multi-process settings from {source}: num_processes "
                             f"{num_processes!r} and process_id {process_id!r} must be "
                             "integers") from None
    if n < 1 or not 0 <= i < n:
        raise PlacementError(f"multi-process settings from {source}: need num_processes >= 1 "
                             f"and 0 <= process_id < num_processes, got {n} and {i}")
    address = str(coordinator)
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise PlacementError(f"multi-process settings from {source}: coordinator {address!r} "
                             "must be HOST:PORT")
    if n == 1:
        return None
    return ProcessPlace(address, n, i, source)


def initialize(place: ProcessPlace | None, *, timeout_s: int = 300) -> None:
    """Join the multi-process run `place` describes (no-op for None or when joined already).

    Must run before anything touches a jax backend. On CPU hosts the collectives use gloo."""
    if place is None or jax.distributed.is_initialized():
        return
    # Needed wherever the CPU backend carries collectives; harmless where it is unused.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if place.coordinator is None:
        jax.distributed.initialize(initialization_timeout=timeout_s)
    else:
        jax.distributed.initialize(place.coordinator, place.num_processes, place.process_id,
                                   initialization_timeout=timeout_s)


def process_count() -> int:
    return jax.process_count()


def is_primary() -> bool:
    """Process 0: the one that writes logs, summaries, plots and configs."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier `name` (no-op with one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def allgather_objects(value: Any) -> list[Any]:
    """`value` of every process, in process order (pickled through the devices' collectives;
    one process: `[value]`). Every process must call it, in the same order."""
    if jax.process_count() == 1:
        return [value]
    from jax.experimental import multihost_utils

    payload = np.frombuffer(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL), np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.array([payload.size], np.int64)))
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[: payload.size] = payload
    gathered = np.asarray(multihost_utils.process_allgather(padded))
    return [pickle.loads(gathered[p, : int(sizes[p, 0])].tobytes())
            for p in range(gathered.shape[0])]


def local_block(n: int, index: int | None = None, count: int | None = None) -> range:
    """The contiguous block of `range(n)` that process `index` of `count` owns (defaults:
    this process). Blocks differ in size by at most one; a process may own none."""
    index = jax.process_index() if index is None else index
    count = jax.process_count() if count is None else count
    base, extra = divmod(n, count)
    start = index * base + min(index, extra)
    return range(start, start + base + (1 if index < extra else 0))


def local_mesh(mesh: jax.sharding.Mesh) -> jax.sharding.Mesh:
    """The mesh of this process's own devices with `mesh`'s axis names: `mesh` itself when
    it holds only local devices; else the local devices on `fsdp`, `tensor` kept as it is
    (a tensor-parallel group lives inside one host)."""
    local = jax.local_devices()
    if all(d.process_index == jax.process_index() for d in mesh.devices.flat):
        return mesh
    from orchestra_jax.sharding.mesh import make_mesh

    tensor = int(mesh.shape["tensor"])
    if len(local) % tensor:
        raise ValueError(f"mesh axis 'tensor' is {tensor}, which does not divide this host's "
                         f"{len(local)} devices: a tensor-parallel group must fit in one host")
    return make_mesh((1, len(local) // tensor, tensor), devices=local)


def gather_to_host(tree: Any) -> Any:
    """`tree` with arrays sharded over several processes gathered whole to every process (as
    numpy; a collective, every process calls it); a tree on this process alone unchanged."""
    if all(getattr(x, "is_fully_addressable", True) for x in jax.tree.leaves(tree)):
        return tree
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


def params_to_local(params: Any, mesh: jax.sharding.Mesh) -> Any:
    """`params` (arrays on a mesh that spans processes) gathered whole to every process and
    laid out on this process's `mesh` with the same partition specs. Returns `params` as
    they are when they already live on this process alone."""
    if all(getattr(x, "is_fully_addressable", True) for x in jax.tree.leaves(params)):
        return params
    gathered = gather_to_host(params)

    def place(host: np.ndarray, like: jax.Array) -> jax.Array:
        spec = getattr(like.sharding, "spec", jax.P())
        return jax.device_put(host, jax.NamedSharding(mesh, spec))

    return jax.tree.map(place, gathered, params)


def primary_first(name: str, build: Callable[[], T]) -> T:
    """`build()` on process 0, then on the others once it is done: files it writes into a
    shared directory (a vocabulary, a cache) are built once and read by the rest."""
    if jax.process_count() == 1:
        return build()
    if is_primary():
        out = build()
        barrier(f"{name}:built")
        return out
    barrier(f"{name}:built")
    return build()


__all__ = ["ENV_COORDINATOR", "ENV_NUM_PROCESSES", "ENV_PROCESS_ID", "PlacementError",
           "ProcessPlace", "allgather_objects", "barrier", "gather_to_host", "initialize",
           "is_primary", "local_block", "local_mesh", "params_to_local", "primary_first",
           "process_count"]
