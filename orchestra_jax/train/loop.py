"""The RL training loop: tasks -> episodes -> rewards -> advantages -> filters -> updates.

`train(config, workdir)` drives one run that can be stopped and resumed exactly. One RL step:

1. the next batch of `rollout.prompts_per_step` tasks from the grain pipeline;
2. `group_size` episodes of each through the batcher and the jitted sampler, seeded from
   `train.seed` and the step, so the step's samples do not depend on how the run got there;
3. the ToolOrchestra reward, advantages, the sample filters (`rl.samples`);
4. `train.ppo_epochs` passes of mini-batch updates (`Run.learn`); the sampler then reads the
   new parameters;
5. metrics to TensorBoard under the documented tags and to the progress line; evaluation every
   `train.eval_every` steps; an Orbax checkpoint (train state, pipeline position and the
   per-step metrics history) every `train.checkpoint_every` steps and at the end;
6. a SIGTERM (preemption) is honoured at the step boundary: save, wait for the write, return.

The run's components come from `train.builders`, the warm start from `train.sft`, the
evaluations from `eval.runner`.

Why exact resume works: everything random is derived from `train.seed` and the step number
(initialisation, the pipeline's shuffles, each step's sampling seed, each epoch's mini-batch
order) or lives in the checkpoint (params, optimizer state, the update step's rng key, the
pipeline index). A resumed run restores those and replays nothing, so steps 4..6 after a kill
at step 3 are the same computation as steps 4..6 of a run that never stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
from etils import epath

from orchestra_jax.data.pipeline import PipelineError, task_pipeline
from orchestra_jax.eval.runner import final_evaluation, periodic_evaluation
from orchestra_jax.rl.samples import TrainingSamples, step_rewards, training_samples
from orchestra_jax.rl.train_state import ema_update
from orchestra_jax.rollout.episode import task_id_of
from orchestra_jax.rollout.statistics import (
    rollout_metrics,
    tool_usage_histogram,
    trajectory_markdown,
)
from orchestra_jax.rollout.trajectory import Trajectory
from orchestra_jax.sharding.multihost import allgather_objects, is_primary
from orchestra_jax.train.builders import build_run
from orchestra_jax.train.checkpoint import CheckpointError, CheckpointManager, abstract_like
from orchestra_jax.train.config import ConfigError, config_to_json, dump_config, load_config
from orchestra_jax.train.envs import check_env
from orchestra_jax.train.metrics import MetricsWriter, update_tags
from orchestra_jax.train.paths import is_url, run_path, upload_tree
from orchestra_jax.train.preemption import PreemptionGuard
from orchestra_jax.train.progress import ProgressLine
from orchestra_jax.train.run import Run
from orchestra_jax.train.schema import validate_config
from orchestra_jax.train.sft import saved_warm_start, warm_start

#: Tags whose values are wall-clock measurements: they differ between otherwise identical runs.
TIMING_TAGS = ("time/step_s", "time/rollout_s", "time/update_s", "time/eval_s", "train/wall_s")
#: Exit status of `orchestra train` when the updates diverged (bad input exits 2).
EXIT_DIVERGED = 3


class TrainingDiverged(RuntimeError):
    """`train.max_nonfinite_updates` optimizer updates in a row had a non-finite loss or
    gradient; every one of them was skipped, so the last checkpoint is a good state."""


@dataclasses.dataclass
class StepResult:
    """What one RL step produced, for the metrics and for observers (`train(observer=)`)."""

    step: int  # 1-based: the step just completed
    tasks: list[Any]
    trajectories: list[Trajectory]
    rewards: np.ndarray
    solved_credit: np.ndarray
    samples: TrainingSamples
    update: dict[str, float]
    rollout_s: float
    update_s: float


StepObserver = Callable[[Run, StepResult], None]


def prepare_workdir(workdir: str | os.PathLike[str]) -> epath.Path:
    """The run directory as an `epath.Path`, created and writable: a URL (`gs://…`) stays a
    URL, a local path becomes absolute. ConfigError naming `--workdir` when a local one is a
    file, or cannot be created or written (a read-only filesystem)."""
    path = run_path(workdir)
    if is_url(path):
        try:
            path.mkdir(parents=True, exist_ok=True)
        except (OSError, ImportError) as exc:
            raise ConfigError(f"--workdir {path}: cannot be created ({exc})") from exc
        return path
    local = Path(str(path))
    if local.exists() and not local.is_dir():
        raise ConfigError(f"--workdir {local}: exists and is not a directory")
    try:
        local.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--workdir {local}: cannot be created ({exc.strerror or exc})"
                          ) from exc
    if not os.access(local, os.W_OK | os.X_OK):
        raise ConfigError(f"--workdir {local}: is not writable (a read-only filesystem, or "
                          "no write permission)")
    return path


# ---------------------------------------------------------------------------------------------
# One step


def rl_step(run: Run, step: int, tasks: Sequence[Any]) -> StepResult:
    """Steps 2-4 of the module docstring for the `step`-th (0-based) batch of `tasks`."""
    start = time.perf_counter()
    trajectories = run.episodes(tasks, int(run.config.rollout.group_size), run.sampling(step))
    rollout_s = time.perf_counter() - start
    rewards, credit = step_rewards(
        trajectories, tasks, tool_names=run.suite.tool_names,
        count_calls=run.suite.count_calls, preference_of=run.suite.preference_of,
        default_preference=run.default_preference, task_label=task_id_of,
        alias_min_over_users=bool(run.config.reward.alias_min_over_users))
    samples = training_samples(trajectories, rewards, filters=run.filters,
                               advantage=run.advantage, kl=run.kl_in_reward,
                               score=run.score if run.scorer is not None else None)
    update_start = time.perf_counter()
    update = run.learn(step, samples)
    if run.state.ema_params is not None:
        run.state = ema_update(run.state, run.updates.ema_decay)
    update_s = time.perf_counter() - update_start
    run.sampler.update_params(run.state.params, version=step + 1)
    return StepResult(step + 1, list(tasks), trajectories, rewards, credit, samples, update,
                      rollout_s, update_s)


def step_metrics(result: StepResult) -> dict[str, float]:
    """The step's numbers under the documented tags (summary.json's `final_metrics` is the
    last of them). How many updates were skipped as non-finite is not among them: it is
    logged beside them (`update/skipped_nonfinite`)."""
    metrics = rollout_metrics(result.trajectories)
    rewards = result.rewards
    metrics["train/reward"] = float(np.mean(rewards)) if len(rewards) else 0.0
    if len(rewards):
        metrics["train/reward_raw_outcome"] = float(np.mean(rewards + result.solved_credit))
    update = {k: v for k, v in result.update.items() if k != "skipped_nonfinite"}
    metrics.update(update_tags(update))
    metrics.update(result.samples.extra_metrics)
    metrics["update/kept_samples"] = float(len(result.samples))
    for reason, count in sorted(result.samples.dropped.items()):
        metrics[f"update/dropped/{reason}"] = float(count)
    metrics["time/rollout_s"] = result.rollout_s
    metrics["time/update_s"] = result.update_s
    return metrics


def _log_step(run: Run, writer: MetricsWriter, result: StepResult,
              metrics: dict[str, float]) -> None:
    """Scalars, call histograms and two trajectories (the first of the step, the best of its
    first group) to TensorBoard."""
    writer.scalars(result.step, metrics)
    writer.scalars(result.step, {"update/skipped_nonfinite":
                                 result.update.get("skipped_nonfinite", 0.0)})
    for tag, values in tool_usage_histogram(result.trajectories).items():
        writer.histogram(result.step, tag, values)
    if result.trajectories:
        first = result.trajectories[: int(run.config.rollout.group_size)]
        best = max(first, key=lambda t: t.outcome)
        writer.text(result.step, "text/trajectory", trajectory_markdown(result.trajectories[0])
                    + "\n\n---\n\n" + trajectory_markdown(best))


def _check_finite(run: Run, step: int, manager: CheckpointManager) -> None:
    limit = run.updates.max_nonfinite_updates
    if run.nonfinite_in_a_row >= limit:
        checkpoint_step = manager.latest_step()
        kept = (f"the last checkpoint (step {checkpoint_step}) is intact"
                if checkpoint_step is not None else "no checkpoint was saved yet")
        raise TrainingDiverged(
            f"{run.nonfinite_in_a_row} optimizer updates in a row had a non-finite loss or "
            f"gradient (config key 'train.max_nonfinite_updates' is {limit}); each was "
            f"skipped, and the run stops at step {step}: {kept}")


def _periodic_tasks(run: Run) -> list[Any]:
    """The periodic evaluation's tasks: at most one step's worth of the eval tasks."""
    return list(run.suite.eval_tasks)[: int(run.config.rollout.prompts_per_step)]


def _json_number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


# ---------------------------------------------------------------------------------------------
# The run


@dataclasses.dataclass
class _Start:
    step: int
    history: list[dict[str, Any]]
    data_state: dict[str, Any] | None
    base_params: Any


def _resume_or_warm_start(run: Run, manager: CheckpointManager, writer: MetricsWriter,
                          progress: ProgressLine) -> _Start:
    """Restore the newest checkpoint that restores; on a fresh run log the config and play
    the warm start. The warm-started params (the "sft" policy) either way, when there is one."""
    config = run.config
    restored = manager.restore_latest(abstract_like(run.checkpoint_state()),
                                      log=progress.write)
    start = _Start(0, [], None, None)
    if restored is not None:
        step, stored, start.data_state, extra = restored
        run.restore_state(stored)
        start.step, start.history = step, list(extra.get("history", []))
        progress.write(f"resumed from step {step} in {run.workdir}")
    else:
        writer.text(0, "text/config", f"```json\n{config_to_json(config)}\n```")
        if int(config.sft.steps) > 0:
            start.base_params = warm_start(run, writer, progress)
    if start.base_params is None and int(config.sft.steps) > 0:
        start.base_params = saved_warm_start(run)
    return start


def train(config: ml_collections.ConfigDict, workdir: str | os.PathLike[str],
          observer: StepObserver | None = None) -> dict[str, Any]:
    """Run (or resume) the experiment `config` in `workdir`; a summary dict when it stops.

    The summary holds the step reached, the step the run started from, whether it stopped
    for a preemption signal, the last step's metrics, the latest checkpoint step and the wall
    time; it is also written to `workdir/summary.json`. The config is validated and the
    workdir checked before anything is written; setup problems raise `ConfigError` naming
    the key before any step runs. `observer(run, result)` sees every completed step.
    """
    start_time = time.perf_counter()
    workdir = _checked_workdir(config, workdir)
    primary = is_primary()  # process 0 alone writes logs, summaries, plots and the config
    run = build_run(config, workdir)
    total = int(config.train.steps)
    every = int(config.train.checkpoint_every)
    manager = CheckpointManager(workdir / "checkpoints", keep=int(config.train.keep_checkpoints))
    writer = MetricsWriter(workdir / "tensorboard",
                           enabled=bool(config.logging.tensorboard) and primary)
    quiet = None if primary else open(os.devnull, "w")
    progress = ProgressLine(total, stream=quiet)
    evaluation: dict[str, Any] = {}
    preempted, checkpoint_step = False, None
    try:
        begun = _resume_or_warm_start(run, manager, writer, progress)
        step, history = begun.step, begun.history
        if step:
            progress = ProgressLine(total, start_step=step, stream=quiet)
        run.sampler.update_params(run.state.params, version=step)
        pipeline = task_pipeline(run.suite.tasks, seed=run.seed,
                                 prompts_per_step=int(config.rollout.prompts_per_step),
                                 state=begun.data_state, strata=run.strata,
                                 strata_weights=run.strata_weights)
        guard: Any = PreemptionGuard()
        on_main = threading.current_thread() is threading.main_thread()
        with guard if on_main else contextlib.nullcontext():
            while step < total:
                step_start = time.perf_counter()
                result = rl_step(run, step, next(pipeline))
                step = result.step
                _check_finite(run, step, manager)
                metrics = step_metrics(result)
                if config.train.eval_every and step % int(config.train.eval_every) == 0:
                    metrics.update(periodic_evaluation(run, _periodic_tasks(run), step))
                metrics["time/step_s"] = time.perf_counter() - step_start
                history.append({"step": step, **{k: _json_number(v)
                                                 for k, v in metrics.items()}})
                if step % max(1, int(config.logging.log_every)) == 0 or step == total:
                    _log_step(run, writer, result, metrics)
                if observer is not None:
                    observer(run, result)
                progress.update(step, metrics)
                # Every process stops at the same step when any of them was asked to.
                preempted = any(allgather_objects(guard.should_stop))
                if (every and step % every == 0) or step == total or preempted:
                    writer.flush()
                    manager.save(step, run.checkpoint_state(), pipeline.get_state(),
                                 {"history": history}, force=True)
                if preempted:
                    progress.write(f"stop requested ({guard.received}); saved step {step}")
                    break
        manager.wait_until_finished()
        checkpoint_step = manager.latest_step()
        if (not preempted and step == total and bool(config.eval.final)
                and run.suite.evaluation is not None):
            evaluation = final_evaluation(
                run, run.suite.evaluation, step=step, base_params=begun.base_params,
                out_dir=run.workdir, max_tasks=config.eval.max_tasks,
                ema_decay=run.updates.ema_decay, log=progress.write)
            writer.text(step, "text/summary", "```json\n" + json.dumps(
                {k: evaluation[k] for k in ("best_fixed_route", "preference_eval")},
                indent=1) + "\n```")
    finally:
        progress.close()
        writer.close()
        manager.close()
        if quiet is not None:
            quiet.close()
    summary = {"workdir": str(workdir), "step": step, "total_steps": total,
               "preempted": preempted, "checkpoint_step": checkpoint_step,
               "final_metrics": history[-1] if history else {},
               "wall_time_s": time.perf_counter() - start_time, **evaluation}
    if primary:
        _write_summary(run, workdir, summary)
    return summary


def _checked_workdir(config: ml_collections.ConfigDict,
                     workdir: str | os.PathLike[str]) -> epath.Path:
    """The config validated and the environment's inputs checked before anything is written;
    then the workdir, with the config in it (written by process 0)."""
    validate_config(config)
    check_env(config)  # an unregistered environment (tau2), a bad task file: nothing written
    path = prepare_workdir(workdir)
    if is_primary():
        try:
            dump_config(config, path)
        except OSError as exc:
            raise ConfigError(f"--workdir {path}: cannot write config.json ({exc})") from exc
    return path


def _write_summary(run: Run, workdir: epath.Path, summary: dict[str, Any]) -> None:
    """summary.json, after the files a URL workdir's local mirror holds (the vocabulary, the
    warm start, the evaluation's files) are uploaded."""
    if is_url(workdir):
        upload_tree(run.workdir, workdir)
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def run_from_cli(config_path: str, workdir: str, overrides: Sequence[str]) -> int:
    """`orchestra train`: load, check, train; exit status 2 with the message for bad input,
    3 when the updates diverged."""
    try:
        config = load_config(config_path, overrides)
        summary = train(config, workdir)
    except (ConfigError, CheckpointError, PipelineError) as err:
        print(f"orchestra train: {err}", file=sys.stderr)
        return 2
    except TrainingDiverged as err:
        print(f"orchestra train: {err}", file=sys.stderr)
        return EXIT_DIVERGED
    if is_primary():
        print(json.dumps({k: summary[k] for k in ("step", "total_steps", "preempted",
                                                  "checkpoint_step", "wall_time_s")}))
    return 0


__all__ = ["EXIT_DIVERGED", "TIMING_TAGS", "StepObserver", "StepResult", "TrainingDiverged",
           "prepare_workdir", "rl_step", "run_from_cli", "step_metrics", "train"]
