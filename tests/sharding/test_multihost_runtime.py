"""Where a process learns its place in a multi-process run, and the single-process defaults
of the helpers the loop uses (the multi-process behaviour runs for real in
tests/train/test_multihost_training.py)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from orchestra_jax.sharding import make_mesh
from orchestra_jax.sharding.multihost import (
    PlacementError,
    ProcessPlace,
    allgather_objects,
    local_block,
    local_mesh,
    params_to_local,
    primary_first,
)

ENV = {"ORCHESTRA_COORDINATOR": "10.0.0.1:8476", "ORCHESTRA_NUM_PROCESSES": "4",
       "ORCHESTRA_PROCESS_ID": "2"}


def test_flags_win_over_the_environment() -> None:
    place = ProcessPlace.from_environment("127.0.0.1:1234", 2, 1, environ=ENV, tpu_vm=False)
    assert (place.coordinator, place.num_processes, place.process_id) == ("127.0.0.1:1234", 2, 1)


def test_the_orchestra_variables_then_jax_s_own() -> None:
    place = ProcessPlace.from_environment(environ=ENV, tpu_vm=False)
    assert (place.coordinator, place.num_processes, place.process_id) == ("10.0.0.1:8476", 4, 2)
    jax_env = {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2",
               "JAX_PROCESS_ID": "0"}
    assert ProcessPlace.from_environment(environ=jax_env, tpu_vm=False).coordinator == "h:1"


def test_nothing_given_is_one_process_and_a_tpu_slice_is_discovered() -> None:
    assert ProcessPlace.from_environment(environ={}, tpu_vm=False) is None
    gke = ProcessPlace.from_environment(environ={"TPU_WORKER_HOSTNAMES": "a,b"}, tpu_vm=False)
    assert gke is not None and gke.coordinator is None and gke.num_processes is None
    vm = ProcessPlace.from_environment(environ={}, tpu_vm=True)
    assert vm is not None and "TPU VM" in vm.source


def test_one_process_needs_no_runtime() -> None:
    env = dict(ENV, ORCHESTRA_NUM_PROCESSES="1", ORCHESTRA_PROCESS_ID="0")
    assert ProcessPlace.from_environment(environ=env, tpu_vm=False) is None


@pytest.mark.parametrize(("change", "named"), [
    ({"ORCHESTRA_PROCESS_ID": None}, "ORCHESTRA_PROCESS_ID"),
    ({"ORCHESTRA_PROCESS_ID": "4"}, "process_id"),
    ({"ORCHESTRA_NUM_PROCESSES": "two"}, "'two'"),
    ({"ORCHESTRA_COORDINATOR": "10.0.0.1"}, "HOST:PORT"),
])
def test_incomplete_or_malformed_settings_name_the_input(change: dict, named: str) -> None:
    env = {k: v for k, v in {**ENV, **change}.items() if v is not None}
    with pytest.raises(PlacementError, match=named):
        ProcessPlace.from_environment(environ=env, tpu_vm=False)


def test_blocks_cover_the_list_once_in_order() -> None:
    for n in range(0, 11):
        for count in (1, 2, 3, 4):
            blocks = [local_block(n, i, count) for i in range(count)]
            assert [x for b in blocks for x in b] == list(range(n))
            assert max(len(b) for b in blocks) - min(len(b) for b in blocks) <= 1


def test_one_process_keeps_its_mesh_params_and_objects() -> None:
    mesh = make_mesh((1, -1, 1))
    assert local_mesh(mesh) is mesh
    params = {"w": jax.device_put(np.ones((8, 4), np.float32),
                                  jax.NamedSharding(mesh, jax.P("fsdp")))}
    assert params_to_local(params, mesh) is params
    assert allgather_objects({"a": 1}) == [{"a": 1}]
    assert primary_first("x", lambda: 7) == 7
