"""The rollout sampler: the generation engine of `models.sampling`, with requests and params.

The compiled work -- one program per bucket shape running prefill and the whole decode loop on
the device, per-row sampling, stop tokens and sequences, log-probs for the learner -- is
`orchestra_jax.models.sampling.DecodeEngine`, the same engine `LanguageModel.generate` runs
(see that module for why it looks like it does). What the rollout side adds here:

- **Parameters that change under it.** The learner hands the sampler new parameters after
  every update (`update_params`, collocated: no copy); each result is stamped with the version
  that produced it, and a swap waits for the generation in flight.
- **The request types of the rollout room**: `SamplingParams` in, `GenerationResult` out.
- **Thread safety** for the batcher, which calls `sample` from its worker thread while the
  event loop runs tools.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import jax
from flax import nnx

from orchestra_jax.models.decoder import Decoder
from orchestra_jax.models.sampling import DecodeEngine, SamplerBuckets
from orchestra_jax.rollout.requests import GenerationResult, SamplingParams
from orchestra_jax.sharding.multihost import params_to_local
from orchestra_jax.sharding.rules import LogicalRules

__all__ = ["Sampler", "SamplerBuckets"]

_DEFAULT_PARAMS = SamplingParams()


def _request_params(params: SamplingParams | Sequence[SamplingParams], n: int):
    if isinstance(params, SamplingParams):
        return [params] * n
    params = list(params)
    if len(params) != n:
        raise ValueError(f"got {len(params)} SamplingParams for {n} prompts")
    return params


class Sampler:
    """Batched, bucketed, sharded generation with a KV cache over changing policy parameters.

    `sample` is synchronous and thread-safe (one generation at a time): the batcher calls it
    from its worker thread while the event loop runs tools.
    """

    def __init__(
        self,
        model: Decoder,
        mesh: jax.sharding.Mesh,
        *,
        rules: LogicalRules | None = None,
        pad_id: int = 0,
        stop_token_ids: Sequence[int] = (),
        buckets: SamplerBuckets | None = None,
        seed: int = 0,
    ):
        self.engine = DecodeEngine(model, mesh, rules=rules, pad_id=pad_id,
                                   stop_token_ids=stop_token_ids, buckets=buckets, seed=seed)
        self.config = self.engine.config
        self.mesh = mesh
        self.rules = self.engine.rules
        self.pad_id = self.engine.pad_id
        self.stop_token_ids = self.engine.stop_token_ids
        self.buckets = self.engine.buckets
        _, state = nnx.split(model)
        self._state = params_to_local(state, mesh)
        self.params_version = 0
        self._lock = threading.Lock()

    @property
    def compile_seconds(self) -> float:
        """Seconds spent compiling generation programs so far."""
        return self.engine.compile_seconds

    @property
    def last_steps(self) -> int:
        """Tokens the last call's loop generated per row (it stops when every row is done)."""
        return self.engine.last_steps

    # ---- parameters -------------------------------------------------------------------------

    def update_params(self, state: nnx.State, version: int) -> None:
        """Use new policy parameters (same structure) for every later `sample` call.

        Parameters on this sampler's mesh are used as they are (collocated: no copy). In a
        multi-process run the sampler works on this host's devices alone, and parameters
        sharded over every host's are first gathered onto them: a collective, so every
        process calls this at the same point."""
        state = params_to_local(state, self.mesh)
        with self._lock:
            self._state = state
            self.params_version = int(version)

    def compile_count(self) -> int:
        """How many generation programs have been compiled so far (one per bucket shape)."""
        return self.engine.compile_count()

    # ---- sampling ---------------------------------------------------------------------------

    def sample(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams | Sequence[SamplingParams] = _DEFAULT_PARAMS,
    ) -> list[GenerationResult]:
        """Continue each prompt (token ids); one result per prompt, in order."""
        if not prompts:
            return []
        for i, prompt in enumerate(prompts):
            if len(prompt) == 0:
                raise ValueError(f"prompt {i} is empty")
        row_params = _request_params(params, len(prompts))
        with self._lock:
            state, version = self._state, self.params_version
            out = self.engine.decode(state, prompts, row_params)
        return [
            GenerationResult(
                token_ids=out.row_tokens(i),
                logprobs=out.logprobs[i, : int(out.lengths[i])].tolist(),
                finish_reason="stop" if out.stopped[i] else "length",
                params_version=version,
                prompt_tokens=len(prompt),
            )
            for i, prompt in enumerate(prompts)
        ]
