"""`HFTokenizer.from_directory` reads the HF checkpoint layouts found in the wild."""

from __future__ import annotations

import json

import numpy as np
import pytest

from orchestra_jax.tokenization import HFTokenizer, load_tokenizer


@pytest.fixture
def hf_dir(tiny_gguf, tmp_path):
    """A saved tiny tokenizer whose config files each test then rewrites."""
    HFTokenizer.from_gguf(tiny_gguf()).save(tmp_path)
    return tmp_path


def write_config(directory, **config):
    (directory / "tokenizer_config.json").write_text(json.dumps(config))


def test_special_tokens_may_be_added_token_dicts(hf_dir):
    write_config(hf_dir, eos_token={"content": "<|im_end|>", "special": True, "lstrip": False},
                 bos_token=None)
    tok = HFTokenizer.from_directory(hf_dir)
    assert tok.eos_token_id == 2 and tok.bos_token_id is None


def test_special_tokens_map_fills_what_the_config_lacks(hf_dir):
    write_config(hf_dir)
    (hf_dir / "special_tokens_map.json").write_text(json.dumps({"pad_token": "<|endoftext|>"}))
    assert HFTokenizer.from_directory(hf_dir).pad_token_id == 0


def test_generation_config_eos_list_adds_stop_tokens(hf_dir):
    write_config(hf_dir, eos_token="<|im_end|>")
    (hf_dir / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 0]}))
    assert HFTokenizer.from_directory(hf_dir).stop_token_ids == (2, 0)


def test_inline_template_list_becomes_named_templates(hf_dir):
    write_config(hf_dir, chat_template=[{"name": "default", "template": "D"},
                                        {"name": "tool_use", "template": "T"}])
    tok = HFTokenizer.from_directory(hf_dir)
    message = [{"role": "user", "content": "x"}]
    assert tok.apply_chat_template(message) == "D"
    assert tok.apply_chat_template(message, tools=[{"name": "f"}]) == "T"


def test_jinja_file_wins_over_the_inline_template(hf_dir):
    write_config(hf_dir, chat_template="inline")
    (hf_dir / "chat_template.jinja").write_text("from file")
    assert HFTokenizer.from_directory(hf_dir).chat_template == "from file"


def test_named_templates_survive_save_and_reload(hf_dir, tmp_path_factory, transformers):
    write_config(hf_dir, eos_token="<|im_end|>")
    tok = HFTokenizer.from_directory(hf_dir)
    tok.chat_template = {"default": "D{{ messages | length }}", "tool_use": "T"}
    out = tmp_path_factory.mktemp("named")
    tok.save(out)
    assert sorted(p.name for p in (out / "additional_chat_templates").iterdir()) == [
        "tool_use.jinja"]
    assert load_tokenizer(out).chat_template == tok.chat_template
    reference = transformers.AutoTokenizer.from_pretrained(str(out))
    assert reference.apply_chat_template([{"role": "user", "content": "x"}],
                                         tokenize=False) == "D1"


def test_numpy_ids_decode(hf_dir):
    tok = HFTokenizer.from_directory(hf_dir)
    ids = tok.encode("the the")
    assert tok.decode(np.asarray(ids, dtype=np.int64)) == "the the"


def test_unknown_special_token_is_refused(hf_dir):
    write_config(hf_dir, eos_token="<|not_in_vocab|>")
    with pytest.raises(ValueError, match="not in the vocabulary"):
        HFTokenizer.from_directory(hf_dir)
