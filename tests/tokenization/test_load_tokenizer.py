"""`load_tokenizer` picks the backend from what lies on disk, and says what it looked for."""

from __future__ import annotations

import shutil

import pytest

from orchestra_jax.tokenization import (
    HFTokenizer,
    SentencePieceTokenizer,
    load_tokenizer,
    train_sentencepiece,
)


@pytest.fixture(scope="module")
def sp_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("sp_saved")
    train_sentencepiece(["the tool call returns the answer\n"] * 20, directory, vocab_size=320)
    return directory


def test_directory_with_tokenizer_json_is_hf(tiny_gguf, tmp_path):
    HFTokenizer.from_gguf(tiny_gguf()).save(tmp_path)
    assert isinstance(load_tokenizer(tmp_path), HFTokenizer)
    assert isinstance(load_tokenizer(tmp_path / "tokenizer.json"), HFTokenizer)


def test_directory_saved_by_the_sentencepiece_backend_is_sentencepiece(sp_dir):
    tok = load_tokenizer(sp_dir)
    assert isinstance(tok, SentencePieceTokenizer)
    assert tok.eos_token_id == tok.token_to_id("<|im_end|>")  # the saved config was read


def test_bare_model_file_and_a_directory_holding_only_it_are_sentencepiece(sp_dir, tmp_path):
    bare = tmp_path / "custom.model"
    shutil.copy(sp_dir / "tokenizer.model", bare)
    from_file = load_tokenizer(bare)
    from_dir = load_tokenizer(tmp_path)
    assert isinstance(from_file, SentencePieceTokenizer)
    assert isinstance(from_dir, SentencePieceTokenizer)
    # Without our config the model's own pieces are the special tokens.
    assert from_file.eos_token_id == from_file.token_to_id("</s>")
    assert from_dir.encode("the answer") == load_tokenizer(sp_dir).encode("the answer")


def test_versioned_model_suffixes_are_recognised(sp_dir, tmp_path):
    versioned = tmp_path / "tokenizer.model.v3"
    shutil.copy(sp_dir / "tokenizer.model", versioned)
    assert isinstance(load_tokenizer(versioned), SentencePieceTokenizer)


def test_hf_files_win_when_a_directory_has_both(tiny_gguf, sp_dir, tmp_path):
    HFTokenizer.from_gguf(tiny_gguf()).save(tmp_path)
    shutil.copy(sp_dir / "tokenizer.model", tmp_path / "tokenizer.model")
    assert isinstance(load_tokenizer(tmp_path), HFTokenizer)


def test_empty_directory_names_what_was_looked_for(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"tokenizer\.json"):
        load_tokenizer(tmp_path)


def test_unknown_file_and_missing_path_are_rejected(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match="not a tokenizer file"):
        load_tokenizer(tmp_path / "notes.txt")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_tokenizer(tmp_path / "absent")
