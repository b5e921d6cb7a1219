"""The host-side pieces of chunked decoding (`serve.chunked_generation`): where a stop
sequence that straddles two chunks ends the reply, and which seed each chunk of a seeded
request uses. The chunk loop itself runs against the real server in test_server.py."""

from __future__ import annotations

from orchestra_jax.rollout.requests import SamplingParams
from orchestra_jax.serve.chunked_generation import chunk_seed, straddling_stop


def test_a_stop_sequence_across_the_chunk_boundary_is_cut_right_after_it():
    # Chunk boundary before index 4: [.. 7 8 | 9 5 ..]; the stop [8, 9] straddles it.
    tokens = [1, 2, 7, 8, 9, 5, 8, 9]
    assert straddling_stop(tokens, 4, [(8, 9)]) == 5
    # Boundary before index 5: [.. 8 9 | 5 8 ..]; of two straddling sequences the one that
    # ends first cuts.
    assert straddling_stop(tokens, 5, [(8, 9, 5, 8), (9, 5)]) == 6


def test_stop_sequences_not_crossing_the_boundary_are_left_to_the_device():
    tokens = [1, 2, 7, 8, 9, 5, 8, 9]
    assert straddling_stop(tokens, 4, [(1, 2)]) is None  # wholly in the previous chunk
    assert straddling_stop(tokens, 4, [(5, 8, 9)]) is None  # wholly in this chunk
    assert straddling_stop(tokens, 4, [(3, 9)]) is None
    assert straddling_stop(tokens, 0, [(1, 2)]) is None  # the first chunk has no boundary
    assert straddling_stop([4], 0, [(9, 9, 4)]) is None


def test_each_chunk_of_a_seeded_request_gets_its_own_reproducible_seed():
    assert chunk_seed(None, 3) is None
    assert chunk_seed(1234, 0) == 1234  # a one-chunk reply is the unchunked one
    seeds = [chunk_seed(1234, k) for k in range(1, 6)]
    assert len(set(seeds) | {1234}) == 6
    assert seeds == [chunk_seed(1234, k) for k in range(1, 6)]
    for seed in (0, 2**64 - 1):
        SamplingParams(seed=chunk_seed(seed, 7))  # always a valid seed
