"""The messages between episodes and the generator: what to sample, and what came back.

Plain host dataclasses (no jax), so episodes, the batcher, `orchestra serve` and tests share them
without pulling in the sampler.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SamplingParams:
    """How to continue one prompt.

    `temperature` 0 is greedy. `top_k` 0 and `top_p` 1 switch those filters off. A row stops at
    any of the tokenizer's stop tokens, at `stop_token_ids`, or right after any of the token-id
    sequences in `stop_sequences` (the end of a tool call, say); the stop token or sequence is
    part of the returned tokens. `seed` None draws from the generator's own stream.
    """

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop_token_ids: tuple[int, ...] = ()
    stop_sequences: tuple[tuple[int, ...], ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if self.seed is not None and not 0 <= self.seed < 2**64:
            raise ValueError(f"seed must lie in [0, 2**64), got {self.seed}")
        if any(len(s) == 0 for s in self.stop_sequences):
            raise ValueError("stop_sequences may not contain an empty sequence")


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
