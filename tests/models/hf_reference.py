"""Tiny random transformers models (torch, CPU, no hub) saved as safetensors: the reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

FAMILIES = {
    "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM),
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
}


def build_hf_model(family: str, directory: Path, *, heads: int = 4, kv_heads: int = 2,
                   tied: bool = False, seed: int = 0, **extra):
    """Save a random `family` model with the given GQA ratio and head tying to `directory`."""
    config_cls, model_cls = FAMILIES[family]
    torch.manual_seed(seed)
    fields = dict(
        vocab_size=160, hidden_size=96, intermediate_size=112, num_hidden_layers=2,
        num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=16,
        tie_word_embeddings=tied, max_position_embeddings=256,
    )
    config = config_cls(**{**fields, **extra})
    model = model_cls(config).eval()
    # Random (not constant) norm scales and biases so that a wrong mapping cannot hide.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith(".bias"):
                param.copy_(torch.randn_like(param) * 0.3 + (1.0 if "norm" in name else 0.0))
    model.save_pretrained(directory)
    return model


def hf_logits(model, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Reference logits with positions from the attention mask, as generation uses them."""
    positions = np.maximum(mask.cumsum(1) - 1, 0)
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(ids, dtype=torch.long),
            attention_mask=torch.tensor(mask, dtype=torch.long),
            position_ids=torch.tensor(positions, dtype=torch.long),
        )
    return out.logits.float().numpy()


def padded_batch(vocab: int, seed: int = 0, length: int = 12):
    """Rows: full, left-padded, right-padded, and both short."""
    rng = np.random.RandomState(seed)
    ids = rng.randint(0, vocab, (4, length))
    mask = np.ones((4, length), np.int64)
    mask[1, :4] = 0
    mask[2, 9:] = 0
    mask[3, :2] = 0
    mask[3, 7:] = 0
    ids = np.where(mask == 1, ids, 0)
    return ids, mask
