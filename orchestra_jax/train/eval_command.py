"""`orchestra eval`: a saved policy through the one evaluation runner (`eval.runner`).

This module only finds what to evaluate -- a run's latest checkpoint (and its warm start as
the "sft" policy) or a checkpoint directory in Hugging Face layout -- builds the run around
it and hands it to `eval.runner.final_evaluation`, the same call the end of `orchestra train`
makes.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_collections

from orchestra_jax.eval.runner import final_evaluation
from orchestra_jax.train.builders import build_run
from orchestra_jax.train.checkpoint import CheckpointError, CheckpointManager, abstract_like
from orchestra_jax.train.config import ConfigError, load_config
from orchestra_jax.train.progress import ProgressLine
from orchestra_jax.train.run import Run
from orchestra_jax.train.schema import validate_config
from orchestra_jax.train.sft import SFT_DIR, saved_warm_start


def _locate(checkpoint: str, out: Path) -> tuple[Path, str | None, Path | None]:
    """(the run directory to build the run in, the `model.path` to load or None for a run's
    own checkpoint, the run directory whose checkpoint to restore or None)."""
    path = Path(checkpoint).expanduser().absolute()
    if (path / "checkpoints").is_dir():
        return path, None, path
    if (path / "config.json").is_file():
        parent = path.parent
        workdir = parent if (parent / "tokenizer").is_dir() else out.parent / ".eval_workdir"
        return workdir, str(path), None
    if not path.exists() and _is_model_name(checkpoint):
        return out.parent / ".eval_workdir", checkpoint, None
    raise ConfigError(f"--checkpoint {checkpoint}: neither a run directory (with "
                      "checkpoints/), a checkpoint directory (with config.json), a packaged "
                      "model name nor a Hugging Face hub id (org/name)")


def _is_model_name(name: str) -> bool:
    """A packaged model name (`smollm2-135m-instruct`) or a hub id (`org/name`)."""
    from orchestra_jax.models.pretrained import PACKAGED_MODELS

    if name.lower() in PACKAGED_MODELS:
        return True
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~"))


def _restore_latest(run: Run, checkpoint: Path) -> int:
    """The run's newest checkpoint that restores, into `run.state`; its step."""
    manager = CheckpointManager(run.workdir / "checkpoints", keep=1, reader=True)
    try:
        restored = manager.restore_latest(abstract_like(run.checkpoint_state()))
    finally:
        manager.close()
    if restored is None:
        raise ConfigError(f"--checkpoint {checkpoint}: no checkpoint saved yet")
    step, stored, _, _ = restored
    run.restore_state(stored)
    return step


def evaluate(config: ml_collections.ConfigDict, checkpoint: str | Path,
             out: str | Path) -> dict[str, Any]:
    """Every policy of the environment's evaluation on its held-out tasks, with the policy of
    `checkpoint` as "trained"; the result is written to `out` (JSON) and the plot next to it.

    `checkpoint` is a run's workdir (its latest checkpoint, its vocabulary and its warm start
    as the "sft" policy), a checkpoint directory in Hugging Face layout (e.g. <workdir>/sft or
    an `orchestra export`), a packaged model name (`smollm2-135m-instruct`) or a hub id; the
    last three are loaded as `model.path`. The per-task lines go to `trajectories.jsonl`
    beside `out`."""
    validate_config(config)
    out = Path(out).expanduser().absolute()
    workdir, model_path, run_dir = _locate(str(checkpoint), out)
    if model_path is not None:
        config = ml_collections.ConfigDict(config.to_dict())
        config.model.path = model_path
    out.parent.mkdir(parents=True, exist_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    run = build_run(config, workdir)
    if run.suite.evaluation is None:
        raise ConfigError(f"config key 'data.source' ({config.data.source!r}) offers no "
                          "evaluation (qa: set data.eval_path)")
    step = _restore_latest(run, run_dir) if run_dir is not None else 0
    from_sft = model_path is not None and Path(model_path).name == SFT_DIR
    base = None if from_sft else saved_warm_start(run)  # None without a saved warm start
    progress = ProgressLine(1)
    start = time.perf_counter()
    try:
        result = final_evaluation(run, run.suite.evaluation, step=step, base_params=base,
                                  out_dir=out.parent, max_tasks=config.eval.max_tasks,
                                  ema_decay=run.updates.ema_decay, log=progress.write)
    finally:
        progress.close()
    pareto = out.with_suffix(".png")
    Path(result["pareto_png"]).replace(pareto)
    result["pareto_png"] = str(pareto)
    result = {"checkpoint": str(checkpoint), "step": step,
              "wall_time_s": time.perf_counter() - start, **result}
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def evaluate_from_cli(config_path: str, checkpoint: str, out: str,
                      overrides: Sequence[str]) -> int:
    """`orchestra eval`: exit status 2 with the message for bad input."""
    try:
        config = load_config(config_path, overrides)
        result = evaluate(config, checkpoint, out)
    except (ConfigError, CheckpointError) as err:
        print(f"orchestra eval: {err}", file=sys.stderr)
        return 2
    print(json.dumps({name: {k: entry[k] for k in ("accuracy", "cost_usd")}
                      for name, entry in result["policies"].items()}))
    return 0


__all__ = ["evaluate", "evaluate_from_cli"]
