"""Hugging Face hub ids (`org/name`) in `load_pretrained` and `model.path`: found in a local hub
cache (a tmp dir in the hub's own layout, `HF_HUB_CACHE`), never downloaded offline, and a
clear "what to do" when neither works; an existing path always wins. No test touches the
network: the hub is switched off (`HF_HUB_OFFLINE=1`) throughout."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from orchestra_jax.models import load_pretrained
from orchestra_jax.models.hub import HubUnavailableError, looks_like_hub_id
from orchestra_jax.models.pretrained import resolve_model_source
from orchestra_jax.serve.server import ServeError, load_chat_server
from orchestra_jax.train.config import ConfigError
from tests.models.hf_reference import build_hf_model, padded_batch

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def offline_hub_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hub_cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def _cache_model(cache: Path, repo_id: str, seed: int) -> Path:
    """A tiny Qwen3 stored as the hub stores a downloaded snapshot."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    build_hf_model("qwen3", snapshot, seed=seed)
    return snapshot


def test_hub_ids_are_org_slash_name():
    assert looks_like_hub_id("Qwen/Qwen3-8B")
    assert looks_like_hub_id("HuggingFaceTB/SmolLM2-135M-Instruct")
    for not_an_id in ("tiny", "/abs/path", "./rel/dir", "a/b/c", "../x/y", "x/..",
                      "smollm2-135m-instruct", "model.gguf"):
        assert not looks_like_hub_id(not_an_id), not_an_id


def test_a_cached_hub_id_loads_from_the_cache_without_the_network(offline_hub_cache):
    snapshot = _cache_model(offline_hub_cache, "acme/tiny-qwen3", seed=3)
    assert resolve_model_source("acme/tiny-qwen3") == str(snapshot)
    lm, direct = load_pretrained("acme/tiny-qwen3"), load_pretrained(snapshot)
    ids, mask = padded_batch(lm.config.vocab_size)
    np.testing.assert_array_equal(lm.logits(ids, mask), direct.logits(ids, mask))


def test_model_path_resolves_a_cached_hub_id(offline_hub_cache):
    from orchestra_jax.sharding import single_device_mesh
    from orchestra_jax.train.builders import load_model
    from orchestra_jax.train.schema import default_config

    _cache_model(offline_hub_cache, "acme/tiny-qwen3", seed=3)
    config = default_config()
    config.model.path = "acme/tiny-qwen3"
    model, tokenizer = load_model(config, single_device_mesh(), None, seed=0)
    assert model.config.model_type == "qwen3" and tokenizer is None
    config.model.path = "acme/not-cached"
    with pytest.raises(ConfigError, match=r"model\.path.*huggingface-cli download"):
        load_model(config, single_device_mesh(), None, seed=0)


def test_an_uncached_hub_id_offline_says_what_to_do():
    with pytest.raises(HubUnavailableError) as err:
        load_pretrained("acme/never-downloaded")
    message = str(err.value)
    assert "HF_HUB_OFFLINE" in message
    assert "huggingface-cli download acme/never-downloaded --local-dir DIR" in message
    assert isinstance(err.value, FileNotFoundError)  # callers' existing handling applies


def test_an_existing_path_wins_over_the_hub_id_it_spells(offline_hub_cache, tmp_path,
                                                         monkeypatch):
    _cache_model(offline_hub_cache, "acme/tiny-qwen3", seed=3)
    build_hf_model("qwen3", tmp_path / "acme" / "tiny-qwen3", seed=4)
    monkeypatch.chdir(tmp_path)
    assert resolve_model_source("acme/tiny-qwen3") == "acme/tiny-qwen3"
    local = load_pretrained("acme/tiny-qwen3")
    cached = load_pretrained(offline_hub_cache / "models--acme--tiny-qwen3" / "snapshots"
                             / COMMIT)
    ids, mask = padded_batch(local.config.vocab_size)
    assert not np.array_equal(local.logits(ids, mask), cached.logits(ids, mask))
    np.testing.assert_array_equal(
        local.logits(ids, mask), load_pretrained(tmp_path / "acme" / "tiny-qwen3").logits(
            ids, mask))


def test_without_huggingface_hub_a_hub_id_says_how_to_install_or_download(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails
    with pytest.raises(HubUnavailableError, match="pip install huggingface_hub") as err:
        load_pretrained("acme/tiny-qwen3")
    assert "--local-dir DIR" in str(err.value)


def test_packaged_names_and_presets_never_consult_the_hub(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    assert resolve_model_source("tiny") == "tiny"
    assert resolve_model_source("smollm2-135m-instruct") == "smollm2-135m-instruct"
    assert resolve_model_source("models/model.gguf") == "models/model.gguf"


def test_serve_names_an_unavailable_hub_id():
    with pytest.raises(ServeError, match="huggingface-cli download acme/nowhere"):
        load_chat_server("acme/nowhere")

