"""The experiment config's one schema: every key, its default, what it may hold, what it means.

Why one declaration: the default of a field, its type, whether it may be None, the values it
may take and its meaning used to live in four places (the recipes' base file, the loader, the
training loop, the environment builders). Here each field is declared once, in `SCHEMA`, and
everything else is derived from it:

* ``default_config()`` -- the ``ml_collections.ConfigDict`` every recipe starts from
  (``experiments/base.py`` returns it). A field that may be None is a
  ``placeholder(type)`` there, so a ``--config.x=...`` override is still type-checked while it
  is None and ``--config.x=None`` turns it off again.
* ``validate_config(config)`` -- every check that needs nothing but the config: unknown or
  missing keys, types, None where it is not allowed, ranges, names that must be in a registry,
  and the rules between fields (`_RULES`). It raises ``ConfigError`` naming the key, what was
  given and what was expected. ``load_config`` calls it once, after the overrides, so a bad
  run stops before its workdir is touched. Checks that need built objects (the device count
  of the mesh, the environment's tasks, its tokenizer's choice pieces) stay where those are
  built.

Reading `SCHEMA`: ``Field(default, meaning, ...)`` is a leaf (``kind`` is the type when the
default is None; ``nullable`` lets a non-None default be switched off with None; ``check``
is its allowed values); ``section(meaning, **fields)`` groups fields; ``FreeForm`` is a
mapping whose keys are not known in advance (``mesh.rules``, ``data.kind_weights``,
``world.preference_mix``; ``model.overrides`` is one a recipe may add).

Nothing here imports jax when the module is imported; the registries that live with jax code
(losses, advantages, optimizers, environments) are imported inside ``validate_config``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import ml_collections
from ml_collections.config_dict import placeholder

from orchestra_jax.train.errors import ConfigError, close_matches
from orchestra_jax.train.schema_fields import (
    PLANNED_SOURCES,
    Field,
    FreeForm,
    Section,
    above,
    advantages,
    agg_modes,
    at_least,
    call_pieces,
    kind_weights,
    kl_estimators,
    mesh_rules,
    mesh_shape,
    named_template,
    one_of,
    optimizers,
    policy_losses,
    positive_ints,
    preference_mix,
    registered,
    section,
    sources,
    within,
)

__all__ = [
    "PLANNED_SOURCES",
    "SCHEMA",
    "Field",
    "FreeForm",
    "Section",
    "default_config",
    "free_form_keys",
    "validate_config",
]

# ---------------------------------------------------------------------------------------------
# The schema

_DTYPES = one_of("float32", "bfloat16", "float16")
_POSITIVE = at_least(1)
_NON_NEGATIVE = at_least(0)
_PREFERENCE_WEIGHT = within(0.0, 1.0)

SCHEMA = section(
    "An RL experiment: the policy, its rollouts, the reward, the update, the data.",
    model=section(
        "The policy network.",
        preset=Field("tiny", "architecture: a name in orchestra_jax.models.PRESETS, randomly "
                     "initialised (not used when path is set)"),
        path=Field(None, "HF checkpoint dir, .gguf file, packaged model name or hub id "
                   "(org/name) whose weights start the policy and the KL reference; brings "
                   "architecture and tokenizer",
                   kind=str),
        chat_template=Field(None, "a named template (tokenization.named_chat_template) that "
                            "replaces the tokenizer's own (None: keep it; SmolLM2's drops tools)",
                            kind=str, check=named_template),
        dtype=Field("float32", "activation / compute dtype", check=_DTYPES),
        param_dtype=Field("float32", "master weights' dtype (float32 with small lr: a bfloat16 "
                          "weight cannot absorb a 1e-6 relative update)", check=_DTYPES),
        remat=Field(False, "recompute activations in the backward pass (less memory)"),
        scan_layers=Field(False, "one scanned layer instead of unrolled ones (fast compiles)"),
        overrides=FreeForm("ModelConfig fields set over the preset (toy recipe: num_layers, "
                           "hidden_size, ...); absent unless a recipe adds it", optional=True),
    ),
    mesh=section(
        "The device mesh (data, fsdp, tensor) and how logical axes map onto it.",
        shape=Field((1, -1, 1), "(data, fsdp, tensor) device counts; one entry may be -1 for "
                    "'the rest'", check=mesh_shape),
        rules=FreeForm("logical axis -> mesh axes, merged over "
                       "orchestra_jax.sharding.DEFAULT_RULES (--config.mesh.rules.embed=fsdp)",
                       check=mesh_rules),
    ),
    rollout=section(
        "The episodes one RL step plays.",
        prompts_per_step=Field(8, "tasks per RL step", check=_POSITIVE),
        group_size=Field(8, "episodes played of each task (one advantage group)",
                         check=_POSITIVE),
        max_turns=Field(8, "turns per episode", check=_POSITIVE),
        max_prompt_tokens=Field(2048, "the longest prompt a turn may have (a longer one ends "
                                "the episode)", check=_POSITIVE),
        max_new_tokens=Field(256, "new tokens per turn", check=_POSITIVE),
        temperature=Field(1.0, "sampling temperature (0: greedy)", check=_NON_NEGATIVE),
        top_p=Field(1.0, "nucleus sampling mass", check=within(0.0, 1.0, low_open=True)),
        episode_timeout_s=Field(300.0, "wall-clock limit of one episode", check=above(0)),
        max_batch_size=Field(64, "generation requests per sampler call", check=_POSITIVE),
        max_concurrent_episodes=Field(None, "episodes in flight at once (None: all at once)",
                                      kind=int, check=_POSITIVE),
    ),
    reward=section(
        "The ToolOrchestra reward.",
        preference=section(
            "The preference vector P of tasks that carry none, each weight in [0, 1].",
            tools=Field(0.0, "weight of every tool-count coordinate", check=_PREFERENCE_WEIGHT),
            outcome=Field(1.0, "weight of the outcome", check=_PREFERENCE_WEIGHT),
            cost=Field(0.0, "weight of the (negated) cost", check=_PREFERENCE_WEIGHT),
            latency=Field(0.0, "weight of the (negated) latency", check=_PREFERENCE_WEIGHT),
        ),
        alias_min_over_users=Field(False, "reproduce the release's per-alias minima over users "
                                   "only (a bug; off); its cost/latency bonus has no switch"),
    ),
    filter=section(
        "Which samples enter the loss (orchestra_jax.rl.filters).",
        min_group_std=Field(0.1, "drop groups whose reward std is at or below it (None: keep "
                            "all)", nullable=True, check=_NON_NEGATIVE),
        drop_invalid_final_output=Field(True, "drop episodes that end without a valid final "
                                        "answer"),
        drop_malformed_turns=Field(True, "drop turns whose call does not parse"),
        drop_truncated=Field(False, "drop turns cut off at max_new_tokens"),
    ),
    advantage=section(
        "Advantages from the rewards.",
        estimator=Field("grpo", "a name in the advantage registry (rl.advantages.ADVANTAGES: "
                        "grpo, drgrpo, rloo, gae)",
                        check=registered(advantages, "a registered advantage estimator")),
        std=Field("sample", "the group std: 'sample' (n-1) or 'population'",
                  check=one_of("sample", "population")),
        eps=Field(1e-6, "added to the std", check=_NON_NEGATIVE),
        clip=Field(None, "clip advantages to [-clip, clip] (None: off; the release uses 3.0)",
                   kind=float, check=above(0)),
        boost=Field(None, "added to advantages at or above boost_threshold (None: off; the "
                    "release adds 0.1)", kind=float),
        boost_threshold=Field(1.0, "where boost starts"),
        gamma=Field(1.0, "GAE discount (gae only)", check=within(0.0, 1.0)),
        lam=Field(1.0, "GAE trace decay (gae only)", check=within(0.0, 1.0)),
        whiten=Field(True, "whiten GAE advantages over the batch's sampled tokens (gae only; "
                     "a sequence's reward sits on its last sampled token)"),
    ),
    loss=section(
        "The policy loss and its extra terms.",
        policy_loss=Field("ppo_clip", "a name in the loss registry (rl.losses.POLICY_LOSSES: "
                          "ppo_clip, gspo, reinforce)",
                          check=registered(policy_losses, "a registered policy loss")),
        clip_low=Field(0.2, "the ratio is clipped below at 1 - clip_low", check=_NON_NEGATIVE),
        clip_high=Field(0.2, "the ratio is clipped above at 1 + clip_high (None: clip_low)",
                        nullable=True, check=_NON_NEGATIVE),
        dual_clip=Field(None, "dual-clip bound on negative-advantage ratios (None: off)",
                        kind=float, check=above(1)),
        agg_mode=Field("token-mean", "token losses to one number: token-mean, "
                       "seq-mean-token-sum, seq-mean-token-mean, seq-mean-token-sum-norm",
                       check=registered(agg_modes, "an aggregation mode")),
        kl_coef=Field(0.0, "weight of KL(policy || reference) (0: no reference model)",
                      check=_NON_NEGATIVE),
        kl_estimator=Field("k2", "a name in rl.losses.KL_ESTIMATORS (k1, k2, k3, abs, ...)",
                           check=registered(kl_estimators, "a registered KL estimator")),
        kl_in=Field("loss", "'loss': a loss term; 'reward': a per-token penalty kl_coef * KL "
                    "summed into the episode's reward before the advantages",
                    check=one_of("loss", "reward")),
        entropy_coef=Field(0.0, "per-token entropy bonus", check=_NON_NEGATIVE),
        choice_entropy_coef=Field(0.0, "bonus on the entropy of the batch-marginal over the "
                                  "world's one-token choices (0: off; needs choice pieces)",
                                  check=_NON_NEGATIVE),
        choice_entropy_over=Field("choice", "'choice': that marginal over the choices; "
                                  "'group': over the world's groups (toolworld: the tool)",
                                  check=one_of("choice", "group")),
        choice_format_coef=Field(0.0, "-log P(a choice) at each turn's decision position "
                                 "(0: off; needs choice pieces)", check=_NON_NEGATIVE),
        value_coef=Field(0.5, "critic loss weight (gae only, where it must be > 0)",
                         check=_NON_NEGATIVE),
        value_clip=Field(0.2, "bound on |v - old_v| in the value loss (None: off)",
                         nullable=True, check=above(0)),
    ),
    optimizer=section(
        "The RL optimizer; its schedule and warm-up count RL steps, not optimizer updates.",
        name=Field("adamw", "adamw or muon (rl.optimizer.OPTIMIZERS)",
                   check=registered(optimizers, "a known optimizer")),
        muon_embeddings=Field(False, "with muon: orthogonalise the embedding / LM head's "
                              "updates too (else AdamW's)"),
        lr=Field(1e-5, "peak learning rate"),
        schedule=Field("constant", "'constant', 'cosine' or 'linear' (both decay to 0 at "
                       "train.steps)"),
        warmup_steps=Field(0, "linear warm-up from 0 over this many RL steps"),
        b1=Field(0.9, "Adam's first-moment decay", check=within(0.0, 1.0, high_open=True)),
        b2=Field(0.999, "Adam's second-moment decay", check=within(0.0, 1.0, high_open=True)),
        eps=Field(1e-8, "Adam's epsilon", check=_NON_NEGATIVE),
        weight_decay=Field(0.01, "decoupled weight decay", check=_NON_NEGATIVE),
        decay_biases_and_norms=Field(False, "decay biases and norm scales too (False: only "
                                     "weight matrices and embeddings)"),
        grad_clip=Field(1.0, "global-norm gradient clipping (None or 0: off)", nullable=True,
                        check=_NON_NEGATIVE),
    ),
    train=section(
        "The RL loop.",
        steps=Field(100, "RL steps", check=_POSITIVE),
        mini_batch_size=Field(16, "turn-samples per optimizer step", check=_POSITIVE),
        ppo_epochs=Field(1, "passes over each RL batch", check=_POSITIVE),
        micro_batches=Field(1, "micro-batches per mini-batch (gradient accumulation)",
                            check=_POSITIVE),
        seed=Field(0, "the run's seed: init, task order, sampling, mini-batch order",
                   check=_NON_NEGATIVE),
        eval_every=Field(0, "greedy evaluation every N RL steps (0: never)",
                         check=_NON_NEGATIVE),
        checkpoint_every=Field(10, "checkpoint every N RL steps (0: only at the end)",
                               check=_NON_NEGATIVE),
        keep_checkpoints=Field(3, "checkpoints kept", check=_POSITIVE),
        seq_buckets=Field(None, "lengths training sequences are padded to (None: powers of "
                          "two from 128; the longest possible sequence is always last)",
                          kind=tuple, check=positive_ints),
        group_by_length=Field(False, "mini-batches of similar-length samples, each padded to "
                              "its own bucket (False: random, padded to the step's longest)"),
        ema_decay=Field(0.0, "0 (off) or the per-RL-step decay of a moving average of the "
                        "params, played as the trained policy by evaluation",
                        check=within(0.0, 1.0, high_open=True)),
        skip_nonfinite_updates=Field(True, "skip an optimizer update whose loss or gradient "
                                     "is not finite (False: apply it, as before the guard; "
                                     "the guard moves the last bit of applied updates on CPU)"),
        max_nonfinite_updates=Field(3, "stop the run after this many optimizer updates in a "
                                    "row skipped for a non-finite loss or gradient",
                                    check=_POSITIVE),
    ),
    sft=section(
        "The format-only warm start before RL: scripted random valid calls, then cross-entropy "
        "on their turns; saved to <workdir>/sft, the RL start and the KL reference.",
        steps=Field(0, "AdamW steps of token cross-entropy on the turns (0: no warm start)",
                    check=_NON_NEGATIVE),
        lm_steps=Field(0, "steps of next-token prediction on the turns' whole text first "
                       "(0: off)", check=_NON_NEGATIVE),
        episodes=Field(512, "scripted episodes of uniformly random valid calls on training "
                       "tasks", check=_POSITIVE),
        batch_size=Field(32, "turns per step", check=_POSITIVE),
        lr=Field(1e-3, "learning rate after the warm-up", check=above(0)),
        warmup_steps=Field(10, "linear warm-up steps", check=_NON_NEGATIVE),
        micro_batches=Field(1, "micro-batches per step (gradient accumulation)",
                            check=_POSITIVE),
    ),
    eval=section(
        "The final evaluation of every policy the environment offers.",
        final=Field(True, "at the end of a run, evaluate trained, sft, random, fixed routes and "
                    "preference variants into summary.json and pareto.png"),
        max_tasks=Field(None, "the first N held-out tasks only (None: all)", kind=int,
                        check=_POSITIVE),
    ),
    data=section(
        "The environment family and its tasks.",
        source=Field("toolworld", "a registered environment (orchestra_jax.train.envs: "
                     "toolworld, toy_target_call, qa)"),
        path=Field(None, "the task file (None for generated worlds)", kind=str),
        eval_path=Field(None, "the held-out task file (None: no eval set)", kind=str),
        max_tasks=Field(None, "use the first N tasks only (None: all)", kind=int,
                        check=_POSITIVE),
        bad_rows=Field("fail", "a malformed task-file row: 'fail' stops the start naming "
                       "file:line, 'skip' reports it and trains on the rest",
                       check=one_of("fail", "skip")),
        balanced=Field(False, "every step holds the environment's task kinds (toolworld: "
                       "families) in equal numbers, or in kind_weights' proportions"),
        kind_weights=FreeForm("kind -> positive int share of a balanced step (unnamed kinds: "
                              "1); needs balanced", check=kind_weights),
    ),
    experts=section(
        "The expert endpoints the qa setting calls (data.source 'qa').",
        file=Field(None, "JSON file: expert name -> {model, endpoint (an OpenAI-compatible "
                   "base URL), api_key_env, timeout_s, price}; a task's model_mapping maps the "
                   "aliases the policy sees to these names", kind=str),
        prices_file=Field(None, "JSON file: model name -> {input_usd_per_mtok, "
                          "output_usd_per_mtok}, over every other price (an unseen price "
                          "schedule at evaluation)", kind=str),
        orchestrator_model=Field(None, "the model name the policy's own tokens are priced as "
                                 "(the pricing catalog or prices_file); None: free", kind=str),
        max_tokens=Field(1024, "most tokens an expert writes per call", check=_POSITIVE),
    ),
    search=section(
        "The qa setting's retrieval.",
        corpus=Field(None, "JSONL corpus ({id, title, text}) served by the local BM25 search",
                     kind=str),
        k=Field(5, "documents per search", check=_POSITIVE),
        web_fallback=Field(False, "ask the Tavily-compatible web search when the corpus finds "
                           "nothing (key from web_api_key_env)"),
        web_api_key_env=Field("TAVILY_API_KEY", "environment variable holding the web search "
                              "key"),
        web_endpoint=Field("https://api.tavily.com", "the Tavily-compatible search service"),
    ),
    judge=section(
        "The qa outcome: normalised exact match first, then this LLM judge.",
        expert=Field(None, "a name in experts.file that judges misses of the exact match "
                     "(None: exact match only)", kind=str),
        max_tokens=Field(512, "most tokens of a verdict", check=_POSITIVE),
        timeout_s=Field(120.0, "a verdict's time limit (then unknown, counted, outcome 0)",
                        check=above(0)),
    ),
    qa=section(
        "The qa environment's episode settings.",
        context_chars=Field(60000, "characters of gathered notes in a prompt (the oldest are "
                            "cut first)", check=_POSITIVE),
        code_timeout_s=Field(10.0, "a program's time limit in the sandbox", check=above(0)),
        basic_tools=Field(True, "evaluation also plays the trained policy with every alias "
                          "mapped to one expert (the paper's 'basic tools' baseline)"),
        augment=Field(False, "the paper's augmentation of plain training tasks: per-task "
                      "anonymised aliases, price schedule, tool subset and preference "
                      "(orchestra_jax.envs.qa_augment); released records keep their own"),
        preference_share=Field(0.5, "share of augmented tasks given a preference instruction",
                               check=within(0.0, 1.0)),
    ),
    world=section(
        "The embedded toolworld (data.source 'toolworld').",
        seed=Field(0, "seed of the world: entities, tasks, experts"),
        train_tasks=Field(2000, "training tasks", check=_POSITIVE),
        test_tasks=Field(400, "held-out tasks, from seeds disjoint from training's",
                         check=_NON_NEGATIVE),
        train_preference=Field("mix", "'neutral', or 'mix': training tasks carry preference "
                               "instructions (e.g. avoid the frontier model)",
                               check=one_of("neutral", "mix")),
        preference_mix=FreeForm("preference name -> weight >= 0 of the mix (empty: half "
                                "neutral, a fifth avoid_frontier, a tenth each other)",
                                check=preference_mix),
        tool_subsets=Field(False, "the paper's augmentation: tasks offer subsets of the tools"),
        price_schedules=Field(False, "the paper's augmentation: tasks carry varied prices"),
        search_k=Field(3, "documents per search", check=_POSITIVE),
        vocab_size=Field(2000, "size of the SentencePiece vocabulary trained on the world's "
                         "text", check=_POSITIVE),
        vocabulary_tasks=Field(200, "random-policy episodes whose text trains the vocabulary",
                               check=_POSITIVE),
        prompt_template=Field("chatml_tools", "template the vocabulary is trained for and "
                              "episodes render: 'chatml_tools' (JSON schemas) or 'compact'",
                              check=named_template),
        call_pieces=Field("call", "'call': each whole call one piece; 'split': tool piece + "
                          "expert piece; 'none': learned pieces",
                          check=registered(call_pieces, "a call-piece option")),
        last_turn_note=Field(False, "the last turn's prompt says so; the random policy "
                             "answers on it"),
        efficiency_weight=Field(0.5, "cost and latency weight of the neutral user (outcome: 1)",
                                check=within(0.0, 1.0)),
    ),
    logging=section(
        "What a run writes as it goes.",
        tensorboard=Field(True, "write TensorBoard event files under the workdir"),
        log_every=Field(1, "write metrics every N RL steps", check=_POSITIVE),
    ),
)


# ---------------------------------------------------------------------------------------------
# The defaults


def default_config() -> ml_collections.ConfigDict:
    """A fresh, unlocked config holding every field of `SCHEMA` at its default."""
    return _build(SCHEMA)


def _build(spec: Section) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    for name, item in spec.fields.items():
        if isinstance(item, Section):
            config[name] = _build(item)
        elif isinstance(item, FreeForm):
            if not item.optional:
                config[name] = ml_collections.ConfigDict()
        elif item.may_be_none:
            ref = placeholder(item.type)
            if item.default is not None:
                ref.set(item.default)
            config[name] = ref
        else:
            config[name] = item.default
    return config


def free_form_keys(spec: Section = SCHEMA, prefix: str = "") -> set[str]:
    """The dotted names of the free-form sections ('mesh.rules', ...)."""
    keys: set[str] = set()
    for name, item in spec.fields.items():
        if isinstance(item, FreeForm):
            keys.add(f"{prefix}{name}")
        elif isinstance(item, Section):
            keys |= free_form_keys(item, f"{prefix}{name}.")
    return keys


# ---------------------------------------------------------------------------------------------
# Validation


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raise ``ConfigError`` naming the first key that `SCHEMA` or a rule between fields
    rejects: what it holds and what was expected. Returns None for a usable config."""
    _check_section(config, SCHEMA, "")
    for rule in _RULES:
        rule(config)


def _noun(kind: type, nullable: bool) -> str:
    noun = {int: "an int", float: "a number", bool: "a bool", str: "a str",
            tuple: "a tuple"}.get(kind, f"a {kind.__name__}")
    return f"{noun} (or None)" if nullable else noun


def _has_type(value: Any, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is tuple:
        return isinstance(value, tuple | list)
    return isinstance(value, kind)


def _all_keys(spec: Section, prefix: str = "") -> list[str]:
    keys = []
    for name, item in spec.fields.items():
        keys.append(f"{prefix}{name}")
        if isinstance(item, Section):
            keys.extend(_all_keys(item, f"{prefix}{name}."))
    return keys


def _unknown(key: str) -> ConfigError:
    matches = close_matches(key, _all_keys(SCHEMA))
    hint = f"; did you mean {', '.join(matches)}?" if matches else ""
    return ConfigError(f"unknown config key {key!r} (not in orchestra_jax.train.schema){hint}")


def _check_section(values: Any, spec: Section, prefix: str) -> None:
    for name in values.keys():
        if name not in spec.fields:
            raise _unknown(f"{prefix}{name}")
    for name, item in spec.fields.items():
        key = f"{prefix}{name}"
        if name not in values:
            if isinstance(item, FreeForm) and item.optional:
                continue
            raise ConfigError(f"config key {key!r} is missing; recipes start from "
                              "base_config() (orchestra_jax.train.schema.default_config)")
        value = values[name]
        if isinstance(item, Section | FreeForm):
            if not isinstance(value, Mapping | ml_collections.ConfigDict):
                raise ConfigError(f"config key {key!r} is {value!r}; expected a section")
            if isinstance(item, Section):
                _check_section(value, item, f"{key}.")
            elif item.check is not None:
                plain = value.to_dict() if isinstance(value, ml_collections.ConfigDict) else dict(
                    value)
                item.check(key, plain)
            continue
        _check_field(key, value, item)


def _check_field(key: str, value: Any, spec: Field) -> None:
    noun = _noun(spec.type, spec.may_be_none)
    if value is None:
        if spec.may_be_none:
            return
        raise ConfigError(f"config key {key!r} is None; expected {noun}")
    if not _has_type(value, spec.type):
        raise ConfigError(f"config key {key!r} is {value!r} ({type(value).__name__}); "
                          f"expected {noun}")
    if isinstance(value, float) and math.isnan(value):
        raise ConfigError(f"config key {key!r} is nan; expected {noun}")
    if spec.check is not None:
        expected = spec.check(value, noun)
        if expected is not None:
            raise ConfigError(f"config key {key!r} is {value!r}; expected {expected}")


# Rules between fields, or that call the owning module's own check.


def _model_preset(config: ml_collections.ConfigDict) -> None:
    """Without model.path the preset builds the model: it must exist, and model.overrides
    must name its fields."""
    model = config.model
    if model.path is not None:
        return
    from orchestra_jax.models.config import PRESETS, get_preset

    try:
        get_preset(model.preset)
    except ValueError:
        raise ConfigError(f"config key 'model.preset' is {model.preset!r}; expected one of "
                          f"{sorted(PRESETS)}") from None
    overrides = model.get("overrides", None)
    if overrides:
        try:
            get_preset(model.preset, **overrides.to_dict())
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"config key 'model.overrides' ({overrides.to_dict()!r}): {exc}"
                              ) from exc


def _value_coef_with_gae(config: ml_collections.ConfigDict) -> None:
    if config.advantage.estimator == "gae" and not config.loss.value_coef > 0:
        raise ConfigError(f"config key 'loss.value_coef' is {config.loss.value_coef!r}; "
                          "expected > 0 with advantage.estimator 'gae' (the critic must learn)")


def _lr_schedule(config: ml_collections.ConfigDict) -> None:
    """`make_schedule`'s own check, as the loop calls it: RL steps, `train.steps` of them."""
    from orchestra_jax.rl.optimizer import make_schedule

    opt = config.optimizer
    try:
        make_schedule(float(opt.lr), schedule=opt.schedule, warmup_steps=int(opt.warmup_steps),
                      total_steps=max(1, int(config.train.steps)))
    except ValueError as exc:
        text = str(exc)
        key = ("schedule" if "schedule" in text and "total_steps" not in text
               else "lr" if "learning rate" in text else "warmup_steps")
        steps = f" (train.steps {config.train.steps})" if "total_steps" in text else ""
        raise ConfigError(f"config key 'optimizer.{key}' is {opt[key]!r}: {text}{steps}"
                          ) from exc


def _kind_weights_need_balanced(config: ml_collections.ConfigDict) -> None:
    weights = config.data.kind_weights.to_dict()
    if not config.data.balanced and any(w != 1 for w in weights.values()):
        raise ConfigError("config key 'data.kind_weights' needs 'data.balanced' True, "
                          f"got {weights!r}")


def _data_source(config: ml_collections.ConfigDict) -> None:
    source = config.data.source
    known = sorted(sources())
    if source not in known and source not in PLANNED_SOURCES:
        raise ConfigError(f"config key 'data.source' is {source!r}; expected a registered "
                          f"environment, one of {known}")


_RULES: tuple[Callable[[ml_collections.ConfigDict], None], ...] = (
    _model_preset,
    _value_coef_with_gae,
    _lr_schedule,
    _kind_weights_need_balanced,
    _data_source,
)
