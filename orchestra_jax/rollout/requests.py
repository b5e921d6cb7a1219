"""The messages between episodes and the generator: what to sample, and what came back.

Plain host dataclasses, so episodes, the batcher, `orchestra serve` and tests share them.
`SamplingParams` is the generation path's own (`orchestra_jax.models.sampling`), re-exported
here where scripts import it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from orchestra_jax.models.sampling import SamplingParams


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt (token ids) and how to continue it."""

    prompt_ids: Sequence[int]
    params: SamplingParams = field(default_factory=SamplingParams)

    def __post_init__(self) -> None:
        if len(self.prompt_ids) == 0:
            raise ValueError("a generation request needs a non-empty prompt")


@dataclass(frozen=True)
class GenerationResult:
    """The sampled continuation of one request.

    `logprobs[i]` is log p(token_ids[i]) under the policy's distribution at the request's
    temperature (temperature 1 when greedy), before top-k/top-p truncation: the "old policy"
    log-probs the learner recomputes. `finish_reason` is "stop" (a stop token or sequence) or
    "length". `params_version` names the parameters that produced it.
    """

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str
    params_version: int = 0
    prompt_tokens: int = 0

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)


__all__ = ["GenerationRequest", "GenerationResult", "SamplingParams"]
