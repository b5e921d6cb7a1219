"""The acceptance of exact resume: 6 steps straight == 3 steps, SIGKILL, resume, 3 more --
identical params and identical per-step metrics; and SIGTERM mid-run saves and exits 0.

The killed run is a real `orchestra train` process, SIGKILLed by a watcher thread as soon as
its step-3 checkpoint is finalized (while the straight run trains in this process, so the two
share the CPU time). An entropy bonus makes every step move the parameters, so a resume that
lost the optimizer state, the rng, the pipeline position or a step's sampling seed would show.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np

from orchestra_jax.cli import main
from orchestra_jax.train.checkpoint import CheckpointManager
from orchestra_jax.train.loop import TIMING_TAGS

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "experiments" / "toy_target_call.py"
SMALL = [
    "--config.rollout.prompts_per_step=2",
    "--config.rollout.group_size=4",
    "--config.rollout.max_batch_size=8",
    "--config.data.max_tasks=3",  # 3 tasks in batches of 2: batches cross epoch boundaries
    "--config.train.mini_batch_size=4",
    "--config.loss.entropy_coef=0.05",
    "--config.optimizer.lr=0.05",
]


def _command(workdir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "orchestra_jax.cli", "train", "--config", str(RECIPE),
            "--workdir", str(workdir), *SMALL, *extra]


def _final(workdir: Path) -> tuple[list, list[dict]]:
    with CheckpointManager(workdir / "checkpoints") as manager:
        state, _, extra = manager.restore()
    return [np.asarray(x) for x in jax.tree.leaves(state["params"])], extra["history"]


def _deterministic(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k not in TIMING_TAGS} for h in history]


def _kill_after_checkpoint(proc: subprocess.Popen, path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if path.is_dir():
            proc.send_signal(signal.SIGKILL)
            return
        time.sleep(0.01)


def test_six_steps_straight_equal_three_killed_then_resumed(tmp_path):
    killed = tmp_path / "killed"
    log = (tmp_path / "killed.log").open("wb")
    proc = subprocess.Popen(_command(killed, "--config.train.steps=6",
                                     "--config.train.checkpoint_every=3"),
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=log)
    watcher = threading.Thread(target=_kill_after_checkpoint,
                               args=(proc, killed / "checkpoints" / "3", 240))
    watcher.start()

    straight = tmp_path / "straight"
    assert main(["train", "--config", str(RECIPE), "--workdir", str(straight), *SMALL,
                 "--config.train.steps=6", "--config.train.checkpoint_every=6"]) == 0
    watcher.join()
    proc.wait(timeout=60)
    log.close()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-2000:]
    with CheckpointManager(killed / "checkpoints") as manager:
        assert manager.latest_step() == 3  # killed after step 3's save, before step 6's

    assert main(["train", "--config", str(RECIPE), "--workdir", str(killed), *SMALL,
                 "--config.train.steps=6", "--config.train.checkpoint_every=3"]) == 0
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["step"] == 6

    params_straight, history_straight = _final(straight)
    params_resumed, history_resumed = _final(killed)
    assert [h["step"] for h in history_resumed] == [1, 2, 3, 4, 5, 6]
    assert _deterministic(history_resumed) == _deterministic(history_straight)
    assert len(params_straight) == len(params_resumed)
    for a, b in zip(params_straight, params_resumed, strict=True):
        np.testing.assert_array_equal(a, b)
    # The parameters did move between step 3 and step 6 (the comparison is not vacuous).
    assert history_straight[4]["train/grad_norm"] > 0


def test_sigterm_mid_run_saves_and_exits_zero(tmp_path):
    workdir = tmp_path / "run"
    proc = subprocess.Popen(_command(workdir, "--config.train.steps=1000",
                                     "--config.train.checkpoint_every=0"),
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        # The progress line prints its first line after step 1 (off a TTY).
        for raw in proc.stderr:
            if re.match(r"step +1/1000 ", raw.decode(errors="replace")):
                break
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr.decode()[-2000:]
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["preempted"] is True
    assert 1 <= summary["step"] < 1000
    assert summary["checkpoint_step"] == summary["step"]  # saved although checkpoint_every=0
    with CheckpointManager(workdir / "checkpoints") as manager:
        _, _, extra = manager.restore(summary["step"])
    assert len(extra["history"]) == summary["step"]
    assert json.loads(stdout.decode().strip().splitlines()[-1])["preempted"] is True


def test_a_damaged_latest_checkpoint_falls_back_to_the_one_before_and_resumes_exactly(
        tmp_path, capsys):
    """Truncating every file of the newest checkpoint (a disk filled mid-write, say) no longer
    stops the run: it resumes from the newest checkpoint that restores, says so, keeps the
    damaged one aside, and ends where a run that was never damaged ends."""
    damaged = tmp_path / "damaged"
    keep = ["--config.train.checkpoint_every=1", "--config.train.keep_checkpoints=3"]
    assert main(["train", "--config", str(RECIPE), "--workdir", str(damaged), *SMALL, *keep,
                 "--config.train.steps=2"]) == 0
    for path in (damaged / "checkpoints" / "2").rglob("*"):
        if path.is_file():
            with open(path, "r+b") as handle:
                handle.truncate(path.stat().st_size // 2)
    capsys.readouterr()
    assert main(["train", "--config", str(RECIPE), "--workdir", str(damaged), *SMALL, *keep,
                 "--config.train.steps=3"]) == 0
    err = capsys.readouterr().err
    assert "step 2" in err and "damaged" in err and "resumed from step 1" in err
    assert "Traceback" not in err and "Event loop is closed" not in err
    assert (damaged / "checkpoints" / "damaged-2").is_dir()

    straight = tmp_path / "straight"
    assert main(["train", "--config", str(RECIPE), "--workdir", str(straight), *SMALL, *keep,
                 "--config.train.steps=3"]) == 0
    params, history = _final(damaged)
    want_params, want_history = _final(straight)
    assert _deterministic(history) == _deterministic(want_history)
    for got, want in zip(params, want_params, strict=True):
        np.testing.assert_array_equal(got, want)
