"""`generate_tokens`: continue token-id prompts with a model, on the one generation engine.

`LanguageModel.generate` and this function run `models.sampling.DecodeEngine`, the compiled
prefill + on-device decode loop that the rollout sampler runs too: one implementation, so the
demo, evaluations and training rollouts decode alike and equally fast.

Engines (their compiled programs) are cached per model structure, mesh, rules, pad id, stop
tokens and parameter layout, so repeated calls compile nothing; the parameters themselves are
read from the model at every call and never held by the cache.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Sequence

import jax
from flax import nnx

from orchestra_jax.models.decoder import Decoder
from orchestra_jax.models.sampling import DecodeEngine, DecodeOutput, SamplingParams
from orchestra_jax.sharding.rules import DEFAULT_RULES, LogicalRules, active_rules

#: Engines kept (least recently used dropped first); each holds only compiled programs.
_MAX_ENGINES = 8
_engines: collections.OrderedDict[tuple, DecodeEngine] = collections.OrderedDict()
_engines_lock = threading.Lock()


def _engine_for(model: Decoder, mesh: jax.sharding.Mesh, rules: LogicalRules,
                pad_id: int, stop_token_ids: tuple[int, ...]) -> tuple[DecodeEngine, nnx.State]:
    rules = {**DEFAULT_RULES, **rules}  # {} and the defaults name the same placement
    graphdef, state = nnx.split(model)
    # A compiled program is bound to the parameters' shapes, dtypes and shardings too.
    layout = tuple((x.shape, x.dtype, getattr(x, "sharding", None))
                   for x in jax.tree.leaves(state))
    rules_key = tuple(sorted((name, tuple(axes) if isinstance(axes, list) else axes)
                             for name, axes in rules.items()))
    key = (graphdef, mesh, rules_key, pad_id, stop_token_ids, layout)
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            engine = DecodeEngine(model, mesh, rules=rules, pad_id=pad_id,
                                  stop_token_ids=stop_token_ids)
            _engines[key] = engine
            while len(_engines) > _MAX_ENGINES:
                _engines.popitem(last=False)
        _engines.move_to_end(key)
    return engine, state


def decode_prompts(
    model: Decoder,
    mesh: jax.sharding.Mesh,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    stop_token_ids: Sequence[int] = (),
    pad_id: int = 0,
    temperature: float = 0.0,
    seed: int = 0,
    rules: LogicalRules | None = None,
) -> DecodeOutput:
    """`generate_tokens` with the engine's whole output (lengths, stop flags, log-probs)."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generation needs at least one prompt, and no empty prompt")
    row = SamplingParams(max_new_tokens=int(max_new_tokens), temperature=float(temperature))
    rules = active_rules() if rules is None else rules
    engine, state = _engine_for(model, mesh, rules, int(pad_id),
                                tuple(int(t) for t in stop_token_ids))
    return engine.decode(state, prompts, [row] * len(prompts), stream_seed=int(seed))


def generate_tokens(
    model: Decoder,
    mesh: jax.sharding.Mesh,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    stop_token_ids: Sequence[int] = (),
    pad_id: int = 0,
    temperature: float = 0.0,
    seed: int = 0,
    rules: LogicalRules | None = None,
) -> list[list[int]]:
    """Continue each prompt (a list of token ids) until a stop token or `max_new_tokens`.

    Returns the new tokens of each row, the stop token included when one was produced.
    Temperature 0 is greedy; otherwise row i draws from a stream fixed by `seed` (the same call
    with the same seed samples the same tokens). `rules`: the logical-axis rules the model was
    sharded with (default: the rules active around the call).
    """
    out = decode_prompts(model, mesh, prompts, max_new_tokens, stop_token_ids, pad_id,
                         temperature, seed, rules)
    return [out.row_tokens(i) for i in range(len(prompts))]
