"""Shared tiny model and batches for the update-step tests (kept tiny: compiles dominate)."""

from __future__ import annotations

import numpy as np

from orchestra_jax.models.config import ModelConfig
from orchestra_jax.rl.batch import TrainBatch, pack_sequences
from orchestra_jax.rollout.trajectory import TokenSequence

TINY = ModelConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_layers=2,
                   num_heads=4, num_kv_heads=2, head_dim=16, qk_norm=True,
                   tie_word_embeddings=False)


def random_batch(rows: int = 16, seq_len: int = 16, seed: int = 0, *,
                 value_targets: bool = False) -> TrainBatch:
    """Prompt tokens outside the loss, response tokens inside it, varied lengths, random
    advantages of both signs and sampler log-probs near the model's (so ratios stay sane)."""
    rng = np.random.default_rng(seed)
    samples, advantages, returns, old_values = [], [], [], []
    for _ in range(rows):
        n = int(rng.integers(seq_len // 2, seq_len + 1))
        ids = rng.integers(1, TINY.vocab_size, n)
        mask = np.zeros(n)
        mask[int(rng.integers(1, n - 1)):] = 1
        samples.append(TokenSequence(ids, mask,
                                     rng.normal(np.log(1 / TINY.vocab_size), 0.05, n)))
        advantages.append(float(rng.normal()))
        returns.append(rng.normal(0.5, 0.5, n))
        old_values.append(rng.normal(0.0, 0.1, n))
    extra = {"returns": returns, "old_values": old_values} if value_targets else {}
    return pack_sequences(samples, advantages, seq_len=seq_len, **extra)


def max_abs_diff(a, b) -> float:
    import jax

    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
               for x, y in zip(la, lb, strict=True))
