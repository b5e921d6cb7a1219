"""Training batches: host-side packing of trajectories into padded buckets, one device_put.

Alignment convention: every ``(B, T)`` array is indexed by the *predicted* token. At position
``t``, ``loss_mask[b, t] = 1`` says token ``input_ids[b, t]`` was sampled by the policy and
``old_logprobs[b, t]`` is the sampler's log-probability of that token given ``input_ids[b, :t]``.
The update step computes its own log-prob of ``input_ids[b, t]`` from the logits at ``t - 1``,
so position 0 can never be in the loss. Keeping the sampler's arrays unshifted on the host means
a trajectory's token ids, mask and log-probs are simply concatenated and padded, nothing more.

Rows are right-padded to a bucket length (few distinct shapes, few recompiles) and the row count
is padded to a multiple of the batch shards with empty rows (mask all zero: they count nowhere).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from orchestra_jax.rollout.trajectory import TokenSequence
from orchestra_jax.sharding.rules import LogicalRules, logical_to_spec

DEFAULT_BUCKETS = (128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TrainBatch:
    """Arrays of one update step. ``advantages`` is ``(B,)`` (one per sample) or ``(B, T)``;
    ``returns`` and ``old_values`` are the PPO critic's targets and the values at sampling time
    (``None`` for GRPO). On the host the fields are numpy arrays; after ``put_batch`` they are
    sharded ``jax.Array``s (the class is a pytree)."""

    input_ids: Any
    attention_mask: Any
    loss_mask: Any
    old_logprobs: Any
    advantages: Any
    returns: Any = None
    old_values: Any = None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.input_ids.shape)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field whose shape disagrees with ``input_ids``."""
        b, t = self.input_ids.shape
        for name in ("attention_mask", "loss_mask", "old_logprobs", "returns", "old_values"):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != (b, t):
                raise ValueError(f"TrainBatch.{name} has shape {tuple(value.shape)}, "
                                 f"expected {(b, t)}")
        if tuple(self.advantages.shape) not in ((b,), (b, t)):
            raise ValueError(f"TrainBatch.advantages has shape {tuple(self.advantages.shape)}, "
                             f"expected {(b,)} or {(b, t)}")
        if (self.returns is None) != (self.old_values is None):
            raise ValueError("TrainBatch.returns and old_values must be given together")


def _bucket(length: int, buckets: Sequence[int], index: int) -> int:
    for size in sorted(buckets):
        if size >= length:
            return size
    raise ValueError(f"sample {index} has {length} tokens, longer than the largest bucket "
                     f"{max(buckets)}")


def _checked_rows(samples: Sequence[TokenSequence]) -> list[TokenSequence]:
    """The samples as 1-D numpy arrays; ValueError naming the first bad one."""
    rows = []
    for i, sample in enumerate(samples):
        if not isinstance(sample, TokenSequence):
            raise ValueError(f"sample {i} must be a TokenSequence (token_ids, loss_mask, "
                             f"logprobs), got {type(sample).__name__}")
        ids, mask, logp = (np.asarray(part) for part in (sample.token_ids, sample.loss_mask,
                                                         sample.logprobs))
        if not (ids.ndim == mask.ndim == logp.ndim == 1) or not (
                len(ids) == len(mask) == len(logp)):
            raise ValueError(f"sample {i}: token_ids, loss_mask and logprobs must be 1-D of one "
                             f"length, got {ids.shape}, {mask.shape}, {logp.shape}")
        if len(ids) == 0:
            raise ValueError(f"sample {i} is empty")
        if mask[0]:
            raise ValueError(f"sample {i}: the first token cannot be in the loss (nothing "
                             f"predicts it)")
        if not np.all(np.isfinite(logp[mask != 0])):
            raise ValueError(f"sample {i} has a non-finite log-prob on a loss token")
        rows.append(TokenSequence(ids, mask, logp))
    return rows


def _per_token(name: str, values: Sequence[Sequence[float]] | None,
               rows: Sequence[TokenSequence], b: int, length: int) -> np.ndarray | None:
    if values is None:
        return None
    out = np.zeros((b, length), np.float32)
    for i, row in enumerate(values):
        row = np.asarray(row, np.float32)
        if row.shape != (len(rows[i]),):
            raise ValueError(f"{name} of sample {i} has shape {row.shape}, expected "
                             f"({len(rows[i])},)")
        out[i, : len(row)] = row
    return out


def _packed_length(rows: Sequence[TokenSequence], buckets: Sequence[int],
                   seq_len: int | None) -> int:
    if seq_len is None:
        lengths = [len(r) for r in rows]
        return _bucket(max(lengths), buckets, int(np.argmax(lengths)))
    for i, r in enumerate(rows):
        if len(r) > seq_len:
            raise ValueError(f"sample {i} has {len(r)} tokens, more than seq_len={seq_len}")
    return seq_len


def pack_sequences(
    samples: Sequence[TokenSequence],
    advantages: Sequence[float] | Sequence[Sequence[float]],
    *,
    buckets: Sequence[int] = DEFAULT_BUCKETS,
    seq_len: int | None = None,
    batch_multiple: int = 1,
    pad_id: int = 0,
    returns: Sequence[Sequence[float]] | None = None,
    old_values: Sequence[Sequence[float]] | None = None,
) -> TrainBatch:
    """Pack `TokenSequence`s and their advantages into a right-padded ``TrainBatch``: one
    advantage per sample (GRPO), or one array per sample of its length (per-token estimators
    such as GAE; zeroed outside the loss mask).

    The length is ``seq_len`` when given, else the smallest bucket holding the longest sample;
    rows are padded with empty samples up to a multiple of ``batch_multiple`` (the number of
    batch shards, ``data x fsdp``). Per-token ``returns`` / ``old_values`` (PPO) are optional.
    Bad input raises ``ValueError`` naming the sample."""
    if not samples:
        raise ValueError("pack_sequences needs at least one sample")
    if len(advantages) != len(samples):
        raise ValueError(f"{len(advantages)} advantages for {len(samples)} samples")
    if batch_multiple < 1:
        raise ValueError(f"batch_multiple must be >= 1, got {batch_multiple}")
    for name, extra in (("returns", returns), ("old_values", old_values)):
        if extra is not None and len(extra) != len(samples):
            raise ValueError(f"{len(extra)} {name} rows for {len(samples)} samples")
    if (returns is None) != (old_values is None):
        raise ValueError("returns and old_values must be given together")
    rows = _checked_rows(samples)
    length = _packed_length(rows, buckets, seq_len)
    b = -(-len(rows) // batch_multiple) * batch_multiple
    input_ids = np.full((b, length), pad_id, np.int32)
    attention = np.zeros((b, length), np.int32)
    loss_mask = np.zeros((b, length), np.float32)
    old_logprobs = np.zeros((b, length), np.float32)
    for i, row in enumerate(rows):
        k = len(row)
        input_ids[i, :k] = row.token_ids
        attention[i, :k] = 1
        loss_mask[i, :k] = row.loss_mask != 0
        old_logprobs[i, :k] = np.where(row.loss_mask != 0, row.logprobs, 0.0)
    if any(np.ndim(a) == 1 for a in advantages):  # per token (GAE): zeroed off the loss mask
        adv = np.where(loss_mask != 0, _per_token("advantages", advantages, rows, b, length), 0.0
                       ).astype(np.float32)
        bad = ~np.isfinite(adv).all(axis=1)
    else:
        adv = np.zeros((b,), np.float32)
        adv[: len(rows)] = np.asarray(advantages, np.float32)
        bad = ~np.isfinite(adv)
    if bad.any():
        raise ValueError(f"non-finite advantage at sample {int(np.argmax(bad))}")
    return TrainBatch(input_ids=input_ids, attention_mask=attention, loss_mask=loss_mask,
                      old_logprobs=old_logprobs, advantages=adv,
                      returns=_per_token("returns", returns, rows, b, length),
                      old_values=_per_token("old_values", old_values, rows, b, length))


def mini_batch_indices(lengths: Sequence[int], size: int, rng: np.random.Generator,
                       by_length: bool = False) -> list[np.ndarray]:
    """One RL batch's samples cut into mini-batches of `size` (the last may be smaller), in a
    random order. `by_length`: each mini-batch holds samples of similar length (sorted by
    length, ties broken at random, then the mini-batches shuffled), so it is padded to its own
    bucket rather than the step's longest -- a first turn's 110-token prompt no longer pays for
    a third turn's 300 (every padded token costs a full forward and backward)."""
    n = len(lengths)
    order = rng.permutation(n)
    if by_length:
        order = order[np.argsort(np.asarray(lengths)[order], kind="stable")]
    chunks = [order[start:start + size] for start in range(0, n, size)]
    return [chunks[i] for i in rng.permutation(len(chunks))] if by_length else chunks


def batch_shards(mesh: jax.sharding.Mesh, rules: LogicalRules | None = None) -> int:
    """How many ways the batch dimension is split on ``mesh`` (rows must be a multiple)."""
    spec = logical_to_spec(("batch",), None, mesh, rules)
    axes = spec[0]
    names = () if axes is None else ((axes,) if isinstance(axes, str) else tuple(axes))
    return int(np.prod([mesh.shape[a] for a in names])) if names else 1


def batch_shardings(batch: TrainBatch, mesh: jax.sharding.Mesh,
                    rules: LogicalRules | None = None) -> TrainBatch:
    """A ``TrainBatch``-shaped tree of shardings: rows over the batch axes (``data x fsdp`` by
    default), everything else replicated."""

    def sharding(value: Any) -> jax.sharding.NamedSharding:
        logical = ("batch",) + (None,) * (np.ndim(value) - 1)
        return jax.sharding.NamedSharding(mesh, logical_to_spec(logical, None, mesh, rules))

    return jax.tree.map(sharding, batch)


def put_batch(batch: TrainBatch, mesh: jax.sharding.Mesh,
              rules: LogicalRules | None = None) -> TrainBatch:
    """Move a host batch onto ``mesh`` with one ``device_put`` (one transfer per step)."""
    batch.validate()
    shards = batch_shards(mesh, rules)
    rows = batch.input_ids.shape[0]
    if rows % shards:
        raise ValueError(f"batch has {rows} rows, not a multiple of the {shards} batch shards; "
                         f"pack with batch_multiple={shards}")
    return jax.device_put(batch, batch_shardings(batch, mesh, rules))
