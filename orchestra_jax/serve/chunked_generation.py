"""One reply generated as a series of short batcher calls, so that a request can leave its batch.

Why: the sampler runs a whole decode loop per call and cannot drop a row half way. Handed a
200-token request in one piece, it keeps generating it after the client has gone, and every
request that arrives meanwhile waits for that batch to end. Here a reply of up to
`max_new_tokens` is produced in chunks of at most `chunk_tokens` tokens: each chunk is one
`batcher.generate` call that continues the prompt plus everything generated so far. Between
chunks the request is an ordinary `await`: when the server cancels the request of a client that
disconnected, the loop ends and its row is not in the next batch, while the other rows resubmit
and new requests join them in the freed slots.

What chunking costs and changes:

- The sampler keeps no KV cache between calls, so each chunk prefills prompt + generated text
  again. On an accelerator a prefill costs about one decode step; on a CPU it is dearer, which
  is why the chunk length is a setting (0 or a length >= `max_new_tokens`: one call, as before).
- A stop sequence that straddles two chunks is invisible to the device (its window starts
  empty in every call); it is found here, on the host, and the reply is cut right after it.
- A seeded request keeps its seed for the first chunk, so a reply that fits one chunk is the
  one an unchunked call gives; later chunks use seeds derived from (seed, chunk index), so the
  reply stays reproducible and no chunk repeats another's noise.
- A greedy reply longer than one chunk may differ from an unchunked one where two logits tie
  within float error (prefill and decode round differently).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from orchestra_jax.rollout.requests import GenerationRequest, GenerationResult, SamplingParams
from orchestra_jax.seeding import derive_seed


def chunk_seed(seed: int | None, chunk: int) -> int | None:
    """The seed of chunk `chunk` of a request seeded with `seed` (chunk 0 keeps it, so a
    one-chunk reply is the unchunked one); the project's one derivation, `derive_seed`."""
    if seed is None or chunk == 0:
        return seed
    return derive_seed(seed, chunk, bits=32)


def straddling_stop(token_ids: Sequence[int], start: int,
                    stop_sequences: Sequence[Sequence[int]]) -> int | None:
    """Where to cut `token_ids` after the earliest stop sequence that begins before `start`
    (the first token of the latest chunk) and ends inside that chunk; None when there is none.
    Sequences wholly inside the chunk are the device's job and already ended it."""
    best = None
    for seq in stop_sequences:
        n = len(seq)
        for end in range(max(start + 1, n), min(start + n, len(token_ids) + 1)):
            if list(token_ids[end - n:end]) == list(seq):
                best = end if best is None else min(best, end)
                break
    return best


@dataclasses.dataclass
class ChunkedGeneration:
    """The progress of one request; `run` drives it to the end, chunk by chunk.

    `token_ids` and `chunks` say how far it got, also after a cancellation (for the server's
    accounting). `chunk_tokens` 0 means one call for the whole reply.
    """

    request: GenerationRequest
    chunk_tokens: int = 0
    token_ids: list[int] = dataclasses.field(default_factory=list)
    logprobs: list[float] = dataclasses.field(default_factory=list)
    chunks: int = 0

    def __post_init__(self) -> None:
        if self.chunk_tokens < 0:
            raise ValueError(f"chunk_tokens must be >= 0, got {self.chunk_tokens}")

    def _next_request(self, remaining: int) -> GenerationRequest:
        params: SamplingParams = self.request.params
        n = remaining if not self.chunk_tokens else min(self.chunk_tokens, remaining)
        chunk_params = dataclasses.replace(params, max_new_tokens=n,
                                           seed=chunk_seed(params.seed, self.chunks))
        return GenerationRequest(prompt_ids=[*self.request.prompt_ids, *self.token_ids],
                                 params=chunk_params)

    async def run(self, batcher: Any) -> GenerationResult:
        """Generate until a stop or `max_new_tokens`; cancellation stops between chunks."""
        params = self.request.params
        finish, version = "length", 0
        while len(self.token_ids) < params.max_new_tokens:
            result = await batcher.generate(
                self._next_request(params.max_new_tokens - len(self.token_ids)))
            start = len(self.token_ids)
            self.token_ids.extend(result.token_ids)
            self.logprobs.extend(result.logprobs)
            self.chunks += 1
            version = result.params_version
            if result.finish_reason == "stop" or not result.token_ids:
                finish = "stop"
                break
            cut = straddling_stop(self.token_ids, start, params.stop_sequences)
            if cut is not None:
                del self.token_ids[cut:], self.logprobs[cut:]
                finish = "stop"
                break
        return GenerationResult(token_ids=list(self.token_ids), logprobs=list(self.logprobs),
                                finish_reason=finish, params_version=version,
                                prompt_tokens=len(self.request.prompt_ids))
