"""Orbax checkpoints: exact round trip of sharded state, data state and extras; pruning;
clear errors; and survival of a SIGKILL (in a subprocess) with exact restore."""

import os
import re
import runpy
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from orchestra_jax.sharding import make_mesh
from orchestra_jax.train.checkpoint import CheckpointError, CheckpointManager, abstract_like

REPO = Path(__file__).resolve().parents[2]


def _sharded_state(mesh):
    """Params, optimizer moments, step and rng key data spread over the mesh in several ways."""
    key = jax.random.key(42)
    k1, k2, k3 = jax.random.split(key, 3)
    place = lambda x, spec: jax.device_put(x, NamedSharding(mesh, spec))  # noqa: E731
    w = place(jax.random.normal(k1, (16, 8), jnp.float32), P("fsdp", "tensor"))
    emb = place(jax.random.normal(k2, (8, 12)).astype(jnp.bfloat16), P("tensor", None))
    bias = place(jax.random.normal(k3, (4,)), P())
    return {
        "params": {"w": w, "emb": emb, "bias": bias},
        "opt_state": {"mu": {"w": w * 0.5, "emb": emb * 2}, "count": place(jnp.int32(7), P())},
        "step": place(jnp.int32(3), P()),
        "rng": place(jax.random.key_data(jax.random.key(9)), P()),
    }


def _assert_bit_identical(restored, original):
    leaves_r, tree_r = jax.tree.flatten(restored)
    leaves_o, tree_o = jax.tree.flatten(original)
    assert tree_r == tree_o
    for r, o in zip(leaves_r, leaves_o, strict=True):
        assert r.dtype == o.dtype and r.shape == o.shape
        assert r.sharding == o.sharding, (r.sharding, o.sharding)
        as_bytes = lambda a: np.asarray(a).reshape(-1).view(np.uint8)  # noqa: E731
        np.testing.assert_array_equal(as_bytes(r), as_bytes(o))


def test_sharded_state_data_and_extra_round_trip_bit_identical(tmp_path):
    mesh = make_mesh((1, 4, 2))
    state = _sharded_state(mesh)
    data_state = {"next_index": np.int64(5)}
    extra = {"config": {"rl": {"group_size": 8}}, "metrics": [{"step": 3, "reward": 0.25}]}
    with CheckpointManager(tmp_path / "ckpt", keep=3) as manager:
        assert manager.latest_step() is None
        assert manager.save(3, state, data_state, extra)
        manager.wait_until_finished()
        assert manager.latest_step() == 3
        restored, restored_data, restored_extra = manager.restore(
            abstract_state=abstract_like(state)
        )
    _assert_bit_identical(restored, state)
    assert restored_data == {"next_index": 5}
    assert restored_extra == extra


def test_restore_onto_a_different_sharding_moves_the_arrays(tmp_path):
    mesh = make_mesh((1, 4, 2))
    state = _sharded_state(mesh)
    replicated = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(mesh, P())),
        state,
    )
    with CheckpointManager(tmp_path, async_save=False) as manager:
        manager.save(1, state, {"next_index": 1})
        restored, _, _ = manager.restore(1, abstract_state=replicated)
    assert restored["params"]["w"].sharding == NamedSharding(mesh, P())
    np.testing.assert_array_equal(restored["params"]["w"], state["params"]["w"])


def test_keep_prunes_to_the_newest_n_steps(tmp_path):
    state = {"x": jnp.arange(4.0)}
    with CheckpointManager(tmp_path, keep=2) as manager:
        for step in range(1, 6):
            manager.save(step, {"x": state["x"] + step}, {"next_index": step})
        manager.wait_until_finished()
        assert manager.all_steps() == [4, 5]
        assert manager.latest_step() == 5
        restored, data, _ = manager.restore(4, abstract_state=abstract_like(state))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["4", "5"]
    np.testing.assert_array_equal(restored["x"], np.arange(4.0) + 4)
    assert data == {"next_index": 4}


def test_save_every_skips_steps_unless_forced(tmp_path):
    with CheckpointManager(tmp_path, keep=10, save_every=3, async_save=False) as manager:
        saved = [manager.save(s, {"x": jnp.zeros(2)}, {"next_index": s}) for s in range(1, 7)]
        assert manager.save(7, {"x": jnp.zeros(2)}, {"next_index": 7}, force=True)
        # orbax's default policy: the first save of an empty directory, then multiples of
        # the interval.
        assert saved == [True, False, True, False, False, True]
        assert manager.all_steps() == [1, 3, 6, 7]


def test_a_new_manager_sees_the_steps_of_an_earlier_one(tmp_path):
    with CheckpointManager(tmp_path) as manager:
        manager.save(2, {"x": jnp.ones(3)}, {"next_index": 2}, {"note": "a"})
    with CheckpointManager(tmp_path) as reopened:
        assert reopened.latest_step() == 2
        _, data, extra = reopened.restore()
    assert data == {"next_index": 2} and extra == {"note": "a"}


def test_empty_directory_restore_names_the_directory(tmp_path):
    with CheckpointManager(tmp_path / "nothing-here") as manager:
        with pytest.raises(CheckpointError, match=r"no checkpoint found in .*nothing-here"):
            manager.restore()
        with pytest.raises(CheckpointError, match="step 4"):
            manager.restore(4)


def test_a_file_in_place_of_the_directory_is_a_clear_error(tmp_path):
    path = tmp_path / "not-a-dir"
    path.write_text("x")
    with pytest.raises(CheckpointError, match="not-a-dir is not a directory"):
        CheckpointManager(path)


def test_a_damaged_step_is_a_clear_error_naming_it(tmp_path):
    state = {"x": jnp.ones(3)}
    with CheckpointManager(tmp_path, async_save=False) as manager:
        manager.save(1, state, {"next_index": 1})
        for path in (tmp_path / "1" / "state").rglob("*"):
            if path.is_file():
                path.write_bytes(b"garbage")
        with pytest.raises(CheckpointError, match=r"cannot restore step 1 from .*1"):
            manager.restore(1, abstract_state=abstract_like(state))


def test_non_json_extra_fails_at_save_naming_the_field(tmp_path):
    with CheckpointManager(tmp_path) as manager:
        with pytest.raises(CheckpointError, match=r"extra\.cfg is not JSON-serializable"):
            manager.save(1, {"x": jnp.ones(1)}, {"next_index": 1}, {"cfg": object()})
        with pytest.raises(CheckpointError, match="step must be"):
            manager.save(-1, {"x": jnp.ones(1)}, {"next_index": 1})
        manager.wait_until_finished()
        assert manager.latest_step() is None



# --- restore_latest: a damaged newest step falls back to the newest one that restores ---


def _many_leaves(step):
    """Enough arrays (40, two dtypes) that orbax opens many of them concurrently on restore."""
    return {
        f"layer{i}": {
            "w": jnp.full((8, 4), float(step * 100 + i), jnp.float32),
            "b": jnp.full((4,), float(step + i), jnp.bfloat16),
        }
        for i in range(20)
    }


def _save_steps(directory, steps):
    with CheckpointManager(directory, keep=5) as manager:
        for step in steps:
            manager.save(step, _many_leaves(step), {"next_index": step}, {"step": step})


@pytest.fixture
def event_loop_errors(monkeypatch, capfd):
    """Collects "Event loop is closed" errors however they surface: TensorStore hands an
    error it cannot deliver to `sys.unraisablehook` (pytest's own turns it into a warning,
    the default prints it to stderr), so both the hook and fd 2 are watched."""
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda info: seen.append(repr(info.exc_value)))

    def collect():
        time.sleep(0.2)  # operations orphaned by a failed restore report within milliseconds
        return [text for text in [*seen, capfd.readouterr().err] if "Event loop is closed" in text]

    return collect


def _truncate(directory, *, to_zero=False):
    files = [path for path in Path(directory).rglob("*") if path.is_file()]
    assert files
    for path in files:
        with path.open("r+b") as handle:
            handle.truncate(0 if to_zero else path.stat().st_size // 2)


def test_restore_latest_moves_a_truncated_newest_step_aside_and_restores_the_previous(
    tmp_path, event_loop_errors
):
    _save_steps(tmp_path, [1, 2, 3])
    _truncate(tmp_path / "3")
    lines = []
    with CheckpointManager(tmp_path, keep=5) as manager:
        step, state, data_state, extra = manager.restore_latest(
            abstract_like(_many_leaves(0)), log=lines.append
        )
        assert step == 2 and data_state == {"next_index": 2} and extra == {"step": 2}
        _assert_bit_identical(state, _many_leaves(2))
        assert manager.all_steps() == [1, 2] and manager.latest_step() == 2
        assert not (tmp_path / "3").exists()
        assert (tmp_path / "damaged-3" / "state").is_dir()  # moved, not deleted
        assert len(lines) == 1
        assert re.search(r"step 3 .*damaged \(.+\); moved it to .*damaged-3; restored step 2",
                         lines[0]), lines[0]
        # orbax's manager forgot step 3: the next save and its restore work.
        assert manager.save(4, _many_leaves(4), {"next_index": 4}, {"step": 4}, force=True)
        manager.wait_until_finished()
        assert manager.all_steps() == [1, 2, 4]
    with CheckpointManager(tmp_path, keep=5) as reopened:
        step, state, data_state, _ = reopened.restore_latest(abstract_like(_many_leaves(0)))
    assert step == 4 and data_state == {"next_index": 4}
    _assert_bit_identical(state, _many_leaves(4))
    assert event_loop_errors() == []


def test_restore_latest_checks_array_files_before_orbax_so_no_event_loop_tracebacks(
    tmp_path, event_loop_errors
):
    # Only the arrays' storage is cut (JSON metadata intact) and the target is None: handed
    # such a step, orbax fails in the middle of its concurrent opens and now and then leaves
    # TensorStore operations behind that report "Event loop is closed" (a race, so the damage
    # is repeated a few times; each casualty of step 3 is kept under its own name).
    ckpt = tmp_path / "ckpt"
    _save_steps(ckpt, [1, 2, 3])
    shutil.copytree(ckpt / "3", tmp_path / "pristine-3")
    with CheckpointManager(ckpt, keep=5) as manager:
        for round_ in range(4):
            if round_:
                shutil.copytree(tmp_path / "pristine-3", ckpt / "3")
                manager.wait_until_finished()
            _truncate(ckpt / "3" / "state" / "d", to_zero=True)
            lines = []
            step, state, _, _ = manager.restore_latest(None, log=lines.append)
            assert step == 2
            aside = "damaged-3" + (f".{round_}" if round_ else "")
            assert f"{aside}; restored step 2" in lines[0] and "OUT_OF_RANGE" in lines[0], lines
    np.testing.assert_array_equal(state["layer7"]["w"], _many_leaves(2)["layer7"]["w"])
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "1", "2", "damaged-3", "damaged-3.1", "damaged-3.2", "damaged-3.3"
    ]
    assert event_loop_errors() == []


def test_restore_latest_falls_back_over_several_damaged_steps(tmp_path):
    _save_steps(tmp_path, [1, 2, 3])
    _truncate(tmp_path / "3", to_zero=True)
    shutil.rmtree(tmp_path / "2" / "data")
    lines = []
    with CheckpointManager(tmp_path, keep=5) as manager:
        step, _, data_state, _ = manager.restore_latest(
            abstract_like(_many_leaves(0)), log=lines.append
        )
        assert manager.all_steps() == [1]
    assert step == 1 and data_state == {"next_index": 1}
    assert [line.split(" in ")[0] for line in lines] == ["checkpoint step 3", "checkpoint step 2"]
    assert all(line.endswith("restored step 1 instead") for line in lines)


def test_restore_latest_when_every_step_is_damaged_names_them_and_moves_nothing(
    tmp_path, event_loop_errors
):
    _save_steps(tmp_path, [1, 2, 3])
    for step in (1, 2, 3):
        _truncate(tmp_path / str(step))
    with CheckpointManager(tmp_path, keep=5) as manager:
        with pytest.raises(
            CheckpointError,
            match=rf"no checkpoint in {re.escape(str(tmp_path))} restores .*"
            r"step 3: .*step 2: .*step 1: .*nothing was moved",
        ):
            manager.restore_latest(abstract_like(_many_leaves(0)))
        assert manager.all_steps() == [1, 2, 3]
    assert event_loop_errors() == []


def test_restore_latest_with_a_target_that_fits_no_step_moves_nothing(tmp_path):
    # Whole files but a wrong target (e.g. a changed config): not damage, so nothing may be
    # set aside -- otherwise the next run would find no checkpoint and start from scratch.
    _save_steps(tmp_path, [1, 2])
    wrong = abstract_like({"layer0": {"w": jnp.zeros((3, 3))}})
    with CheckpointManager(tmp_path, keep=5) as manager:
        with pytest.raises(CheckpointError, match=r"step 2: .*step 1: "):
            manager.restore_latest(wrong)
        assert manager.all_steps() == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2"]


def test_restore_latest_without_a_checkpoint_is_none(tmp_path):
    with CheckpointManager(tmp_path / "fresh") as manager:
        assert manager.restore_latest(abstract_like(_many_leaves(0))) is None

# A miniature training run: a sharded state updated from the grain batches and the rng, saved
# every step. Imported by the test (runpy) for the reference run and executed as a subprocess
# that dies by SIGKILL.
SCRIPT = textwrap.dedent(
    '''
    import os
    import signal
    import sys

    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P

    from orchestra_jax.data import task_pipeline
    from orchestra_jax.sharding import make_mesh
    from orchestra_jax.train.checkpoint import CheckpointManager

    TASKS = list(range(13))


    def pipeline():
        return task_pipeline(TASKS, seed=11, prompts_per_step=4)


    def initial_state():
        mesh = make_mesh((1, 4, 2))
        w = jax.device_put(jnp.zeros((8, 4)), NamedSharding(mesh, P("fsdp", "tensor")))
        rng = jax.device_put(jax.random.key_data(jax.random.key(0)), NamedSharding(mesh, P()))
        return {"w": w, "step": jnp.int32(0), "rng": rng}


    @jax.jit
    def _update(state, ids):
        key, sub = jax.random.split(jax.random.wrap_key_data(state["rng"]))
        noise = jax.random.normal(sub, state["w"].shape)
        w = state["w"] * 0.9 + noise * ids.sum()
        return {"w": w, "step": state["step"] + 1, "rng": jax.random.key_data(key)}


    def train_step(state, batch):
        return _update(state, jnp.asarray(batch, jnp.float32))


    def main(directory, mode):
        manager = CheckpointManager(directory, keep=3)
        it = pipeline()
        state = initial_state()
        for step in range(1, 100):
            state = train_step(state, next(it))
            if mode == "kill_mid_save" and step == 2:
                big = dict(state, big=jnp.ones((64, 1024, 1024), jnp.float32))
                manager.save(step, big, it.get_state())
                os.kill(os.getpid(), signal.SIGKILL)
            manager.save(step, state, it.get_state(), {"metrics": [float(state["w"].sum())]})
            if step == 3 or mode == "kill_mid_save":
                manager.wait_until_finished()
            if mode == "kill_after_3" and step == 3:
                # Step 4 is under way when the machine disappears.
                state = train_step(state, next(it))
                os.kill(os.getpid(), signal.SIGKILL)


    if __name__ == "__main__":
        main(sys.argv[1], sys.argv[2])
    '''
)


def _run_script(tmp_path, mode):
    script = tmp_path / "mini_run.py"
    script.write_text(SCRIPT)
    ckpt = tmp_path / "ckpt"
    proc = subprocess.run(
        [sys.executable, str(script), str(ckpt), mode],
        cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    return runpy.run_path(str(script), run_name="mini_run"), ckpt


def test_sigkill_after_step_3_restores_step_3_exactly_and_resumes_the_data(tmp_path):
    mini, ckpt = _run_script(tmp_path, "kill_after_3")
    reference_it = mini["pipeline"]()
    reference = mini["initial_state"]()
    for _ in range(3):
        reference = mini["train_step"](reference, next(reference_it))
    with CheckpointManager(ckpt) as manager:
        assert manager.latest_step() == 3
        state, data_state, extra = manager.restore(abstract_state=abstract_like(reference))
    _assert_bit_identical(state, reference)
    assert extra == {"metrics": [float(reference["w"].sum())]}
    resumed_it = mini["pipeline"]()
    resumed_it.set_state(data_state)
    assert [next(resumed_it) for _ in range(3)] == [next(reference_it) for _ in range(3)]


def test_sigkill_during_an_async_write_leaves_the_previous_step_latest(tmp_path):
    mini, ckpt = _run_script(tmp_path, "kill_mid_save")
    leftovers = sorted(p.name for p in ckpt.iterdir())
    # Step 2's 256 MiB write was cut off: only its temporary directory exists (this also
    # proves the kill landed mid-write), never a step directory named "2".
    assert "2" not in leftovers
    assert any(name.startswith("2.orbax-checkpoint-tmp") for name in leftovers), leftovers
    assert "1" in leftovers
    reference = mini["train_step"](mini["initial_state"](), next(mini["pipeline"]()))
    with CheckpointManager(ckpt) as manager:
        assert manager.all_steps() == [1]
        state, data_state, _ = manager.restore(abstract_state=abstract_like(reference))
    assert sorted(p.name for p in ckpt.iterdir()) == ["1"]  # the temporary one was cleaned up
    _assert_bit_identical(state, reference)
    assert data_state == {"next_index": 1}
