"""Building tokenizers from GGUF metadata, on tiny tokenizer-only GGUF files written here."""

from __future__ import annotations

import pytest

from orchestra_jax.tokenization import HFTokenizer, UnsupportedGGUFTokenizer, load_tokenizer


def pieces(tokenizer: HFTokenizer, text: str) -> list[str]:
    return [tokenizer.id_to_token(i) for i in tokenizer.encode(text)]


def test_merges_apply_in_rank_order(tiny_gguf):
    tok = HFTokenizer.from_gguf(tiny_gguf())
    # "h e" outranks "e r", so "her" is he+r; " the" merges all the way to "Ġthe".
    assert pieces(tok, "the the her") == ["t", "he", "Ġthe", "Ġ", "he", "r"]
    assert tok.decode(tok.encode("the the her")) == "the the her"


def test_control_tokens_stay_whole_and_are_skippable(tiny_gguf):
    tok = HFTokenizer.from_gguf(tiny_gguf())
    ids = tok.encode("a<|im_start|>b<|im_end|>")
    assert pieces(tok, "a<|im_start|>b<|im_end|>") == ["a", "<|im_start|>", "b", "<|im_end|>"]
    assert tok.decode(ids, skip_special_tokens=True) == "ab"


def test_user_defined_tokens_stay_whole_but_are_not_special(tiny_gguf):
    tok = HFTokenizer.from_gguf(tiny_gguf())
    ids = tok.encode("x<think>y")
    assert pieces(tok, "x<think>y") == ["x", "<think>", "y"]
    assert tok.decode(ids, skip_special_tokens=True) == "x<think>y"


def test_bytes_outside_ascii_round_trip(tiny_gguf):
    tok = HFTokenizer.from_gguf(tiny_gguf())
    text = "é 😀\n\t\x00"
    assert tok.decode(tok.encode(text)) == text


def test_special_ids_come_from_the_gguf_fields(tiny_gguf):
    tok = HFTokenizer.from_gguf(tiny_gguf())
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (1, 2, 2)
    assert tok.special_tokens == {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
                                  "unk_token": "<|endoftext|>", "pad_token": "<|im_end|>"}
    assert tok.vocab_size == 264


def test_add_bos_token_flag_adds_bos_only_on_request(tiny_gguf):
    with_bos = HFTokenizer.from_gguf(tiny_gguf(add_bos=True))
    assert with_bos.encode("the", add_special_tokens=True) == [1, *with_bos.encode("the")]
    assert with_bos.encode("the") == [120, 261]
    without = HFTokenizer.from_gguf(tiny_gguf(add_bos=False))
    assert without.encode("the", add_special_tokens=True) == without.encode("the")


def test_end_of_turn_id_joins_the_stop_tokens(tiny_gguf):
    tok = HFTokenizer.from_gguf(tiny_gguf(eot_id=0))
    assert tok.stop_token_ids == (2, 0)


def test_chat_template_is_read_and_used(tiny_gguf):
    tok = HFTokenizer.from_gguf(tiny_gguf(chat_template="{{ bos_token }}{{ messages[0].content }}"))
    assert tok.apply_chat_template([{"role": "user", "content": "hey"}]) == "<|im_start|>hey"


def test_missing_chat_template_error_points_to_a_fix(tiny_gguf):
    tok = HFTokenizer.from_gguf(tiny_gguf())
    with pytest.raises(ValueError, match="no chat template"):
        tok.apply_chat_template([{"role": "user", "content": "hey"}])
    assert tok.apply_chat_template([{"role": "user", "content": "hey"}],
                                   chat_template="[{{ messages[0].content }}]") == "[hey]"


def test_unsupported_tokenizer_model_error_names_the_file_and_field(tiny_gguf):
    path = tiny_gguf(model="bert")
    with pytest.raises(UnsupportedGGUFTokenizer) as err:
        HFTokenizer.from_gguf(path)
    assert str(path) in str(err.value) and "tokenizer.ggml.model" in str(err.value)
    assert "'bert'" in str(err.value)


def test_gguf_without_tokenizer_is_rejected_clearly(tiny_gguf):
    path = tiny_gguf(with_tokenizer=False)
    with pytest.raises(UnsupportedGGUFTokenizer, match="no tokenizer in this GGUF"):
        HFTokenizer.from_gguf(path)


def test_known_split_rules_follow_the_pre_tokenizer_name(tiny_gguf):
    # llama3's rule groups up to three digits and keeps a leading non-letter with a word,
    # GPT-2's rule keeps the space with the digits.
    llama3 = HFTokenizer.from_gguf(tiny_gguf(pre="llama-bpe"))
    gpt2 = HFTokenizer.from_gguf(tiny_gguf(pre="gpt-2"))
    assert pieces(llama3, "12345") == ["1", "2", "3", "4", "5"]  # no digit merges in the vocab
    assert llama3.backend.pre_tokenizer.pre_tokenize_str("12345 (x")[:2] == [
        ("123", (0, 3)), ("45", (3, 5))]
    assert [p for p, _ in gpt2.backend.pre_tokenizer.pre_tokenize_str("12345 (x")] == [
        "12345", "Ġ(", "x"]


def test_load_tokenizer_opens_a_gguf_file(tiny_gguf):
    tok = load_tokenizer(tiny_gguf())
    assert isinstance(tok, HFTokenizer) and tok.encode("the") == [120, 261]


def test_save_and_reload_keeps_a_gguf_tokenizer_equal(tiny_gguf, tmp_path):
    tok = HFTokenizer.from_gguf(tiny_gguf(add_bos=True, chat_template="{{ messages | length }}"))
    tok.save(tmp_path)
    again = load_tokenizer(tmp_path)
    for text in ["the the her", "a<|im_end|>b", "é\n"]:
        assert again.encode(text) == tok.encode(text)
        assert again.encode(text, add_special_tokens=True) == tok.encode(text, True)
    assert again.apply_chat_template([{"role": "user", "content": "x"}]) == "1"
