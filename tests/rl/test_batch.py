"""Packing trajectories into right-padded buckets and putting them on the mesh in one go."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from orchestra_jax.rl.batch import batch_shards, mini_batch_indices, pack_sequences, put_batch
from orchestra_jax.rollout.trajectory import TokenSequence
from orchestra_jax.sharding import make_mesh


def _sample(n: int, first_loss: int, logp: float = -1.0):
    ids = np.arange(1, n + 1)
    mask = np.zeros(n)
    mask[first_loss:] = 1
    return TokenSequence(ids, mask, np.full(n, logp))


def test_pack_right_pads_to_the_smallest_bucket_and_keeps_token_alignment():
    batch = pack_sequences([_sample(5, 3, -0.5), _sample(9, 4, -2.0)], [1.5, -1.0],
                           buckets=(8, 16, 32), batch_multiple=4, pad_id=0)
    assert batch.shape == (4, 16)
    np.testing.assert_array_equal(batch.input_ids[0, :6], [1, 2, 3, 4, 5, 0])
    np.testing.assert_array_equal(batch.attention_mask.sum(axis=1), [5, 9, 0, 0])
    np.testing.assert_array_equal(batch.loss_mask[0, :6], [0, 0, 0, 1, 1, 0])
    np.testing.assert_array_equal(batch.old_logprobs[1, 3:10], [0, -2, -2, -2, -2, -2, 0])
    np.testing.assert_array_equal(batch.advantages, [1.5, -1.0, 0.0, 0.0])
    assert batch.loss_mask[2:].sum() == 0  # filler rows count nowhere
    assert batch.returns is None and batch.old_values is None


def test_pack_with_value_targets_and_fixed_length():
    batch = pack_sequences([_sample(3, 1)], [0.2], seq_len=6, returns=[[1, 2, 3]],
                           old_values=[[0.5, 0.5, 0.5]])
    np.testing.assert_array_equal(batch.returns[0], [1, 2, 3, 0, 0, 0])
    assert batch.old_values.shape == (1, 6)


@pytest.mark.parametrize(("samples", "advantages", "kwargs", "match"), [
    ([_sample(40, 2)], [1.0], {"buckets": (16, 32)}, "sample 0 has 40 tokens"),
    ([_sample(10, 2)], [1.0], {"seq_len": 8}, "more than seq_len"),
    ([_sample(4, 0)], [1.0], {}, "first token"),
    ([_sample(4, 1), _sample(4, 1)], [1.0], {}, "2 samples"),
    ([TokenSequence(np.arange(4), np.zeros(3), np.zeros(4))], [1.0], {}, "sample 0"),
    ([(np.arange(4), np.zeros(4), np.zeros(4))], [1.0], {}, "must be a TokenSequence"),
    ([_sample(4, 1, float("nan"))], [1.0], {}, "non-finite log-prob"),
    ([_sample(4, 1)], [float("inf")], {}, "non-finite advantage"),
    ([], [], {}, "at least one"),
])
def test_pack_rejects_bad_input_naming_it(samples, advantages, kwargs, match):
    with pytest.raises(ValueError, match=match):
        pack_sequences(samples, advantages, **kwargs)


def test_put_batch_shards_rows_over_data_and_fsdp():
    mesh = make_mesh((2, 2, 2))
    assert batch_shards(mesh) == 4
    host = pack_sequences([_sample(6, 2)] * 3, [1.0, 0.0, -1.0], buckets=(8,),
                          batch_multiple=batch_shards(mesh))
    device = put_batch(host, mesh)
    assert device.input_ids.sharding.spec == jax.P(("data", "fsdp"), None)
    assert device.advantages.sharding.spec == jax.P(("data", "fsdp"))
    assert device.returns is None
    np.testing.assert_array_equal(np.asarray(device.loss_mask), host.loss_mask)
    assert device.input_ids.addressable_shards[0].data.shape == (1, 8)


def test_put_batch_refuses_rows_that_do_not_split_over_the_shards():
    mesh = make_mesh((2, 2, 2))
    host = pack_sequences([_sample(6, 2)] * 3, [1.0, 0.0, -1.0], buckets=(8,))
    with pytest.raises(ValueError, match="batch_multiple=4"):
        put_batch(host, mesh)


def test_per_token_advantages_are_packed_and_zeroed_off_the_loss_mask():
    ids, mask = np.asarray([5, 6, 7, 8]), np.asarray([0, 1, 1, 0])
    logp = np.asarray([0.0, -1.0, -2.0, 0.0])
    batch = pack_sequences([TokenSequence(ids, mask, logp),
                            TokenSequence(ids[:3], mask[:3], logp[:3])],
                           [np.array([9.0, 1.0, 2.0, 9.0]), np.array([9.0, 3.0, 4.0])],
                           seq_len=8, batch_multiple=4)
    assert batch.advantages.shape == (4, 8)
    np.testing.assert_array_equal(batch.advantages[0], [0, 1, 2, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(batch.advantages[1], [0, 3, 4, 0, 0, 0, 0, 0])
    assert not batch.advantages[2:].any()  # filler rows
    with pytest.raises(ValueError, match="advantages of sample 1"):
        pack_sequences([TokenSequence(ids, mask, logp)] * 2,
                       [np.zeros(4), np.zeros(3)], seq_len=8)


def test_mini_batches_by_length_hold_similar_lengths_and_every_sample_once():
    import itertools

    lengths = [110] * 40 + [180] * 30 + [300] * 10  # first turns, after a search, third turns
    shuffled = np.random.default_rng(1).permutation(lengths).tolist()
    plain = mini_batch_indices(shuffled, 32, np.random.default_rng(0))
    grouped = mini_batch_indices(shuffled, 32, np.random.default_rng(0), by_length=True)
    for batches in (plain, grouped):
        assert sorted(np.concatenate(batches).tolist()) == list(range(80))
        assert [len(b) for b in batches if len(b) != 32] == [16]
    # Without grouping the batches are the seeded permutation's slices (as before the option).
    order = np.random.default_rng(0).permutation(80)
    assert [b.tolist() for b in plain] == [order[:32].tolist(), order[32:64].tolist(),
                                           order[64:].tolist()]
    # Grouped: padding every batch to its longest costs 180*32 + 300*16 + 110*32 = 13,120
    # tokens against 300 * 80 = 24,000 for padding everything to the step's longest.
    padded = sum(max(shuffled[i] for i in b) * len(b) for b in grouped)
    assert padded == 110 * 32 + 180 * 32 + 300 * 16
    spans = sorted((min(shuffled[i] for i in b), max(shuffled[i] for i in b)) for b in grouped)
    assert all(hi <= lo_next for (_, hi), (lo_next, _) in itertools.pairwise(spans))
