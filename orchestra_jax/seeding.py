"""One way to turn integers (a run seed, an index, a turn, a purpose tag) into a seed.

Rollout, training and the host tools all derive child seeds from a parent; doing it in one
place keeps the derivation identical everywhere, so a run replays exactly. A leaf on purpose:
numpy only, no jax, importable from host code (tools, envs) as well as from rollout and train.
"""

from __future__ import annotations

import numpy as np


def derive_seed(*parts: int, bits: int = 31) -> int:
    """A reproducible `bits`-bit non-negative seed from non-negative integers.

    The first 32-bit word of `np.random.SeedSequence(parts)`'s state, masked to its low `bits`
    bits. The default 31 bits fits a signed 32-bit int (what jax's PRNG keys and most C APIs
    accept); `bits=32` keeps the whole word. Distinct `parts` give independent streams, and
    the order of `parts` matters.
    """
    if not 1 <= bits <= 32:
        raise ValueError(f"bits must lie in [1, 32], got {bits!r}")
    if not parts:
        raise ValueError("derive_seed needs at least one integer part")
    word = int(np.random.SeedSequence(list(parts)).generate_state(1)[0])
    return word & ((1 << bits) - 1)
