"""ModelConfig presets and `from_hf`: public hyper-parameters, clear errors on bad input."""

from __future__ import annotations

import json

import pytest

from orchestra_jax.models import PRESETS, ModelConfig, get_preset


@pytest.mark.parametrize(
    ("name", "params_billions"),
    [("qwen3_0p6b", 0.6), ("qwen3_1p7b", 1.7), ("qwen3_4b", 4.0), ("qwen3_8b", 8.2)],
)
def test_qwen3_presets_have_their_published_sizes(name, params_billions):
    assert PRESETS[name].num_params() / 1e9 == pytest.approx(params_billions, rel=0.06)


def test_smollm2_preset_counts_135m_parameters():
    assert get_preset("smollm2-135m").num_params() == pytest.approx(134.5e6, rel=0.01)


def test_tiny_preset_is_a_few_million_parameters():
    assert 1e6 < PRESETS["tiny"].num_params() < 10e6


def test_from_hf_reads_a_qwen3_config(tmp_path):
    hf = {
        "model_type": "qwen3", "vocab_size": 151936, "hidden_size": 4096,
        "intermediate_size": 12288, "num_hidden_layers": 36, "num_attention_heads": 32,
        "num_key_value_heads": 8, "head_dim": 128, "rope_theta": 1000000,
        "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "max_position_embeddings": 40960,
        "torch_dtype": "bfloat16", "bos_token_id": 151643, "eos_token_id": 151645,
    }
    (tmp_path / "config.json").write_text(json.dumps(hf))
    config = ModelConfig.from_hf(tmp_path)
    assert config.replace(pad_token_id=151643) == PRESETS["qwen3_8b"]


def test_transformers5_rope_parameters_are_understood():
    config = ModelConfig.from_hf({
        "model_type": "llama", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
        "num_hidden_layers": 1, "num_attention_heads": 2,
        "rope_parameters": {"rope_type": "linear", "factor": 4.0, "rope_theta": 50.0},
    })
    assert config.rope_theta == 50.0
    assert config.rope_scaling_dict == {"rope_type": "linear", "factor": 4.0}


def test_unsupported_model_type_names_itself():
    with pytest.raises(ValueError, match="'gpt2'"):
        ModelConfig.from_hf({"model_type": "gpt2"})


def test_missing_config_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        ModelConfig.from_hf(tmp_path)


def test_unknown_rope_scaling_is_rejected():
    with pytest.raises(ValueError, match="yarn"):
        PRESETS["tiny"].replace(rope_scaling=(("rope_type", "yarn"),))


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="qwen3_8b"):
        get_preset("gpt5")
