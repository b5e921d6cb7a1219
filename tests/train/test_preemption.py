"""SIGTERM handling: the guard turns the signal into a flag, and a loop that checks it saves
its exact state and exits 0 (tested on a real subprocess)."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from orchestra_jax.train.preemption import PreemptionGuard

REPO = Path(__file__).resolve().parents[2]


def test_sigterm_sets_the_flag_instead_of_killing():
    with PreemptionGuard() as guard:
        assert not guard.should_stop
        os.kill(os.getpid(), signal.SIGTERM)
        assert guard.should_stop
        assert guard.received == signal.SIGTERM


def test_previous_handlers_are_restored_on_exit():
    seen = []
    previous_term = signal.signal(signal.SIGTERM, lambda s, f: seen.append(s))
    previous_int = signal.getsignal(signal.SIGINT)
    try:
        with PreemptionGuard(handle_sigint=True):
            assert signal.getsignal(signal.SIGTERM) not in (previous_term, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        assert seen == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGINT) is previous_int
    finally:
        signal.signal(signal.SIGTERM, previous_term)


def test_sigint_is_handled_only_when_asked_and_a_second_one_forces_out():
    with PreemptionGuard() as guard:
        assert signal.getsignal(signal.SIGINT) is not guard._handle
    with PreemptionGuard(handle_sigint=True) as guard:
        os.kill(os.getpid(), signal.SIGINT)
        assert guard.should_stop and guard.received == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)


def test_request_stop_sets_the_flag():
    with PreemptionGuard() as guard:
        guard.request_stop()
        assert guard.should_stop


def test_entering_off_the_main_thread_is_a_clear_error():
    errors = []

    def enter():
        try:
            with PreemptionGuard():
                pass
        except RuntimeError as exc:
            errors.append(str(exc))

    thread = threading.Thread(target=enter)
    thread.start()
    thread.join()
    assert errors and "main thread" in errors[0]


LOOP = textwrap.dedent(
    '''
    import sys
    import time

    import jax.numpy as jnp

    from orchestra_jax.data import task_pipeline
    from orchestra_jax.train.checkpoint import CheckpointManager
    from orchestra_jax.train.preemption import PreemptionGuard

    manager = CheckpointManager(sys.argv[1], save_every=1000)
    it = task_pipeline(list(range(10)), seed=3, prompts_per_step=2)
    state = {"total": jnp.zeros((), jnp.int32), "step": jnp.int32(0)}
    with PreemptionGuard() as guard:
        step = 0
        while step < 10_000:
            step += 1
            batch = next(it)
            state = {"total": state["total"] + sum(batch), "step": jnp.int32(step)}
            print(f"STEP {step}", flush=True)
            time.sleep(0.05)
            if guard.should_stop:
                manager.save(step, state, it.get_state(), {"stopped_by": guard.received.name},
                             force=True)
                manager.close()
                print(f"SAVED {step}", flush=True)
                sys.exit(0)
    sys.exit(3)  # never preempted: the test failed to deliver the signal
    '''
)


def test_sigterm_mid_loop_saves_the_current_step_and_exits_zero(tmp_path):
    from orchestra_jax.data import task_pipeline
    from orchestra_jax.train.checkpoint import CheckpointManager

    script = tmp_path / "loop.py"
    script.write_text(LOOP)
    ckpt = tmp_path / "ckpt"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(ckpt)],
        cwd=REPO, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in proc.stdout:
            if line.strip() == "STEP 3":
                proc.send_signal(signal.SIGTERM)
                break
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    saved_step = int(out.strip().splitlines()[-1].removeprefix("SAVED "))
    assert saved_step >= 3

    with CheckpointManager(ckpt) as manager:
        # Step 1 is orbax's baseline save of a fresh run; the preemption save is the latest.
        assert manager.latest_step() == saved_step
        state, data_state, extra = manager.restore()
    reference = task_pipeline(list(range(10)), seed=3, prompts_per_step=2)
    expected_total = sum(sum(next(reference)) for _ in range(saved_step))
    assert int(state["total"]) == expected_total
    assert int(state["step"]) == saved_step
    assert data_state == reference.get_state()
    assert extra == {"stopped_by": "SIGTERM"}
