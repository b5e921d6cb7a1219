"""Policy models: configs, the NNX decoder, KV cache, checkpoint import/export."""

from orchestra_jax.models.config import PRESETS, ModelConfig, get_preset
from orchestra_jax.models.decoder import Decoder, DecoderOutput, init_decoder, positions_from_mask
from orchestra_jax.models.generation import generate_tokens
from orchestra_jax.models.hf_checkpoint import load_hf_checkpoint, save_hf_checkpoint
from orchestra_jax.models.kv_cache import KVCache
from orchestra_jax.models.pretrained import LanguageModel, load_pretrained
from orchestra_jax.models.sampling import DecodeEngine, DecodeOutput, SamplerBuckets, SamplingParams
from orchestra_jax.models.sharded import sharded_init, sharded_logits_fn, state_shardings

__all__ = [
    "PRESETS",
    "DecodeEngine",
    "DecodeOutput",
    "Decoder",
    "DecoderOutput",
    "KVCache",
    "LanguageModel",
    "ModelConfig",
    "SamplerBuckets",
    "SamplingParams",
    "generate_tokens",
    "get_preset",
    "init_decoder",
    "load_hf_checkpoint",
    "load_pretrained",
    "positions_from_mask",
    "save_hf_checkpoint",
    "sharded_init",
    "sharded_logits_fn",
    "state_shardings",
]
