"""Hugging Face checkpoints <-> our decoder: the name map, loading and saving safetensors.

HF stores linear weights as (out_features, in_features) and fuses heads into one dimension;
we keep heads explicit ((embed, heads, head_dim)) so that tensor parallelism shards heads by
name. Each mapping entry says how to go one way and back.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from orchestra_jax.models.config import ModelConfig
from orchestra_jax.models.decoder import Decoder
from orchestra_jax.models.safetensors_io import (
    SafetensorsDirectory,
    write_safetensors,
    write_sharded,
)
from orchestra_jax.models.sharded import load_decoder
from orchestra_jax.sharding.rules import LogicalRules

#: Our value head is not part of any HF architecture; it is saved beside the HF weights.
VALUE_HEAD_FILE = "value_head.safetensors"


def _to_ours(kind: str, hf: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if kind == "copy":
        return hf
    if kind == "reshape":
        return hf.reshape(shape)
    if kind in ("in_heads", "out_heads", "transpose"):
        return hf.T.reshape(shape)
    raise ValueError(kind)


def _to_hf(kind: str, ours: np.ndarray) -> np.ndarray:
    if kind == "copy":
        return ours
    if kind == "reshape":
        return ours.reshape(-1)
    if kind == "in_heads":  # (embed, heads, head_dim) -> (heads * head_dim, embed)
        return ours.reshape(ours.shape[0], -1).T
    if kind == "out_heads":  # (heads, head_dim, embed) -> (embed, heads * head_dim)
        return ours.reshape(-1, ours.shape[-1]).T
    if kind == "transpose":
        return ours.T
    raise ValueError(kind)


# (path inside a DecoderLayer, HF name suffix inside `model.layers.{i}.`, transform)
_LAYER_MAP: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("input_norm", "scale"), "input_layernorm.weight", "copy"),
    (("post_attention_norm", "scale"), "post_attention_layernorm.weight", "copy"),
    (("attention", "q_proj"), "self_attn.q_proj.weight", "in_heads"),
    (("attention", "k_proj"), "self_attn.k_proj.weight", "in_heads"),
    (("attention", "v_proj"), "self_attn.v_proj.weight", "in_heads"),
    (("attention", "o_proj"), "self_attn.o_proj.weight", "out_heads"),
    (("attention", "q_bias"), "self_attn.q_proj.bias", "reshape"),
    (("attention", "k_bias"), "self_attn.k_proj.bias", "reshape"),
    (("attention", "v_bias"), "self_attn.v_proj.bias", "reshape"),
    (("attention", "q_norm", "scale"), "self_attn.q_norm.weight", "copy"),
    (("attention", "k_norm", "scale"), "self_attn.k_norm.weight", "copy"),
    (("mlp", "gate_proj"), "mlp.gate_proj.weight", "transpose"),
    (("mlp", "up_proj"), "mlp.up_proj.weight", "transpose"),
    (("mlp", "down_proj"), "mlp.down_proj.weight", "transpose"),
)
_TOP_MAP: dict[tuple[str, ...], tuple[str, str]] = {
    ("embed",): ("model.embed_tokens.weight", "copy"),
    ("final_norm", "scale"): ("model.norm.weight", "copy"),
    ("lm_head",): ("lm_head.weight", "transpose"),
}
_VALUE_HEAD = {("value_kernel",): "value_head.weight", ("value_bias",): "value_head.bias"}


@dataclasses.dataclass(frozen=True)
class HFSource:
    """Where one of our parameters lives in a HF checkpoint.

    `names` has one entry, or one per layer for scanned (stacked) layers.
    """

    names: tuple[str, ...]
    kind: str
    stacked: bool = False


def hf_source(path: tuple, config: ModelConfig) -> HFSource | None:
    """The HF tensor(s) behind our parameter `path`; None for the value head."""
    path = tuple(path)
    if path in _TOP_MAP:
        name, kind = _TOP_MAP[path]
        return HFSource((name,), kind)
    if path in _VALUE_HEAD:
        return None
    if path[0] == "layers":
        if config.scan_layers:
            inner, layers = path[1:], range(config.num_layers)
        else:
            inner, layers = path[2:], [int(path[1])]
        for our_inner, suffix, kind in _LAYER_MAP:
            if inner == our_inner:
                names = tuple(f"model.layers.{i}.{suffix}" for i in layers)
                return HFSource(names, kind, stacked=config.scan_layers)
    raise KeyError(f"no HF name for parameter {'.'.join(map(str, path))}")


def tensor_reader(
    tensors: Mapping[str, np.ndarray], config: ModelConfig, source: str,
    extra: Mapping[str, np.ndarray] | None = None,
) -> Callable[[tuple, tuple[int, ...]], np.ndarray | None]:
    """Adapt HF-named host tensors to `load_decoder`'s (path, shape) -> array callback."""

    def read(path: tuple, shape: tuple[int, ...]) -> np.ndarray | None:
        path = tuple(path)
        if path in _VALUE_HEAD:
            name = _VALUE_HEAD[path]
            return np.asarray(extra[name]).reshape(shape) if extra and name in extra else None
        src = hf_source(path, config)
        if path == ("lm_head",) and src.names[0] not in tensors:
            raise KeyError(f"{source}: no lm_head.weight, but the config has untied embeddings")
        missing = [n for n in src.names if n not in tensors]
        if missing:
            raise KeyError(f"{source}: tensor {missing[0]!r} is missing from the checkpoint")
        per_layer_shape = shape[1:] if src.stacked else shape
        arrays = []
        for name in src.names:
            hf = tensors[name]
            if int(np.prod(hf.shape)) != int(np.prod(per_layer_shape)):
                raise ValueError(
                    f"{source}: parameter {'.'.join(map(str, path))} expects {per_layer_shape} "
                    f"but tensor {name!r} has shape {tuple(hf.shape)} (config mismatch?)"
                )
            arrays.append(_to_ours(src.kind, hf, per_layer_shape))
        return np.stack(arrays) if src.stacked else arrays[0]

    return read


def load_hf_checkpoint(
    directory: str | Path,
    mesh: jax.sharding.Mesh,
    config: ModelConfig | None = None,
    rules: LogicalRules | None = None,
    **config_overrides,
) -> tuple[ModelConfig, Decoder]:
    """Load a HF safetensors directory (single file or sharded with an index) onto `mesh`."""
    directory = Path(directory)
    if config is None:
        config = ModelConfig.from_hf(directory / "config.json", **config_overrides)
    tensors = SafetensorsDirectory(directory)
    extra = None
    if (directory / VALUE_HEAD_FILE).is_file():
        extra = dict(SafetensorsDirectory(directory / VALUE_HEAD_FILE))
    reader = tensor_reader(tensors, config, str(directory), extra)
    return config, load_decoder(config, reader, mesh, rules)


def hf_tensors(model: Decoder) -> Iterator[tuple[str, np.ndarray]]:
    """Our parameters as HF-named host arrays, one tensor at a time (value head excluded)."""
    config = model.config
    for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        src = hf_source(path, config)
        if src is None:
            continue
        array = np.asarray(jax.device_get(variable.get_value()))
        if src.stacked:
            for i, name in enumerate(src.names):
                yield name, np.ascontiguousarray(_to_hf(src.kind, array[i]))
        else:
            yield src.names[0], np.ascontiguousarray(_to_hf(src.kind, array))


def save_hf_checkpoint(
    model: Decoder, directory: str | Path, max_shard_bytes: int = 5 * 1024**3
) -> Path:
    """Write `config.json` and safetensors that `transformers` loads as the same model."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(model.config.to_hf(), indent=2))
    write_sharded(directory, hf_tensors(model), max_shard_bytes)
    if model.config.value_head:
        write_safetensors(directory / VALUE_HEAD_FILE, {
            "value_head.weight": np.asarray(model.value_kernel.get_value()),
            "value_head.bias": np.asarray(model.value_bias.get_value()).reshape(1),
        })
    return directory

