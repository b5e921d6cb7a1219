"""`HFTokenizer` on the real SmolLM2 GGUF, checked token for token against transformers."""

from __future__ import annotations

import json
import re

import pytest

from orchestra_jax.tokenization import HFTokenizer, Tokenizer, load_tokenizer

CORPUS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "  leading, trailing and   inner spaces  ",
    "héllo wörld, ñandú, Ελληνικά, русский, العربية, 日本語, 中文, 한국어",
    "emoji 😀🎉👍🏽 and a family 👨‍👩‍👧 and flags 🇫🇷",
    "def square(x: int) -> int:\n\treturn x ** 2  # squared\n\n\nclass A:\n    pass\n",
    '{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}',
    "1234567890 3.14159 -1e-9 0x1F 2024-06-01 12:30:45 $1,000.50 100%",
    "x  1 and    42 and \t7 and \n\n3",  # whitespace meeting digits
    "\r\n\r\n  \t \u00a0\u2003 whitespace zoo \u200b end",
    "line one\nline two\n\n\nline five\n",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "text<|endoftext|>more<|im_end|>glued<|im_start|>",
    "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call><think>hmm</think>",
    "ＦＵＬＬ ｗｉｄｔｈ ｶﾀｶﾅ and combining e\u0301",
    "\x00\x01\x7f control bytes",
    "a" * 300 + " " + "ab" * 100,
    "",
]


def test_encode_matches_transformers_token_for_token(smollm2, smollm2_reference):
    for text in CORPUS:
        assert smollm2.encode(text) == smollm2_reference.encode(text, add_special_tokens=False), \
            text
        assert smollm2.encode(text, add_special_tokens=True) == smollm2_reference.encode(text), \
            text


@pytest.mark.parametrize("skip", [False, True])
def test_decode_matches_transformers(smollm2, smollm2_reference, skip):
    for text in CORPUS:
        ids = smollm2_reference.encode(text, add_special_tokens=False)
        assert smollm2.decode(ids, skip_special_tokens=skip) == smollm2_reference.decode(
            ids, skip_special_tokens=skip), text


def test_decode_inverts_encode(smollm2):
    for text in CORPUS:
        assert smollm2.decode(smollm2.encode(text)) == text


def test_special_ids_and_vocabulary_match_transformers(smollm2, smollm2_reference):
    ref = smollm2_reference
    assert (smollm2.bos_token_id, smollm2.eos_token_id, smollm2.pad_token_id,
            smollm2.unk_token_id) == (ref.bos_token_id, ref.eos_token_id, ref.pad_token_id,
                                      ref.unk_token_id)
    assert smollm2.vocab_size == len(ref) == 49152
    some = [0, 1, 2, 17, 100, 1000, 33662, 49151]
    assert [smollm2.id_to_token(i) for i in some] == ref.convert_ids_to_tokens(some)
    assert smollm2.token_to_id("Ġhello") == ref.convert_tokens_to_ids("Ġhello")


def test_chatml_markers_are_single_ids_and_end_generation(smollm2):
    assert smollm2.encode("<|im_start|>") == [1]
    assert smollm2.encode("<|im_end|>") == [2]
    assert smollm2.eos_token_id == 2
    assert smollm2.stop_token_ids == (2,)
    assert smollm2.token_to_id("<|im_end|>") == 2
    assert smollm2.token_to_id("no such token") is None


def test_hf_backend_satisfies_the_protocol(smollm2):
    assert isinstance(smollm2, Tokenizer)


@pytest.fixture(scope="module")
def saved_smollm2(smollm2, tmp_path_factory):
    directory = tmp_path_factory.mktemp("smollm2_tokenizer")
    smollm2.save(directory)
    return directory


def test_save_writes_the_transformers_5_layout(saved_smollm2):
    names = sorted(p.name for p in saved_smollm2.iterdir())
    assert names == ["chat_template.jinja", "tokenizer.json", "tokenizer_config.json"]
    config = json.loads((saved_smollm2 / "tokenizer_config.json").read_text())
    assert config["eos_token"] == "<|im_end|>" and config["bos_token"] == "<|im_start|>"
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"  # transformers 4 needs a class
    assert config["chat_template"] == (saved_smollm2 / "chat_template.jinja").read_text()


def test_transformers_loads_our_save_as_the_same_tokenizer(smollm2, saved_smollm2, transformers):
    reloaded = transformers.AutoTokenizer.from_pretrained(str(saved_smollm2))
    for text in CORPUS:
        assert reloaded.encode(text, add_special_tokens=False) == smollm2.encode(text), text
        assert reloaded.encode(text) == smollm2.encode(text, add_special_tokens=True), text
    assert reloaded.chat_template == smollm2.chat_template
    assert (reloaded.bos_token, reloaded.eos_token, reloaded.pad_token, reloaded.unk_token) == (
        "<|im_start|>", "<|im_end|>", "<|im_end|>", "<|endoftext|>")
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "Name three colours."}]
    for generation_prompt in (False, True):
        assert reloaded.apply_chat_template(
            messages, add_generation_prompt=generation_prompt, tokenize=False
        ) == smollm2.apply_chat_template(messages, add_generation_prompt=generation_prompt)


def test_transformers_loads_our_save_beside_a_model_config(smollm2, tmp_path, transformers):
    # LanguageModel.save_pretrained puts the tokenizer next to a Llama config.json; the
    # tokenizer must still load as itself, not as a tokenizer rebuilt for the model type.
    smollm2.save(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 49152}))
    reloaded = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    for text in CORPUS:
        assert reloaded.encode(text, add_special_tokens=False) == smollm2.encode(text), text


def test_load_tokenizer_reloads_our_save(smollm2, saved_smollm2):
    again = load_tokenizer(saved_smollm2)
    assert isinstance(again, HFTokenizer)
    assert [again.encode(t) for t in CORPUS] == [smollm2.encode(t) for t in CORPUS]
    assert again.chat_template == smollm2.chat_template
    assert again.special_tokens == smollm2.special_tokens
    assert again.stop_token_ids == smollm2.stop_token_ids


def test_llama_cpp_flavour_isolates_digits_like_the_original_tokenizer(smollm2_vocab, smollm2):
    # SmolLM2 was trained with digits split off before GPT-2's rule (llama.cpp's "smollm"
    # pre-tokenizer); transformers' GGUF loader skips that step. They differ where spaces
    # meet digits, and only there.
    original = HFTokenizer.from_gguf_vocab(smollm2_vocab)  # the default
    pieces = lambda tok, text: [tok.id_to_token(i) for i in tok.encode(text)]  # noqa: E731
    assert pieces(original, "x  1") == ["x", "ĠĠ", "1"]
    assert pieces(smollm2, "x  1") == ["x", "Ġ", "Ġ", "1"]
    assert pieces(original, "    12") == ["ĠĠĠĠ", "1", "2"]
    for text in CORPUS:
        if not re.search(r"\s\d", text):
            assert original.encode(text) == smollm2.encode(text), text
