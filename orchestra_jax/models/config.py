"""`ModelConfig`: the hyper-parameters of a decoder-only policy, presets and `from_hf`.

One frozen dataclass describes every model family we load (Llama, Qwen2, Qwen3): the
differences are switches (`qk_norm`, `attention_bias`, `tie_word_embeddings`) rather than
subclasses, so the decoder stays one readable module.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax.numpy as jnp

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}

#: RoPE scaling schemes the decoder implements (the HF `rope_type` names).
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")

#: HF `model_type`s that `from_hf` maps onto this decoder.
SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "qwen3")


def dtype_from_name(name: str | Any) -> Any:
    """Map 'float32' / 'bfloat16' / 'float16' (or a jnp dtype) to a jnp dtype."""
    if not isinstance(name, str):
        return jnp.dtype(name).type
    try:
        return _DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; expected one of {sorted(_DTYPES)}") from None


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture and numerics of a decoder (Llama / Qwen2 / Qwen3 family).

    `param_dtype` is the storage dtype of the weights, `dtype` the compute dtype of matmuls;
    norms, softmax and RoPE always run in float32.
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float = 10_000.0
    rope_scaling: tuple[tuple[str, Any], ...] | None = None
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = True
    qk_norm: bool = False
    attention_bias: bool = False
    value_head: bool = False
    param_dtype: str = "float32"
    dtype: str = "float32"
    remat: bool = False
    scan_layers: bool = False
    model_type: str = "llama"
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None

    def __post_init__(self) -> None:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.num_kv_heads}"
            )
        for field in ("param_dtype", "dtype"):
            dtype_from_name(getattr(self, field))
        rope_type = self.rope_scaling_dict.get("rope_type", "default")
        if rope_type not in SUPPORTED_ROPE_TYPES:
            raise ValueError(
                f"rope_scaling type {rope_type!r} is not supported; "
                f"supported: {SUPPORTED_ROPE_TYPES}"
            )

    @property
    def rope_scaling_dict(self) -> dict[str, Any]:
        return dict(self.rope_scaling or ())

    @property
    def num_query_groups(self) -> int:
        """Query heads per KV head (the GQA ratio)."""
        return self.num_heads // self.num_kv_heads

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def num_params(self) -> int:
        """Parameter count (value head excluded), for logs and MFU maths."""
        d, f, v = self.hidden_size, self.intermediate_size, self.vocab_size
        q = d * self.num_heads * self.head_dim
        kv = 2 * d * self.num_kv_heads * self.head_dim
        o = self.num_heads * self.head_dim * d
        bias = (self.num_heads + 2 * self.num_kv_heads) * self.head_dim
        bias = bias if self.attention_bias else 0
        norms = 2 * d + (2 * self.head_dim if self.qk_norm else 0)
        layer = q + kv + o + bias + 3 * d * f + norms
        head = 0 if self.tie_word_embeddings else d * v
        return v * d + self.num_layers * layer + d + head

    # ---- Hugging Face interop -------------------------------------------------------------

    @classmethod
    def from_hf(cls, config: str | Path | dict[str, Any], **overrides: Any) -> ModelConfig:
        """Build from a HF `config.json` (path, directory or dict) of a Llama/Qwen2/Qwen3 model."""
        if isinstance(config, (str, Path)):
            path = Path(config)
            if path.is_dir():
                path = path / "config.json"
            if not path.is_file():
                raise FileNotFoundError(f"no HF config.json at {path}")
            hf = json.loads(path.read_text())
        else:
            hf = dict(config)
        model_type = hf.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"config.json model_type={model_type!r} is not supported; "
                f"supported: {SUPPORTED_MODEL_TYPES}"
            )
        num_heads = hf["num_attention_heads"]
        head_dim = hf.get("head_dim") or hf["hidden_size"] // num_heads
        # transformers 5 folds theta and scaling into `rope_parameters`; 4.x had them apart.
        rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
        rope_theta = float(rope.pop("rope_theta", hf.get("rope_theta", 10_000.0)))
        rope_type = rope.pop("rope_type", rope.pop("type", "default"))
        rope_scaling = None
        if rope_type != "default":
            rope_scaling = tuple(sorted({"rope_type": rope_type, **rope}.items()))
        torch_dtype = hf.get("dtype") or hf.get("torch_dtype") or "float32"
        kwargs: dict[str, Any] = dict(
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=num_heads,
            num_kv_heads=hf.get("num_key_value_heads") or num_heads,
            head_dim=head_dim,
            rope_theta=rope_theta,
            rope_scaling=rope_scaling,
            rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
            max_position_embeddings=hf.get("max_position_embeddings", 4096),
            tie_word_embeddings=hf.get("tie_word_embeddings", model_type != "llama"),
            qk_norm=model_type == "qwen3",
            # Qwen2 always has q/k/v biases; Llama and Qwen3 say so in `attention_bias`.
            attention_bias=True if model_type == "qwen2" else bool(hf.get("attention_bias")),
            model_type=model_type,
            param_dtype=torch_dtype if torch_dtype in _DTYPES else "float32",
            dtype=torch_dtype if torch_dtype in _DTYPES else "float32",
            bos_token_id=_first_id(hf.get("bos_token_id")),
            eos_token_id=_first_id(hf.get("eos_token_id")),
            pad_token_id=_first_id(hf.get("pad_token_id")),
        )
        if hf.get("mlp_bias"):
            raise ValueError("config.json sets mlp_bias=true, which this decoder does not support")
        kwargs.update(overrides)
        return cls(**kwargs)

    def to_hf(self) -> dict[str, Any]:
        """The `config.json` dict transformers needs to rebuild this model."""
        arch = {
            "llama": "LlamaForCausalLM",
            "qwen2": "Qwen2ForCausalLM",
            "qwen3": "Qwen3ForCausalLM",
        }
        model_type = self.model_type
        if model_type == "llama" and self.qk_norm:
            model_type = "qwen3"
        hf: dict[str, Any] = {
            "architectures": [arch[model_type]],
            "model_type": model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": self.attention_bias,
            "rope_theta": self.rope_theta,
            "rope_scaling": self.rope_scaling_dict or None,
            "rope_parameters": {"rope_theta": self.rope_theta, "rope_type": "default"}
            | self.rope_scaling_dict,
            "torch_dtype": self.param_dtype,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
        }
        if model_type == "qwen2" and not self.attention_bias:
            raise ValueError("Qwen2 checkpoints always carry attention biases")
        return hf


def _first_id(value: Any) -> int | None:
    if isinstance(value, list):
        return value[0] if value else None
    return value


# ---- presets (hyper-parameters from each model's public config.json) ---------------------

#: A few million parameters: fast enough for unit tests and the embedded CPU run.
TINY = ModelConfig(
    vocab_size=4096,
    hidden_size=256,
    intermediate_size=768,
    num_layers=4,
    num_heads=8,
    num_kv_heads=2,
    head_dim=32,
    rope_theta=10_000.0,
    rms_norm_eps=1e-6,
    max_position_embeddings=2048,
    tie_word_embeddings=True,
    qk_norm=True,
    model_type="qwen3",
)

SMOLLM2_135M = ModelConfig(
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_layers=30,
    num_heads=9,
    num_kv_heads=3,
    head_dim=64,
    rope_theta=100_000.0,
    rms_norm_eps=1e-5,
    max_position_embeddings=8192,
    tie_word_embeddings=True,
    model_type="llama",
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=2,
)


def _qwen3(hidden: int, intermediate: int, layers: int, heads: int, tie: bool) -> ModelConfig:
    return ModelConfig(
        vocab_size=151936,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=8,
        head_dim=128,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        max_position_embeddings=40960,
        tie_word_embeddings=tie,
        qk_norm=True,
        model_type="qwen3",
        param_dtype="bfloat16",
        dtype="bfloat16",
        bos_token_id=151643,
        eos_token_id=151645,
        pad_token_id=151643,
    )


QWEN3_0P6B = _qwen3(1024, 3072, 28, 16, tie=True)
QWEN3_1P7B = _qwen3(2048, 6144, 28, 16, tie=True)
QWEN3_4B = _qwen3(2560, 9728, 36, 32, tie=True)
QWEN3_8B = _qwen3(4096, 12288, 36, 32, tie=False)

PRESETS: dict[str, ModelConfig] = {
    "tiny": TINY,
    "smollm2_135m": SMOLLM2_135M,
    "qwen3_0p6b": QWEN3_0P6B,
    "qwen3_1p7b": QWEN3_1P7B,
    "qwen3_4b": QWEN3_4B,
    "qwen3_8b": QWEN3_8B,
}


def get_preset(name: str, **overrides: Any) -> ModelConfig:
    """A preset by name (`tiny`, `smollm2_135m`, `qwen3_8b`, ...), with field overrides."""
    key = name.lower().replace("-", "_").replace(".", "p")
    if key not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[key].replace(**overrides)
