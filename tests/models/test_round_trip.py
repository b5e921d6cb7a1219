"""Our weights saved as safetensors load in transformers and give the same logits."""

from __future__ import annotations

import json

import numpy as np

from orchestra_jax.models import load_pretrained
from orchestra_jax.models.safetensors_io import SafetensorsDirectory
from tests.models.hf_reference import build_hf_model, hf_logits, padded_batch, transformers


def test_random_tiny_model_round_trips_through_transformers(tmp_path):
    lm = load_pretrained("tiny", seed=7)
    lm.save_pretrained(tmp_path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids, mask = padded_batch(lm.config.vocab_size, seed=4)
    real = mask.astype(bool)
    assert np.abs(lm.logits(ids, mask) - hf_logits(hf, ids, mask))[real].max() <= 1e-4


def test_hf_checkpoint_reloads_identically(tmp_path):
    build_hf_model("llama", tmp_path / "src", heads=6, kv_heads=3)
    lm = load_pretrained(tmp_path / "src")
    lm.save_pretrained(tmp_path / "out")
    src, out = SafetensorsDirectory(tmp_path / "src"), SafetensorsDirectory(tmp_path / "out")
    assert sorted(src) == sorted(out)
    for name in src:
        np.testing.assert_array_equal(np.asarray(src[name]), np.asarray(out[name]), err_msg=name)
    again = load_pretrained(tmp_path / "out")
    ids, mask = padded_batch(lm.config.vocab_size)
    np.testing.assert_array_equal(lm.logits(ids, mask), again.logits(ids, mask))


def test_sharded_save_writes_an_index_transformers_reads(tmp_path):
    from orchestra_jax.models import save_hf_checkpoint

    lm = load_pretrained("tiny", seed=1)
    save_hf_checkpoint(lm.model, tmp_path, max_shard_bytes=2_000_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids, mask = padded_batch(lm.config.vocab_size, seed=5)
    real = mask.astype(bool)
    assert np.abs(lm.logits(ids, mask) - hf_logits(hf, ids, mask))[real].max() <= 1e-4


def test_value_head_is_saved_beside_the_hf_weights(tmp_path):
    lm = load_pretrained("tiny", value_head=True, seed=2)
    lm.save_pretrained(tmp_path)
    assert (tmp_path / "value_head.safetensors").is_file()
    assert "value_head.weight" not in SafetensorsDirectory(tmp_path / "model.safetensors")
    again = load_pretrained(tmp_path, value_head=True)
    np.testing.assert_array_equal(
        np.asarray(lm.model.value_kernel[...]), np.asarray(again.model.value_kernel[...])
    )


def test_value_head_missing_from_a_checkpoint_is_freshly_initialised(tmp_path):
    build_hf_model("qwen3", tmp_path)
    plain = load_pretrained(tmp_path)
    with_value = load_pretrained(tmp_path, value_head=True)
    kernel = np.asarray(with_value.model.value_kernel[...])
    assert 0.01 < kernel.std() < 0.03 and float(with_value.model.value_bias[...]) == 0.0
    ids, mask = padded_batch(plain.config.vocab_size)
    np.testing.assert_array_equal(plain.logits(ids, mask), with_value.logits(ids, mask))
