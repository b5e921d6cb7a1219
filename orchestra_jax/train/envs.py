"""Environments the training loop can run, by name (`config.data.source`).

Why a registry: the loop must not know any world. It asks this module for an `EnvSuite`
(the tasks, a factory of fresh per-episode environments, the tokenizer to use when the model
brings none, the tool executor) and trains on whatever comes back. A name that is not here
fails at start, naming the key and the known names.

Registered: `toolworld` (the embedded orchestration world, see `_toolworld`),
`toy_target_call` (the learning-sanity world of `orchestra_jax.envs.toy`, with a
SentencePiece vocabulary trained on its own prompt, built once in the run directory so that a
resumed run reads the very same vocabulary) and `qa` (the paper's qa setting over task files
and configured expert endpoints, `orchestra_jax.train.qa_suite`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ml_collections

from orchestra_jax.envs.base import Environment
from orchestra_jax.eval.runner import EvalSpec
from orchestra_jax.tokenization import Tokenizer
from orchestra_jax.tools.pricing import Price
from orchestra_jax.train.errors import ConfigError


@dataclass
class EnvSuite:
    """Everything the loop needs from an environment family.

    `tool_names` fixes the order of the tool-count features of the reward (one column per
    name); `count_calls(trajectory)` counts a trajectory's calls under those names (None: per
    tool name; a world of expert aliases counts per alias, the paper's features);
    `preference_of(task)` is the task's own preference vector over `[*tool_names, outcome,
    cost, latency]` (None, or a None result: the config's `reward.preference`); `tokenizer` is
    None when the model's checkpoint must provide it; `evaluation` (an `EvalSpec`) turns on
    the final evaluation of every policy at the end of a run. `choice_texts` are the
    vocabulary pieces that each make one whole decision of a turn (toolworld: its call pieces;
    empty when decisions span several tokens), for `loss.choice_entropy_coef` and
    `loss.choice_format_coef`. `choice_groups` labels each choice with its group (toolworld:
    the call's tool; empty: no groups), for `loss.choice_entropy_over`. `kind_of(task)` labels
    a task's kind (toolworld: its family) for `data.balanced` (None: the environment has no
    kinds). `policy_price` prices the policy's own prompt and completion tokens into every
    trajectory's cost (qa: the orchestrator's model, as the release accounts; None: free).
    """

    tasks: Sequence[Any]
    eval_tasks: Sequence[Any]
    make_env: Callable[[], Environment]
    tool_names: tuple[str, ...]
    tokenizer: Tokenizer | None
    make_executor: Callable[[], Any]
    count_calls: Callable[[Any], Mapping[str, int]] | None = None
    preference_of: Callable[[Any], Sequence[float] | None] | None = None
    evaluation: EvalSpec | None = None
    choice_texts: tuple[str, ...] = ()
    choice_groups: tuple[str, ...] = ()
    kind_of: Callable[[Any], Hashable] | None = None
    policy_price: Price | None = None

    def choice_token_ids(self, tokenizer: Tokenizer) -> tuple[int, ...]:
        """The id of each of `choice_texts` in `tokenizer`'s vocabulary; ValueError naming the
        first one that is not a single token there."""
        ids = []
        for text in self.choice_texts:
            token = tokenizer.token_to_id(text)
            if token is None:
                encoded = tokenizer.encode(text)
                token = encoded[0] if len(encoded) == 1 else None
            if token is None:
                raise ValueError(f"{text!r} is not one token in this vocabulary")
            ids.append(int(token))
        return tuple(ids)


EnvBuilder = Callable[[ml_collections.ConfigDict, Path], EnvSuite]
EnvCheck = Callable[[ml_collections.ConfigDict], None]
ENVS: dict[str, EnvBuilder] = {}
#: Checks of an environment's inputs that need no workdir (task files, endpoint files), run
#: before the training loop writes anything: a bad row stops the start with nothing written.
ENV_CHECKS: dict[str, EnvCheck] = {}


def register_env(name: str, check: EnvCheck | None = None,
                 ) -> Callable[[EnvBuilder], EnvBuilder]:
    """Decorator: file a builder under `name` for `config.data.source` (and its `check`)."""

    def wrap(fn: EnvBuilder) -> EnvBuilder:
        ENVS[name] = fn
        if check is not None:
            ENV_CHECKS[name] = check
        return fn

    return wrap


def check_env(config: ml_collections.ConfigDict) -> None:
    """The environment `config.data.source` names exists, and its inputs pass its check;
    ConfigError naming the key otherwise. Writes nothing."""
    env_builder(config)
    check = ENV_CHECKS.get(config.data.source)
    if check is not None:
        check(config)


def env_builder(config: ml_collections.ConfigDict) -> EnvBuilder:
    """The builder `config.data.source` names; ConfigError naming the key when none is
    registered under it (the training loop asks before it writes the workdir)."""
    name = config.data.source
    if name not in ENVS:
        raise ConfigError(
            f"config key 'data.source' is {name!r}; known environments: {sorted(ENVS)}"
        )
    return ENVS[name]


def build_env_suite(config: ml_collections.ConfigDict, workdir: Path) -> EnvSuite:
    """The suite named by `config.data.source`; ConfigError naming the key when unknown."""
    return env_builder(config)(config, workdir)


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

    def build(out: Path) -> None:
        prompt = render_chat_template(CHATML_TOOLS_TEMPLATE, TargetCallEnv().messages(),
                                      tools=TOOLS, add_generation_prompt=True)
        train_sentencepiece([prompt] * 20, out, vocab_size=1000,
                            extra_special_tokens=[call_text(n) for n in TOOL_NAMES])

    _built_once(workdir / "tokenizer", build)
    tokenizer = load_tokenizer(workdir / "tokenizer")
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


def _built_once(directory: Path, build: Callable[[Path], Any]) -> None:
    """Run `build(scratch)` and rename the result to `directory` unless it exists: a run killed
    while building never leaves half a vocabulary behind, and a resumed run reads the same."""
    if directory.is_dir():
        return
    scratch = directory.parent / f".{directory.name}.partial"
    shutil.rmtree(scratch, ignore_errors=True)
    build(scratch)
    os.replace(scratch, directory)


def _preference_mix(mix: Any) -> tuple[tuple[str, float], ...]:
    """The training tasks' preference mixture from `world.preference_mix` (preference name ->
    weight >= 0; empty or absent: the world's default mixture). The names and weights are
    checked with the config (`orchestra_jax.train.schema`).

    Why a key: the preferences are not free for the neutral user's routes. `prefer_open`
    penalises `mini`, the best searcher, and `minimise_cost` weights cost like the outcome, so
    a policy that conditions weakly on the instruction carries their routes into neutral tasks.
    """
    from orchestra_jax.envs.toolworld.preferences import DEFAULT_MIX, PREFERENCES

    if not mix:
        return DEFAULT_MIX
    weights = dict(mix)
    # In the catalogue's order, so the draw per task never depends on how the keys were set.
    return tuple((name, float(weights[name])) for name in PREFERENCES
                 if weights.get(name, 0.0) > 0)


def _check_qa(config: ml_collections.ConfigDict) -> None:
    from orchestra_jax.train.qa_suite import check_qa_config

    check_qa_config(config)


@register_env("qa", check=_check_qa)
def _qa(config: ml_collections.ConfigDict, workdir: Path) -> EnvSuite:
    from orchestra_jax.train.qa_suite import build_qa_suite

    return EnvSuite(**build_qa_suite(config, workdir))


@register_env("toolworld")
def _toolworld(config: ml_collections.ConfigDict, workdir: Path) -> EnvSuite:
    """The embedded world (`orchestra_jax.envs.toolworld`), its vocabulary trained on its own
    text in <workdir>/tokenizer, tasks per `config.world`, per-alias reward features, each
    task's preference vector, and the final evaluation (test split, the random policy, the
    one-alias fixed routes, the avoid-the-frontier variant). The `world` keys' values were
    checked with the config (`orchestra_jax.train.schema.validate_config`)."""
    from orchestra_jax.envs.toolworld import ToolWorld, WorldConfig
    from orchestra_jax.envs.toolworld.routes import turn_chooser
    from orchestra_jax.envs.toolworld.vocabulary import (
        call_piece_groups,
        call_piece_texts,
        train_world_tokenizer,
    )
    from orchestra_jax.tokenization import load_tokenizer
    from orchestra_jax.tools.executor import ToolExecutor

    w = config.world
    preference_mix = _preference_mix(w.get("preference_mix"))
    try:
        world = ToolWorld(WorldConfig(seed=int(w.seed), search_k=int(w.search_k),
                                      max_turns=int(config.rollout.max_turns),
                                      last_turn_note=bool(w.last_turn_note),
                                      efficiency_weight=float(w.efficiency_weight),
                                      preference_mix=preference_mix,
                                      cache_dir=str(workdir / "world")))
    except ValueError as exc:
        raise ConfigError(f"config key 'world': {exc}") from exc
    _built_once(workdir / "tokenizer", lambda out: train_world_tokenizer(
        world, out, vocab_size=int(w.vocab_size), n_tasks=int(w.vocabulary_tasks),
        template=str(w.prompt_template), call_pieces=str(w.call_pieces)))
    tokenizer = load_tokenizer(workdir / "tokenizer")
    train_tasks = world.tasks("train", int(w.train_tasks), preference=w.train_preference,
                              tool_subsets=bool(w.tool_subsets),
                              price_schedules=bool(w.price_schedules))
    test_tasks = world.tasks("test", int(w.test_tasks))
    aliases = world.aliases
    seed = int(config.train.seed)

    def random_for(task: Any) -> Any:
        return turn_chooser(world.random_policy(seed), task, aliases)

    scripted: dict[str, Callable[[Any], Any]] = {"random": random_for}
    for name, route in world.routes(mixed=False).items():
        scripted[name] = lambda task, route=route: turn_chooser(route, task, aliases)
    evaluation = EvalSpec(
        tasks=test_tasks, aliases=aliases, family_of=lambda task: task.family,
        scripted=scripted,
        preference_tasks={"avoid_frontier": world.tasks("test", int(w.test_tasks),
                                                        preference="avoid_frontier")},
        frontier_alias=world.frontier_alias)

    def count_calls(trajectory: Any) -> dict[str, int]:
        counts: dict[str, int] = {}
        for record in trajectory.records:
            if record.alias in aliases:
                counts[record.alias] = counts.get(record.alias, 0) + 1
        return counts

    return EnvSuite(tasks=train_tasks, eval_tasks=test_tasks, make_env=world.make_env,
                    tool_names=aliases, tokenizer=tokenizer, make_executor=ToolExecutor,
                    count_calls=count_calls,
                    preference_of=lambda task: task.preference_vector or None,
                    evaluation=evaluation,
                    choice_texts=tuple(call_piece_texts(aliases, str(w.call_pieces))),
                    choice_groups=tuple(call_piece_groups(aliases, str(w.call_pieces))),
                    kind_of=lambda task: task.family)


__all__ = ["ENVS", "ENV_CHECKS", "EnvSuite", "build_env_suite", "check_env", "register_env"]
