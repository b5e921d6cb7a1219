"""A tiny random Qwen3 checkpoint in Hugging Face layout, for tests that need a real
`model.path` without the hub: transformers builds and saves a 2-layer model, and SmolLM2's
tokenizer (read from the packaged GGUF, so nothing is downloaded) is saved beside it."""

from __future__ import annotations

from pathlib import Path


def tiny_qwen3(directory: Path, *, seed: int = 0) -> Path:
    """Save a random 2-layer Qwen3 (hidden 32, tied embeddings) with SmolLM2's tokenizer to
    `directory`; returns it. Needs torch and transformers (the test extras)."""
    import torch
    import transformers

    from orchestra_jax.assets import smollm2_gguf_path
    from orchestra_jax.tokenization import HFTokenizer
    from orchestra_jax.tokenization.gguf_vocab import read_gguf_vocab

    tokenizer = HFTokenizer.from_gguf_vocab(read_gguf_vocab(smollm2_gguf_path()))
    torch.manual_seed(seed)
    config = transformers.Qwen3Config(
        vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
        max_position_embeddings=1024, tie_word_embeddings=True)
    transformers.Qwen3ForCausalLM(config).save_pretrained(directory)
    tokenizer.save(directory)
    return directory


__all__ = ["tiny_qwen3"]
