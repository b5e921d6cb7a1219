"""`SentencePieceTokenizer` on mistral-common's real `.model` files, against sentencepiece
itself (and transformers where its conversion agrees with SentencePiece)."""

from __future__ import annotations

import pytest
import sentencepiece as spm

from orchestra_jax.tokenization import SentencePieceTokenizer, Tokenizer, load_tokenizer

PLAIN_TEXT = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "  two leading spaces and   three inside",
    "héllo wörld, 日本語, русский, 😀👍🏽",
    "def f(x):\n\treturn x ** 2\n\n",
    "1234567890 3.14 -1e-9",
    "",
]


@pytest.fixture(scope="module")
def models(mistral_models):
    return {name: (load_tokenizer(path), spm.SentencePieceProcessor(model_file=str(path)))
            for name, path in mistral_models.items()}


def test_every_packaged_model_loads_as_the_sentencepiece_backend(models):
    assert len(models) >= 2
    for ours, _ in models.values():
        assert isinstance(ours, SentencePieceTokenizer) and isinstance(ours, Tokenizer)


def test_plain_text_encodes_exactly_like_sentencepiece(models):
    for name, (ours, sp) in models.items():
        for text in PLAIN_TEXT:
            assert ours.encode(text) == sp.encode(text), (name, text)


def test_decode_matches_sentencepiece_for_ordinary_ids(models):
    for name, (ours, sp) in models.items():
        for text in PLAIN_TEXT:
            ids = sp.encode(text)
            assert ours.decode(ids) == sp.decode(ids), (name, text)


def test_special_ids_and_sizes_come_from_the_model(models):
    for ours, sp in models.values():
        assert ours.vocab_size == sp.get_piece_size()
        assert (ours.bos_token_id, ours.eos_token_id, ours.unk_token_id) == (1, 2, 0)
        assert ours.pad_token_id is None  # these models define none
        assert ours.stop_token_ids == (2,)


def test_control_token_text_becomes_its_single_id(models):
    v3, _ = models["mistral_instruct_tokenizer_240323.model.v3"]
    ids = v3.encode("[INST] Hi [/INST]")
    assert ids[0] == v3.token_to_id("[INST]") == 3
    assert ids[-1] == v3.token_to_id("[/INST]") == 4
    assert v3.encode("<s>a</s>")[::2] == [1, 2]


def test_control_tokens_are_written_out_unless_skipped(models):
    for ours, _ in models.values():
        ids = ours.encode("<s>Hello</s>")
        assert ours.decode(ids) == "<s>Hello</s>"
        assert ours.decode(ids, skip_special_tokens=True) == "Hello"


def test_bos_is_added_only_on_request(models):
    for ours, sp in models.values():
        assert ours.encode("Hi", add_special_tokens=True) == [1, *sp.encode("Hi")]
        assert ours.encode("Hi") == sp.encode("Hi")


def test_token_lookups_do_not_fall_back_to_unk(models):
    ours, sp = models["tokenizer.model.v1"]
    assert ours.token_to_id("▁Hello") == sp.piece_to_id("▁Hello") != sp.unk_id()
    assert ours.token_to_id("definitely not a piece") is None
    assert ours.id_to_token(1) == "<s>"
    with pytest.raises(IndexError):
        ours.id_to_token(ours.vocab_size)
    with pytest.raises(IndexError):
        ours.decode([ours.vocab_size])


def test_save_and_load_round_trip_keeps_behaviour(models, tmp_path):
    ours, _ = models["mistral_instruct_tokenizer_240323.model.v3"]
    ours.chat_template = "{% for m in messages %}[INST] {{ m.content }} [/INST]{% endfor %}"
    try:
        ours.save(tmp_path)
    finally:
        ours.chat_template = None
    again = load_tokenizer(tmp_path)
    assert isinstance(again, SentencePieceTokenizer)
    for text in [*PLAIN_TEXT, "[INST] Hi [/INST]</s>"]:
        assert again.encode(text, add_special_tokens=True) == ours.encode(text, True)
    prompt = again.apply_chat_template([{"role": "user", "content": "Hi"}])
    assert prompt == "[INST] Hi [/INST]"
    assert again.encode(prompt)[0] == 3


def test_transformers_llama_tokenizer_agrees_on_single_spaced_text(mistral_models, tmp_path,
                                                                   transformers):
    # transformers converts the .model into a `tokenizers` BPE, which splits runs of spaces
    # differently from SentencePiece itself; on single-spaced text the two agree.
    (tmp_path / "tokenizer.model").write_bytes(mistral_models["tokenizer.model.v1"].read_bytes())
    (tmp_path / "tokenizer_config.json").write_text(
        '{"tokenizer_class": "LlamaTokenizer", "legacy": false, "add_bos_token": true, '
        '"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}')
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    ours = load_tokenizer(mistral_models["tokenizer.model.v1"])
    for text in PLAIN_TEXT:
        if "  " not in text:
            assert ours.encode(text) == reference.encode(text, add_special_tokens=False), text
            assert ours.encode(text, add_special_tokens=True) == reference.encode(text), text
            assert ours.decode(ours.encode(text)) == reference.decode(
                reference.encode(text, add_special_tokens=False)), text
