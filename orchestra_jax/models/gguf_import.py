"""Import Llama-architecture GGUF files (llama.cpp's format): config, dequantized weights.

Weights are dequantized one tensor at a time with the `gguf` package (numpy only) and exposed
under HF names, so the same loader as for safetensors places them on the mesh. llama.cpp's
converter permutes the rows of the q/k projections to pair rotary dimensions as (even, odd);
HF and we rotate halves, so that permutation is undone here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from orchestra_jax.models.config import ModelConfig

_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_TOP_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


def _hf_name(gguf_name: str) -> str | None:
    if gguf_name in _TOP_NAMES:
        return _TOP_NAMES[gguf_name]
    parts = gguf_name.split(".", 2)
    if parts[0] == "blk" and len(parts) == 3 and parts[2] in _LAYER_NAMES:
        return f"model.layers.{parts[1]}.{_LAYER_NAMES[parts[2]]}"
    return None


def unpermute_rotary_rows(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """Invert llama.cpp's q/k row permutation: per head, (pairs, 2) rows -> (2, pairs) rows."""
    out_features = weight.shape[0]
    half = out_features // num_heads // 2
    return (
        weight.reshape(num_heads, half, 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def _field(reader: Any, key: str, default: Any = None) -> Any:
    field = reader.fields.get(key)
    return default if field is None else field.contents()


class GGUFCheckpoint(Mapping[str, np.ndarray]):
    """The tensors of a Llama GGUF file under HF names, dequantized to float32 on access."""

    def __init__(self, path: str | Path):
        from gguf import GGUFReader

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {self.path}")
        self.reader = GGUFReader(str(self.path))
        arch = _field(self.reader, "general.architecture")
        if arch != "llama":
            raise ValueError(
                f"{self.path}: general.architecture={arch!r}; only 'llama' is supported"
            )
        self.num_heads = int(_field(self.reader, "llama.attention.head_count"))
        self.num_kv_heads = int(_field(self.reader, "llama.attention.head_count_kv",
                                       self.num_heads))
        self._tensors = {}
        for tensor in self.reader.tensors:
            name = _hf_name(tensor.name)
            if name is not None:
                self._tensors[name] = tensor

    def __getitem__(self, name: str) -> np.ndarray:
        from gguf.quants import dequantize

        tensor = self._tensors[name]
        shape = tuple(int(d) for d in reversed(tensor.shape))
        # A plain ndarray view: dequantizing a np.memmap pays a subclass hook per row group.
        raw = np.asarray(tensor.data)
        weight = np.asarray(dequantize(raw, tensor.tensor_type), np.float32).reshape(shape)
        if name.endswith("self_attn.q_proj.weight"):
            weight = unpermute_rotary_rows(weight, self.num_heads)
        elif name.endswith("self_attn.k_proj.weight"):
            weight = unpermute_rotary_rows(weight, self.num_kv_heads)
        return weight

    def __contains__(self, name: object) -> bool:
        return name in self._tensors

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def config(self, **overrides: Any) -> ModelConfig:
        """The `ModelConfig` written in the file's metadata."""
        r = self.reader
        hidden = int(_field(r, "llama.embedding_length"))
        tokens = r.fields.get("tokenizer.ggml.tokens")
        vocab = _field(r, "llama.vocab_size") or (len(tokens.data) if tokens else None)
        head_dim = int(_field(r, "llama.rope.dimension_count", hidden // self.num_heads))
        kwargs: dict[str, Any] = dict(
            vocab_size=int(vocab),
            hidden_size=hidden,
            intermediate_size=int(_field(r, "llama.feed_forward_length")),
            num_layers=int(_field(r, "llama.block_count")),
            num_heads=self.num_heads,
            num_kv_heads=self.num_kv_heads,
            head_dim=head_dim,
            rope_theta=float(_field(r, "llama.rope.freq_base", 10_000.0)),
            rms_norm_eps=float(_field(r, "llama.attention.layer_norm_rms_epsilon", 1e-5)),
            max_position_embeddings=int(_field(r, "llama.context_length", 4096)),
            tie_word_embeddings="lm_head.weight" not in self._tensors,
            model_type="llama",
            bos_token_id=_field(r, "tokenizer.ggml.bos_token_id"),
            eos_token_id=_field(r, "tokenizer.ggml.eos_token_id"),
            pad_token_id=_field(r, "tokenizer.ggml.padding_token_id"),
        )
        kwargs.update(overrides)
        return ModelConfig(**kwargs)
