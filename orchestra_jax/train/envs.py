"""Environments the training loop can run, by name (`config.data.source`).

Why a registry: the loop must not know any world. It asks this module for an `EnvSuite`
(the tasks, a factory of fresh per-episode environments, the tokenizer to use when the model
brings none, the tool executor) and trains on whatever comes back. A name that is not here
fails at start, naming the key and the known names.

Registered: `toy_target_call` (the learning-sanity world of `orchestra_jax.envs.toy`, with a
SentencePiece vocabulary trained on its own prompt, built once in the run directory so that a
resumed run reads the very same vocabulary).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ml_collections

from orchestra_jax.envs.base import Environment
from orchestra_jax.tokenization import Tokenizer
from orchestra_jax.train.config import ConfigError


@dataclass
class EnvSuite:
    """Everything the loop needs from an environment family.

    `tool_names` fixes the order of the tool-count features of the reward (one column per
    name); `count_calls(trajectory)` counts a trajectory's calls under those names (None: per
    tool name; a world of expert aliases counts per alias, the paper's features);
    `preference_of(task)` is the task's own preference vector over `[*tool_names, outcome,
    cost, latency]` (None, or a None result: the config's `reward.preference`); `tokenizer` is
    None when the model's checkpoint must provide it; `evaluation` (an `EvalSpec`) turns on
    the final evaluation of every policy at the end of a run.
    """

    tasks: Sequence[Any]
    eval_tasks: Sequence[Any]
    make_env: Callable[[], Environment]
    tool_names: tuple[str, ...]
    tokenizer: Tokenizer | None
    make_executor: Callable[[], Any]
    count_calls: Callable[[Any], Mapping[str, int]] | None = None
    preference_of: Callable[[Any], Sequence[float] | None] | None = None
    evaluation: Any = None  # an `orchestra_jax.train.evaluation.EvalSpec`, or None


EnvBuilder = Callable[[ml_collections.ConfigDict, Path], EnvSuite]
ENVS: dict[str, EnvBuilder] = {}


def register_env(name: str) -> Callable[[EnvBuilder], EnvBuilder]:
    """Decorator: file a builder under `name` for `config.data.source`."""

    def wrap(fn: EnvBuilder) -> EnvBuilder:
        ENVS[name] = fn
        return fn

    return wrap


def build_env_suite(config: ml_collections.ConfigDict, workdir: Path) -> EnvSuite:
    """The suite named by `config.data.source`; ConfigError naming the key when unknown."""
    name = config.data.source
    if name not in ENVS:
        raise ConfigError(
            f"config key 'data.source' is {name!r}; known environments: {sorted(ENVS)}"
        )
    return ENVS[name](config, workdir)


@register_env("toy_target_call")
def _toy_target_call(config: ml_collections.ConfigDict, workdir: Path) -> EnvSuite:
    from orchestra_jax.envs.toy import TOOL_NAMES, TOOLS, TargetCallEnv, call_text
    from orchestra_jax.rollout.scripted import FixedRoute, random_valid_call
    from orchestra_jax.tokenization import (
        CHATML_TOOLS_TEMPLATE,
        load_tokenizer,
        render_chat_template,
        train_sentencepiece,
    )
    from orchestra_jax.tools.executor import ToolExecutor
    from orchestra_jax.train.evaluation import EvalSpec

    directory = workdir / "tokenizer"
    if directory.is_dir():
        tokenizer = load_tokenizer(directory)
    else:
        prompt = render_chat_template(CHATML_TOOLS_TEMPLATE, TargetCallEnv().messages(),
                                      tools=TOOLS, add_generation_prompt=True)
        # Built aside and renamed, so a run killed here never leaves half a vocabulary.
        scratch = workdir / ".tokenizer.partial"
        shutil.rmtree(scratch, ignore_errors=True)
        train_sentencepiece([prompt] * 20, scratch, vocab_size=1000,
                            extra_special_tokens=[call_text(n) for n in TOOL_NAMES])
        os.replace(scratch, directory)
        tokenizer = load_tokenizer(directory)
    count = config.data.max_tasks or 16
    tasks = [{"id": f"toy-{i}"} for i in range(count)]
    # Routes that always call one tool (only `target` is right) and the random valid policy.
    scripted = {"random": lambda task: random_valid_call}
    for name in TOOL_NAMES:
        scripted[f"route:{name}"] = lambda task, name=name: FixedRoute([(name, {})])
    evaluation = EvalSpec(tasks=tasks, aliases=TOOL_NAMES, family_of=lambda task: "toy",
                          scripted=scripted)
    return EnvSuite(tasks=tasks, eval_tasks=tasks, make_env=TargetCallEnv,
                    tool_names=TOOL_NAMES, tokenizer=tokenizer, make_executor=ToolExecutor,
                    evaluation=evaluation)


__all__ = ["ENVS", "EnvSuite", "build_env_suite", "register_env"]
