"""Shared by the research scripts: a trained run's workdir back in memory.

The research log (docs/research/toolworld-log.md) quotes numbers measured on a run's params:
call distributions, hidden states, checkpoints. Each script rebuilds the run from the
workdir's own `config.json` (so the overrides it was trained with need not be repeated),
through the same builder `orchestra train` uses, and reads the params it asks for. Nothing
here trains or writes into the workdir.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

PARAMS = ("trained", "sft", "init")


def _overlay(config: Any, stored: dict[str, Any]) -> None:
    """Set every field of `config` that `stored` (a run's config.json) holds; fields the run
    predates keep the recipe's default, and JSON lists become tuples where the field is one."""
    import ml_collections

    for key, value in stored.items():
        if key not in config:
            continue
        current = config[key]
        if isinstance(current, ml_collections.ConfigDict) and isinstance(value, dict):
            if len(current) == 0:  # a free-form mapping (e.g. world.preference_mix)
                config[key] = ml_collections.ConfigDict(value)
            else:
                _overlay(current, value)
        elif isinstance(current, tuple) and isinstance(value, list):
            config[key] = tuple(value)
        else:
            with config.unlocked() if hasattr(config, "unlocked") else _nothing():
                config[key] = value


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def load_run(workdir: str | Path, recipe: str = "experiments/toolworld_tiny.py") -> Any:
    """The run of `workdir` (a `train.run.Run`), built from `recipe` with every field of the
    workdir's `config.json` set over it; its state is the fresh initialisation of the run's
    seed until a checkpoint is restored."""
    from orchestra_jax.train.builders import build_run
    from orchestra_jax.train.config import load_config

    workdir = Path(workdir).expanduser().absolute()
    config_file = workdir / "config.json"
    if not config_file.is_file():
        raise SystemExit(f"{workdir}: no config.json (not a run directory)")
    config = load_config(recipe, [])
    _overlay(config, json.loads(config_file.read_text()))
    return build_run(config, workdir)


def saved_steps(run: Any) -> list[int]:
    """The checkpoint steps saved in the run's workdir, oldest first."""
    from orchestra_jax.train.checkpoint import CheckpointManager

    manager = CheckpointManager(run.workdir / "checkpoints", keep=1_000_000)
    try:
        return sorted(manager.all_steps())
    finally:
        manager.close()


def restore(run: Any, step: int | None = None) -> int:
    """Load checkpoint `step` (None: the latest) into `run.state`; the step loaded."""
    from orchestra_jax.train.checkpoint import CheckpointManager, abstract_like

    manager = CheckpointManager(run.workdir / "checkpoints", keep=1_000_000)
    try:
        steps = sorted(manager.all_steps())
        if not steps:
            raise SystemExit(f"{run.workdir}: no checkpoint saved")
        if step is None:
            step = steps[-1]
        if step not in steps:
            raise SystemExit(f"{run.workdir}: no checkpoint of step {step} (saved: {steps})")
        stored, _, _ = manager.restore(step, abstract_state=abstract_like(run.checkpoint_state()))
    finally:
        manager.close()
    run.restore_state(stored)
    return step


def params_of(run: Any, which: str, step: int | None = None) -> tuple[Any, str]:
    """(params, description): "trained" the params the evaluation plays (the moving average
    when the run keeps one) of checkpoint `step`; "sft" the saved warm start; "init" the run
    seed's initialisation."""
    if which == "init":
        return run.state.params, "initialisation"
    if which == "sft":
        from orchestra_jax.train.sft import saved_warm_start

        params = saved_warm_start(run)
        if params is None:
            raise SystemExit(f"{run.workdir}: no saved warm start (sft/)")
        return params, "warm start"
    if which != "trained":
        raise SystemExit(f"--params must be one of {PARAMS}, got {which!r}")
    got = restore(run, step)
    return run.policy_params, f"checkpoint step {got}"


def world_of(run: Any) -> Any:
    """The run's `ToolWorld` (its environment factory is the world's bound `make_env`)."""
    world = getattr(run.suite.make_env, "__self__", None)
    if world is None or not hasattr(world, "tasks"):
        raise SystemExit("these scripts read toolworld runs only (data.source=toolworld)")
    return world


def first_turn_prompts(run: Any, tasks: Sequence[Any]) -> list[list[int]]:
    """The first-turn prompt ids of each task, rendered as the episode loop renders them
    (the environment's messages and tools through the run's chat template)."""
    env = run.suite.make_env()
    prompts = []
    for task in tasks:
        env.reset(task)
        text = run.tokenizer.apply_chat_template(env.messages(), tools=env.tools() or None,
                                                 add_generation_prompt=True)
        prompts.append(list(run.tokenizer.encode(text)))
    return prompts


def first_of_each_family(tasks: Sequence[Any], per_family: int) -> dict[str, list[Any]]:
    """The first `per_family` tasks of each family, in task order."""
    out: dict[str, list[Any]] = {}
    for task in tasks:
        group = out.setdefault(task.family, [])
        if len(group) < per_family:
            group.append(task)
    return dict(sorted(out.items()))


def decision_states(run: Any, params: Any, prompts: Sequence[Sequence[int]],
                    batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(final hidden state, logits) at the last prompt position -- where the policy writes
    its call piece -- of every prompt, left-padded in batches; float32 numpy arrays."""
    import jax.numpy as jnp
    from flax import nnx

    model = nnx.merge(run.graphdef, params)
    pad = run.tokenizer.pad_token_id
    hidden_rows, logit_rows = [], []
    for start in range(0, len(prompts), batch):
        chunk = prompts[start:start + batch]
        width = max(len(p) for p in chunk)
        tokens = np.full((len(chunk), width), pad, np.int32)
        mask = np.zeros_like(tokens)
        for row, p in enumerate(chunk):
            tokens[row, width - len(p):] = p
            mask[row, width - len(p):] = 1
        hidden, _ = model.hidden_states(jnp.asarray(tokens), jnp.asarray(mask))
        last = hidden[:, -1:]
        hidden_rows.append(np.asarray(last[:, 0], np.float32))
        logit_rows.append(np.asarray(model.logits_from_hidden(last)[:, 0], np.float32))
    return np.concatenate(hidden_rows), np.concatenate(logit_rows)
