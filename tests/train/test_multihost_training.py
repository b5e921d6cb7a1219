"""Multi-process training on one CPU: `launch/local.sh` with 2 processes x 4 fake devices
trains exactly like 1 process with 8, writes once, and resumes with another process count.

Each run is a real `orchestra train` subprocess (the processes meet through JAX's coordinator
on 127.0.0.1 and reduce through gloo). The toy recipe is cut to 3 steps of 4 x 4 episodes;
an entropy bonus makes every update move the parameters (the random policy rarely calls the
target in 16 episodes, so the outcome alone would leave the loss at 0 and prove nothing).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from orchestra_jax.train.loop import TIMING_TAGS

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "experiments" / "toy_target_call.py"
SMALL = ["--config.mesh.shape=(1,-1,1)", "--config.rollout.prompts_per_step=4",
         "--config.rollout.group_size=4", "--config.rollout.max_batch_size=16",
         "--config.train.mini_batch_size=16", "--config.loss.entropy_coef=0.01",
         "--config.eval.final=False", "--config.train.checkpoint_every=0"]


def _orchestra(workdir: Path, steps: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "orchestra_jax.cli", "train", "--config", str(RECIPE),
            "--workdir", str(workdir), f"--config.train.steps={steps}", *SMALL, *extra]


def _env(devices: int | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRA_")}
    env["JAX_PLATFORMS"] = "cpu"
    if devices is not None:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def _run(command: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def _local(processes: int, devices: int, command: list[str], cwd: Path
           ) -> subprocess.CompletedProcess:
    return _run(["bash", str(ROOT / "launch" / "local.sh"), "--processes", str(processes),
                 "--devices-per-process", str(devices), "--", *command], _env(), cwd)


def _scalars(workdir: Path) -> dict[str, dict[int, float]]:
    events = EventAccumulator(str(workdir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: {e.step: e.value for e in events.Scalars(tag)}
            for tag in events.Tags()["scalars"] if tag not in TIMING_TAGS
            and not tag.startswith("time/")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One run of 1 process x 8 devices and one of 2 processes x 4 devices, 3 steps each."""
    base = tmp_path_factory.mktemp("multihost")
    one, two = base / "one", base / "two"
    _run(_orchestra(one, 3), _env(8), base)
    done = _local(2, 4, _orchestra(two, 3), base)
    return {"one": one, "two": two, "cwd": base, "two_stdout": done.stdout}


def test_two_processes_give_the_per_step_numbers_of_one(runs: dict[str, Path]) -> None:
    one, two = _scalars(runs["one"]), _scalars(runs["two"])
    assert set(one) == set(two)
    for tag in ("train/loss", "train/reward", "train/entropy", "train/grad_norm"):
        assert sorted(one[tag]) == [1, 2, 3], tag
    assert any(abs(v) > 1e-3 for v in one["train/loss"].values())  # the updates did move
    for tag in one:
        for step, value in one[tag].items():
            assert two[tag][step] == pytest.approx(value, abs=1e-5), (tag, step)


def test_two_processes_write_one_set_of_files(runs: dict[str, Path]) -> None:
    two = runs["two"]
    assert len(list((two / "tensorboard").glob("*tfevents*"))) == 1
    steps = sorted(p.name for p in (two / "checkpoints").iterdir())
    assert steps == ["3"]
    summary = json.loads((two / "summary.json").read_text())
    assert summary["step"] == 3 and summary["checkpoint_step"] == 3
    assert json.loads((two / "config.json").read_text())["train"]["steps"] == 3
    # one process prints the result line
    assert runs["two_stdout"].count('"total_steps"') == 1


def test_the_checkpoints_of_one_and_two_processes_hold_the_same_params(
        runs: dict[str, Path]) -> None:
    import jax
    import orbax.checkpoint as ocp

    def params(workdir: Path) -> list[np.ndarray]:
        path = workdir / "checkpoints" / "3" / "state"
        checkpointer = ocp.PyTreeCheckpointer()
        tree = checkpointer.metadata(path).item_metadata.tree
        as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        state = checkpointer.restore(path, restore_args=as_numpy)
        return [np.asarray(x) for x in jax.tree.leaves(state["params"])]

    a, b = params(runs["one"]), params(runs["two"])
    assert len(a) == len(b) and a
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-5, rtol=0)


def test_a_run_of_two_processes_resumes_in_one(runs: dict[str, Path]) -> None:
    two = runs["two"]
    _run(_orchestra(two, 4), _env(8), runs["cwd"])
    summary = json.loads((two / "summary.json").read_text())
    assert summary["step"] == 4 and summary["checkpoint_step"] == 4
    assert sorted(_scalars(two)["train/loss"]) == [1, 2, 3, 4]


@pytest.mark.slow
def test_a_run_of_one_process_resumes_in_two(runs: dict[str, Path]) -> None:
    one = runs["one"]
    _local(2, 4, _orchestra(one, 4), runs["cwd"])
    summary = json.loads((one / "summary.json").read_text())
    assert summary["step"] == 4 and summary["checkpoint_step"] == 4


def test_a_copy_that_dies_stops_the_others(tmp_path: Path) -> None:
    script = ("if [ \"$ORCHESTRA_PROCESS_ID\" = 1 ]; then exit 7; fi; sleep 120")
    done = subprocess.run(["bash", str(ROOT / "launch" / "local.sh"), "--processes", "3",
                           "--", "bash", "-c", script], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert done.returncode == 7
    assert "process 1 of 3 exited with status 7" in done.stderr


def test_a_process_of_a_run_that_cannot_start_fails_with_a_message(tmp_path: Path) -> None:
    env = _env()
    env.update(ORCHESTRA_COORDINATOR="127.0.0.1:1", ORCHESTRA_NUM_PROCESSES="2")
    done = subprocess.run(_orchestra(tmp_path / "run", 1), env=env, capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 2
    assert "ORCHESTRA_PROCESS_ID" in done.stderr
