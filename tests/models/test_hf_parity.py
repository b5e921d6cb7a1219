"""Logits of checkpoints loaded from transformers agree with transformers itself."""

from __future__ import annotations

import numpy as np
import pytest

from orchestra_jax.models import load_pretrained
from tests.models.hf_reference import build_hf_model, hf_logits, padded_batch

CASES = [
    ("qwen3", dict(heads=4, kv_heads=2, tied=False)),
    ("qwen3", dict(heads=4, kv_heads=1, tied=True)),
    ("llama", dict(heads=6, kv_heads=2, tied=False)),
    ("llama", dict(heads=4, kv_heads=4, tied=True)),
    ("qwen2", dict(heads=4, kv_heads=2, tied=False)),
    (
        "llama",
        dict(heads=4, kv_heads=2, tied=False, rope_theta=500000.0, rope_scaling={
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
    ),
]


@pytest.mark.parametrize(("family", "kwargs"), CASES, ids=lambda c: str(c))
def test_padded_batch_logits_match_transformers(tmp_path, family, kwargs):
    hf = build_hf_model(family, tmp_path, **kwargs)
    lm = load_pretrained(tmp_path)
    ids, mask = padded_batch(lm.config.vocab_size)
    ours = lm.logits(ids, mask)
    ref = hf_logits(hf, ids, mask)
    real = mask.astype(bool)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    assert np.abs(ours - ref)[real].max() <= 1e-4


def test_config_mirrors_the_checkpoint(tmp_path):
    build_hf_model("qwen2", tmp_path, heads=6, kv_heads=3, tied=True)
    config = load_pretrained(tmp_path).config
    assert (config.num_heads, config.num_kv_heads, config.head_dim) == (6, 3, 16)
    assert config.attention_bias and not config.qk_norm and config.tie_word_embeddings


@pytest.mark.parametrize("option", ["scan_layers", "remat"])
def test_scan_and_remat_do_not_change_logits(tmp_path, option):
    hf = build_hf_model("qwen3", tmp_path)
    lm = load_pretrained(tmp_path, **{option: True})
    ids, mask = padded_batch(lm.config.vocab_size, seed=1)
    diff = np.abs(lm.logits(ids, mask) - hf_logits(hf, ids, mask))[mask.astype(bool)]
    assert diff.max() <= 1e-4


def test_bfloat16_model_tracks_float32(tmp_path):
    build_hf_model("qwen3", tmp_path)
    ids, mask = padded_batch(160, seed=2)
    f32 = load_pretrained(tmp_path).logits(ids, mask)
    bf16 = load_pretrained(tmp_path, dtype="bfloat16")
    assert bf16.model.embed.get_value().dtype.name == "bfloat16"
    low = bf16.logits(ids, mask)
    real = mask.astype(bool)
    # bf16 keeps ~3 significant digits: errors are a small fraction of the logit scale.
    scale = np.abs(f32[real]).max()
    assert np.abs(low - f32)[real].max() <= 0.05 * scale
    assert (low[real].argmax(-1) == f32[real].argmax(-1)).mean() >= 0.9


def test_blockwise_causal_attention_matches_transformers(tmp_path, monkeypatch):
    from orchestra_jax.models import layers

    monkeypatch.setattr(layers, "ATTENTION_BLOCK", 5)  # 12 tokens: blocks of 5, 5 and 2
    hf = build_hf_model("llama", tmp_path, heads=6, kv_heads=2)
    lm = load_pretrained(tmp_path)
    ids, mask = padded_batch(lm.config.vocab_size, seed=3)
    diff = np.abs(lm.logits(ids, mask) - hf_logits(hf, ids, mask))[mask.astype(bool)]
    assert diff.max() <= 1e-4
