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


def _locate(checkpoint: Path, out: Path) -> tuple[Path, Path | None]:
    """(the run directory to build the run in, the Hugging Face directory or None)."""
    if (checkpoint / "checkpoints").is_dir():
        return checkpoint, None
    if (checkpoint / "config.json").is_file():
        parent = checkpoint.parent
        workdir = parent if (parent / "tokenizer").is_dir() else out.parent / ".eval_workdir"
        return workdir, checkpoint
    raise ConfigError(f"--checkpoint {checkpoint}: neither a run directory (with "
                      "checkpoints/) nor a checkpoint directory (with config.json)")


def _restore_latest(run: Run, checkpoint: Path) -> int:
    """The run's newest checkpoint that restores, into `run.state`; its step."""
    manager = CheckpointManager(run.workdir / "checkpoints", keep=1)
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
    as the "sft" policy) or a checkpoint directory in Hugging Face layout (e.g. <workdir>/sft,
    loaded as `model.path`)."""
    validate_config(config)
    checkpoint = Path(checkpoint).expanduser().absolute()
    out = Path(out).expanduser().absolute()
    workdir, hf_dir = _locate(checkpoint, out)
    if hf_dir is not None:
        config = ml_collections.ConfigDict(config.to_dict())
        config.model.path = str(hf_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    run = build_run(config, workdir)
    if run.suite.evaluation is None:
        raise ConfigError(f"config key 'data.source' ({config.data.source!r}) offers no "
                          "evaluation")
    step = _restore_latest(run, checkpoint) if hf_dir is None else 0
    base = saved_warm_start(run) if hf_dir is None or hf_dir.name != SFT_DIR else None
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
