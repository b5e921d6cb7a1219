"""Batched generation on the device: one compiled program per bucket runs prefill and the whole
decode loop. The one generation path of the house: `LanguageModel.generate` / `generate_tokens`
(models/) and the rollout `Sampler` (rollout/) both run `DecodeEngine`.

Why it looks like this:

- **The decode loop runs on the device** (`lax.while_loop`), not in Python: no host round trip
  per token, and the loop exits as soon as every row has stopped, so a batch costs the longest
  row, not `max_new_tokens`.
- **Fixed-shape buckets** for batch size, prompt length and new tokens: a long run with prompts
  of every length compiles a handful of programs, not one per step. Filler rows and left
  padding fill the bucket; filler rows start finished and cost nothing but their matmul rows.
- **Per-row sampling** (temperature, top-k, top-p, stop tokens, stop sequences, seed): requests
  from different callers share a batch. Each row draws its noise from its own key, so a seeded
  row gives the same tokens whatever batch it lands in. The top-k/top-p filters are compiled
  in only when some row asks for them (the full-vocabulary sort of top-p is not free).
- **Log-probs for the learner**: `log softmax(logits / T)` of each sampled token, before the
  top-k/top-p truncation -- the "old policy" log-probs that the learner recomputes from the same
  logits (T = 1 when the row is greedy).
- Sharded like the model: batch over `data` x `fsdp`, heads over `tensor` (the cache follows
  its logical axes), parameters where they already live.
- **Parameters are an argument, not a member**: the engine owns the compiled programs and the
  noise stream; whoever calls it owns the weights (the rollout sampler swaps them after every
  update; a `LanguageModel` passes its module's current state), so a cached engine never pins a
  model in memory.

The engine's per-row settings are `SamplingParams`, which lives here so that `models` owns the
whole generation path; `orchestra_jax.rollout.requests` re-exports it for episodes, the
batcher and `orchestra serve`.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from orchestra_jax.models.config import dtype_from_name
from orchestra_jax.models.decoder import Decoder
from orchestra_jax.models.kv_cache import KVCache
from orchestra_jax.sharding.rules import (
    LogicalRules,
    logical_rules,
    logical_to_spec,
    tree_shardings,
)


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """How to continue one prompt.

    `temperature` 0 is greedy. `top_k` 0 and `top_p` 1 switch those filters off. A row stops at
    any of the tokenizer's stop tokens, at `stop_token_ids`, or right after any of the token-id
    sequences in `stop_sequences` (the end of a tool call, say); the stop token or sequence is
    part of the returned tokens. `seed` None draws from the generator's own stream.
    (`orchestra_jax.rollout.requests.SamplingParams` is this class.)
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


#: Added to the logits of tokens a top-k/top-p filter removes.
_FILTERED = -1e30


def _powers_of_two(lo: int, hi: int) -> tuple[int, ...]:
    return tuple(2**i for i in range(int(math.log2(lo)), int(math.log2(hi)) + 1))


@dataclasses.dataclass(frozen=True)
class SamplerBuckets:
    """The shapes programs are compiled for; a request is rounded up to the next one."""

    #: Small batches share the 8-row program: decoding is bound by reading the weights, so a
    #: few idle rows cost little, and every extra program costs a compilation.
    batch_sizes: tuple[int, ...] = (1, 8, 16, 32, 64, 128, 256, 512)
    prompt_lengths: tuple[int, ...] = _powers_of_two(64, 131072)
    #: Only the cache length depends on this bucket (the loop exits when every row is done),
    #: so it grows by 4x.
    new_tokens: tuple[int, ...] = tuple(4**i for i in range(3, 9))
    #: Stop sequences per row and tokens per stop sequence (rounded up to powers of two).
    max_stop_sequences: int = 8
    max_stop_sequence_length: int = 16
    #: The prompt is prefilled in chunks of this many tokens, starting at the first chunk
    #: that holds a real token: a prompt bucket only sizes the cache, and a 38-token prompt
    #: in the 64 bucket costs 48 tokens of prefill, not 64. Divides every prompt bucket.
    prefill_chunk: int = 16

    def __post_init__(self) -> None:
        if any(length % self.prefill_chunk for length in self.prompt_lengths):
            raise ValueError(
                f"prefill_chunk {self.prefill_chunk} must divide every prompt bucket "
                f"{self.prompt_lengths}"
            )

    @staticmethod
    def pick(sizes: Sequence[int], n: int, what: str) -> int:
        for size in sizes:
            if size >= n:
                return size
        raise ValueError(f"{what} {n} exceeds the largest bucket {max(sizes)}")


def _next_power_of_two(n: int) -> int:
    return 1 if n <= 1 else 2 ** math.ceil(math.log2(n))


@dataclasses.dataclass(frozen=True)
class _Shape:
    """Everything a compiled program depends on."""

    batch: int
    prompt_len: int
    new_tokens: int
    stop_ids: int  # per-row stop-token slots
    stop_seqs: int  # per-row stop-sequence slots (0: no stop-sequence check compiled)
    stop_len: int  # tokens per stop-sequence slot
    top_k: int  # largest top-k compiled (0: no top-k filter)
    top_p: bool  # a top-p filter compiled
    sampling: bool  # some row samples (all-greedy batches draw no noise)
    chunk: int  # prefill chunk length


def _filter_logits(scaled_bv, top_k_b, top_p_b, shape: _Shape):
    """Mask the scaled logits outside each row's top-k and top-p sets (ties at the edge kept)."""
    if shape.top_k:
        # Only the largest `shape.top_k` logits can survive: sort those alone.
        values_bk, _ = jax.lax.top_k(scaled_bv, shape.top_k)
        k_b = jnp.where(top_k_b > 0, jnp.minimum(top_k_b, shape.top_k), shape.top_k)
        threshold_b = jnp.take_along_axis(values_bk, (k_b - 1)[:, None], axis=1)[:, 0]
        active_b = top_k_b > 0
        scaled_bv = jnp.where(
            active_b[:, None] & (scaled_bv < threshold_b[:, None]), _FILTERED, scaled_bv
        )
        if shape.top_p:
            # Rows without a top-k still need their top-p over the whole vocabulary.
            sorted_bv = jnp.where(
                active_b[:, None],
                jnp.pad(values_bk, ((0, 0), (0, scaled_bv.shape[1] - shape.top_k)),
                        constant_values=_FILTERED),
                -jnp.sort(-scaled_bv, axis=-1),
            )
    elif shape.top_p:
        sorted_bv = -jnp.sort(-scaled_bv, axis=-1)
    if shape.top_p:
        probs_bv = jax.nn.softmax(sorted_bv, axis=-1)
        before_bv = jnp.cumsum(probs_bv, axis=-1) - probs_bv  # mass strictly above each token
        keep_bv = before_bv < top_p_b[:, None]
        # The smallest logit kept; the first token is always kept.
        threshold_b = jnp.min(jnp.where(keep_bv, sorted_bv, jnp.inf), axis=-1)
        scaled_bv = jnp.where(scaled_bv < threshold_b[:, None], _FILTERED, scaled_bv)
    return scaled_bv


def _choose(logits_bv, row, step, shape: _Shape):
    """Sample (or argmax) one token per row; return it with its log-prob at the row's T."""
    temperature_b = row["temperature"]
    greedy_b = temperature_b <= 0
    scaled_bv = logits_bv / jnp.where(greedy_b, 1.0, temperature_b)[:, None]
    log_probs_bv = jax.nn.log_softmax(scaled_bv, axis=-1)
    token_b = jnp.argmax(logits_bv, axis=-1).astype(jnp.int32)
    if shape.sampling:
        filtered_bv = _filter_logits(scaled_bv, row["top_k"], row["top_p"], shape)
        step_keys = jax.vmap(lambda k: jax.random.fold_in(k, step))(row["key"])
        gumbel_bv = jax.vmap(lambda k: jax.random.gumbel(k, logits_bv.shape[1:], jnp.float32))(
            step_keys
        )
        sampled_b = jnp.argmax(filtered_bv + gumbel_bv, axis=-1).astype(jnp.int32)
        token_b = jnp.where(greedy_b, token_b, sampled_b)
    logp_b = jnp.take_along_axis(log_probs_bv, token_b[:, None], axis=1)[:, 0]
    return token_b, logp_b


def _stopped(token_b, window_bl, row, shape: _Shape):
    """True where this token ends the row: a stop token, or the end of a stop sequence."""
    hit_b = jnp.any(token_b[:, None] == row["stop_ids"], axis=-1)
    if shape.stop_seqs:
        seqs_bsl = row["stop_seqs"]  # right-aligned, -1 = no token (matches anything)
        match_bs = jnp.all((seqs_bsl < 0) | (seqs_bsl == window_bl[:, None, :]), axis=-1)
        has_any_bs = jnp.any(seqs_bsl >= 0, axis=-1)
        hit_b = hit_b | jnp.any(match_bs & has_any_bs, axis=-1)
    return hit_b


def _generate_program(graphdef: nnx.GraphDef, shape: _Shape, cache_shardings: Any):
    """prefill + on-device decode loop for one bucket shape."""

    def run(state, ids_bt, mask_bt, first_slot, row):
        model = nnx.merge(graphdef, state)
        cache = KVCache.init(model.config, shape.batch, shape.prompt_len + shape.new_tokens)
        cache = jax.lax.with_sharding_constraint(cache, cache_shardings)
        # Chunked prefill from the first chunk holding a real token; the slots before it stay
        # empty (masked) in the cache.
        c = shape.chunk
        cache = dataclasses.replace(cache, end=first_slot)

        def prefill_chunk(i, carry):
            cache, _ = carry
            ids_bc = jax.lax.dynamic_slice_in_dim(ids_bt, i * c, c, axis=1)
            mask_bc = jax.lax.dynamic_slice_in_dim(mask_bt, i * c, c, axis=1)
            hidden_bcd, cache = model.hidden_states(ids_bc, mask_bc, cache=cache)
            return cache, hidden_bcd[:, -1]

        compute_dtype = dtype_from_name(model.config.dtype)
        last_bd = jnp.zeros((shape.batch, model.config.hidden_size), compute_dtype)
        cache, last_bd = jax.lax.fori_loop(
            first_slot // c, shape.prompt_len // c, prefill_chunk, (cache, last_bd)
        )
        first_logits_bv = model.logits_from_hidden(last_bd[:, None])[:, 0]
        n = shape.new_tokens
        tokens_bn = jnp.zeros((shape.batch, n), jnp.int32)
        logps_bn = jnp.zeros((shape.batch, n), jnp.float32)
        window_bl = jnp.full((shape.batch, max(shape.stop_len, 1)), -2, jnp.int32)
        done_b = row["max_new"] <= 0  # filler rows start finished
        length_b = jnp.zeros((shape.batch,), jnp.int32)
        stop_b = jnp.zeros((shape.batch,), bool)

        def record(i, logits_bv, carry):
            tokens_bn, logps_bn, window_bl, done_b, length_b, stop_b = carry
            token_b, logp_b = _choose(logits_bv, row, i, shape)
            live_b = ~done_b
            tokens_bn = tokens_bn.at[:, i].set(jnp.where(live_b, token_b, 0))
            logps_bn = logps_bn.at[:, i].set(jnp.where(live_b, logp_b, 0.0))
            window_bl = jnp.concatenate([window_bl[:, 1:], token_b[:, None]], axis=1)
            hit_b = _stopped(token_b, window_bl, row, shape) & live_b
            length_b = length_b + live_b.astype(jnp.int32)
            stop_b = stop_b | hit_b
            done_b = done_b | hit_b | (length_b >= row["max_new"])
            return token_b, (tokens_bn, logps_bn, window_bl, done_b, length_b, stop_b)

        token_b, carry = record(
            0, first_logits_bv, (tokens_bn, logps_bn, window_bl, done_b, length_b, stop_b)
        )
        ones_b1 = jnp.ones((shape.batch, 1), jnp.int32)

        def cond(loop):
            i, _, _, carry = loop
            return (i < n) & ~jnp.all(carry[3])

        def body(loop):
            i, token_b, cache, carry = loop
            step = model(token_b[:, None], ones_b1, cache=cache)
            token_b, carry = record(i, step.logits[:, 0], carry)
            return i + 1, token_b, step.cache, carry

        steps, _, _, carry = jax.lax.while_loop(
            cond, body, (jnp.int32(1), token_b, cache, carry)
        )
        tokens_bn, logps_bn, _, _, length_b, stop_b = carry
        return tokens_bn, logps_bn, length_b, stop_b, steps

    return run


@jax.jit
def _derive_row_keys(base_key_data, seeded_b, seed_lo_b, seed_hi_b, counter_b):
    """A seeded row's key is key(seed) (its bits above 32 folded in, so large seeds stay
    distinct); an unseeded row's is the sampler's stream key folded with a request counter."""
    base = jax.random.wrap_key_data(base_key_data)

    def one(seeded, lo, hi, counter):
        from_seed = jax.random.key_data(jax.random.key(lo))
        from_seed = jnp.where(hi > 0, jax.random.key_data(
            jax.random.fold_in(jax.random.wrap_key_data(from_seed), hi)), from_seed)
        from_stream = jax.random.key_data(jax.random.fold_in(base, counter))
        return jnp.where(seeded, from_seed, from_stream)

    return jax.vmap(one)(seeded_b, seed_lo_b, seed_hi_b, counter_b)


@dataclasses.dataclass(frozen=True)
class DecodeOutput:
    """What one `DecodeEngine.decode` call produced, on the host, one row per prompt.

    Row i's new tokens are `token_ids[i, :lengths[i]]` (a stop token or sequence included) and
    their log-probs `logprobs[i, :lengths[i]]`; `stopped[i]` says a stop ended the row (else
    it ran out of `max_new_tokens`); `steps` is how many tokens the loop ran for the batch.
    """

    token_ids: np.ndarray  # (rows, N) int32
    logprobs: np.ndarray  # (rows, N) float32
    lengths: np.ndarray  # (rows,) int32
    stopped: np.ndarray  # (rows,) bool
    steps: int

    def row_tokens(self, i: int) -> list[int]:
        return self.token_ids[i, : int(self.lengths[i])].tolist()


class DecodeEngine:
    """Bucketed, sharded generation programs for one model structure; see the module docstring.

    `decode` is thread-safe (one generation at a time). Parameters come with each call and
    must keep the structure, dtypes and shardings of the model the engine was built from.
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
        self.config = model.config
        self.mesh = mesh
        self.rules = dict(rules or {})
        self.pad_id = int(pad_id)
        self.stop_token_ids = tuple(int(t) for t in stop_token_ids)
        self.buckets = buckets or SamplerBuckets()
        self.graphdef, _ = nnx.split(model)
        self._programs: dict[_Shape, Any] = {}
        self._lock = threading.Lock()
        self._base_key = jax.random.key(seed)
        self._requests_seen = 0
        self.compile_seconds = 0.0
        #: Tokens the last call's loop generated per row (it stops when every row is done).
        self.last_steps = 0
        shards = int(np.prod([mesh.shape[a] for a in ("data", "fsdp")]))
        self._batch_multiple = shards

    def compile_count(self) -> int:
        """How many generation programs have been compiled so far (one per bucket shape)."""
        return len(self._programs)

    def decode(
        self,
        state: nnx.State,
        prompts: Sequence[Sequence[int]],
        rows: Sequence[SamplingParams],
        *,
        stream_seed: int | None = None,
    ) -> DecodeOutput:
        """Continue each prompt (token ids) under its row's settings, with parameters `state`.

        Unseeded rows draw their noise from the engine's own stream (a new stretch of it every
        call), or, given `stream_seed`, from a stream that restarts at `stream_seed` each call
        (the same call then samples the same tokens).
        """
        if not prompts:
            raise ValueError("decode needs at least one prompt")
        for i, prompt in enumerate(prompts):
            if len(prompt) == 0:
                raise ValueError(f"prompt {i} is empty")
        rows = list(rows)
        if len(rows) != len(prompts):
            raise ValueError(f"got {len(rows)} row settings for {len(prompts)} prompts")
        shape = self._shape_for(prompts, rows)
        ids, mask, first_slot, row = self._host_inputs(prompts, rows, shape, stream_seed)
        with self._lock:
            program = self._program(shape, state)
            with jax.set_mesh(self.mesh), logical_rules(self.rules):
                outputs = program(state, *self._put(ids, mask, first_slot, row, shape))
            tokens, logps, lengths, stopped, steps = jax.device_get(outputs)
            self.last_steps = int(steps)
        n = len(prompts)
        return DecodeOutput(token_ids=tokens[:n], logprobs=logps[:n], lengths=lengths[:n],
                            stopped=stopped[:n], steps=int(steps))

    def _shape_for(self, prompts, row_params: list[SamplingParams]) -> _Shape:
        b = self.buckets
        batch = SamplerBuckets.pick(b.batch_sizes, len(prompts), "batch size")
        batch = -(-batch // self._batch_multiple) * self._batch_multiple
        prompt_len = SamplerBuckets.pick(
            b.prompt_lengths, max(len(p) for p in prompts), "prompt length"
        )
        new_tokens = SamplerBuckets.pick(
            b.new_tokens, max(p.max_new_tokens for p in row_params), "max_new_tokens"
        )
        longest = max(len(p) for p in prompts) + max(p.max_new_tokens for p in row_params)
        if longest > self.config.max_position_embeddings:
            raise ValueError(
                f"prompt + max_new_tokens = {longest} tokens exceeds the model's context of "
                f"{self.config.max_position_embeddings} tokens"
            )
        stop_ids = _next_power_of_two(
            len(self.stop_token_ids) + max(len(p.stop_token_ids) for p in row_params)
        )
        n_seqs = max(len(p.stop_sequences) for p in row_params)
        seq_len = max((len(s) for p in row_params for s in p.stop_sequences), default=0)
        if n_seqs > b.max_stop_sequences or seq_len > b.max_stop_sequence_length:
            raise ValueError(
                f"at most {b.max_stop_sequences} stop sequences of at most "
                f"{b.max_stop_sequence_length} tokens per request (got {n_seqs} / {seq_len})"
            )
        top_k = max(p.top_k for p in row_params)
        return _Shape(
            batch=batch,
            prompt_len=prompt_len,
            new_tokens=new_tokens,
            stop_ids=stop_ids,
            stop_seqs=_next_power_of_two(n_seqs) if n_seqs else 0,
            stop_len=_next_power_of_two(seq_len) if n_seqs else 0,
            top_k=min(_next_power_of_two(top_k), self.config.vocab_size) if top_k else 0,
            top_p=any(p.top_p < 1.0 for p in row_params),
            sampling=any(p.temperature > 0 for p in row_params),
            chunk=b.prefill_chunk,
        )

    def _row_keys(self, rows: list[SamplingParams], stream_seed: int | None) -> np.ndarray:
        """Key data of every row, derived in one jitted call (not one tiny op per row)."""
        seeded = np.array([p.seed is not None for p in rows])
        seeds = np.array([p.seed or 0 for p in rows], np.uint64)
        counters = np.zeros(len(rows), np.uint32)
        if stream_seed is None:
            base_key = self._base_key
            counters[~seeded] = self._requests_seen + 1 + np.arange(int((~seeded).sum()))
            self._requests_seen += int((~seeded).sum())
        else:
            base_key = jax.random.key(stream_seed)
            counters[~seeded] = 1 + np.arange(int((~seeded).sum()))
        return np.asarray(_derive_row_keys(
            jax.random.key_data(base_key), seeded,
            (seeds & 0xFFFFFFFF).astype(np.uint32), (seeds >> 32).astype(np.uint32), counters))

    def _host_inputs(self, prompts, row_params: list[SamplingParams], shape: _Shape,
                     stream_seed: int | None = None):
        b, t = shape.batch, shape.prompt_len
        ids = np.full((b, t), self.pad_id, np.int32)
        mask = np.zeros((b, t), np.int32)
        ids[:, -1] = self.pad_id
        mask[:, -1] = 1  # filler rows hold one token so no row is all padding
        for i, prompt in enumerate(prompts):
            ids[i, t - len(prompt):] = prompt
            mask[i, t - len(prompt):] = 1
        n = len(prompts)
        longest = max(len(p) for p in prompts)
        first_slot = np.int32(t - -(-longest // shape.chunk) * shape.chunk)
        filler = SamplingParams(max_new_tokens=1, temperature=0.0)
        rows = row_params + [filler] * (b - n)
        stop_ids = np.full((b, shape.stop_ids), -1, np.int32)
        stop_seqs = np.full((b, max(shape.stop_seqs, 1), max(shape.stop_len, 1)), -1, np.int32)
        for i, p in enumerate(rows):
            ids_i = self.stop_token_ids + tuple(p.stop_token_ids)
            stop_ids[i, : len(ids_i)] = ids_i
            for s, seq in enumerate(p.stop_sequences):
                stop_seqs[i, s, shape.stop_len - len(seq):] = seq
        row = {
            "temperature": np.array([p.temperature for p in rows], np.float32),
            "top_k": np.array([p.top_k for p in rows], np.int32),
            "top_p": np.array([p.top_p for p in rows], np.float32),
            "max_new": np.array([p.max_new_tokens for p in row_params] + [0] * (b - n), np.int32),
            "stop_ids": stop_ids,
            "stop_seqs": stop_seqs,
            "key": self._row_keys(rows, stream_seed),
        }
        return ids, mask, first_slot, row

    def _row_shardings(self, shape: _Shape) -> dict[str, jax.NamedSharding]:
        def batch_major(ndim: int) -> jax.NamedSharding:
            spec = logical_to_spec(("batch",) + (None,) * (ndim - 1), None, self.mesh, self.rules)
            return jax.NamedSharding(self.mesh, spec)

        return {"temperature": batch_major(1), "top_k": batch_major(1), "top_p": batch_major(1),
                "max_new": batch_major(1), "stop_ids": batch_major(2), "stop_seqs": batch_major(3),
                "key": batch_major(2)}

    def _put(self, ids, mask, first_slot, row, shape: _Shape):
        batch = jax.NamedSharding(
            self.mesh, logical_to_spec(("batch", "length"), None, self.mesh, self.rules)
        )
        shardings = self._row_shardings(shape)
        row = {k: jax.device_put(v, shardings[k]) for k, v in row.items()}
        replicated = jax.NamedSharding(self.mesh, jax.P())
        return (jax.device_put(ids, batch), jax.device_put(mask, batch),
                jax.device_put(first_slot, replicated), row)

    def _program(self, shape: _Shape, state: nnx.State):
        program = self._programs.get(shape)
        if program is not None:
            return program
        start = time.perf_counter()
        config = self.config
        cache_shape = jax.eval_shape(
            lambda: KVCache.init(config, shape.batch, shape.prompt_len + shape.new_tokens)
        )
        with jax.set_mesh(self.mesh), logical_rules(self.rules):
            cache_shardings = tree_shardings(
                cache_shape.logical_axes(), cache_shape, self.mesh, self.rules
            )
            run = _generate_program(self.graphdef, shape, cache_shardings)

            def with_keys(state, ids, mask, first_slot, row):
                row = dict(row, key=jax.random.wrap_key_data(row["key"]))
                return run(state, ids, mask, first_slot, row)

            abstract = self._abstract_inputs(shape, state)
            program = jax.jit(with_keys).lower(*abstract).compile()
        self.compile_seconds += time.perf_counter() - start
        self._programs[shape] = program
        return program

    def _abstract_inputs(self, shape: _Shape, state: nnx.State):
        """Shapes, dtypes and shardings of a call's inputs, for ahead-of-time compilation."""

        def abstract(x):
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)

        host = self._host_inputs([[self.pad_id]], [SamplingParams(max_new_tokens=1)], shape)
        return jax.tree.map(abstract, (state, *self._put(*host, shape)))
